package redisbroker

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/heraldrt/herald/internal/broker"
	"github.com/heraldrt/herald/internal/redistest"
	"github.com/heraldrt/herald/internal/redisx"
)

func TestPublishSubscribeAcrossNodesAndShards(t *testing.T) {
	r0, r1 := redistest.Start(t), redistest.Start(t)
	shards := []string{r0.URL(), r1.URL()}
	a := newNode(t, shards, "", Options{NodeID: "a"})
	b := newNode(t, shards, "", Options{NodeID: "b"})

	// Topics on both shards, plus names that stress the channel encoding.
	topics := append(topicsOn(a.be, "app1", 0, 5), topicsOn(a.be, "app1", 1, 5)...)
	topics = append(topics,
		broker.Topic{App: "app:2", Channel: "presence-a:b"},
		broker.Topic{App: "app", Channel: "2:presence-a:b"},
		broker.Topic{App: "app{x}", Channel: "private-encrypted-{y}=@,.;"},
	)
	a.subscribe(t, topics...)

	// Every topic is subscribed on the shard the ring assigns, and both
	// shards carry topics.
	ctx := context.Background()
	for i, c := range a.be.Clients {
		chans, err := c.Do(ctx, c.B().PubsubChannels().Pattern("herald{}:*").Build()).AsStrSlice()
		if err != nil {
			t.Fatal(err)
		}
		if len(chans) < 5 {
			t.Fatalf("shard %d carries %d topics: %v", i, len(chans), chans)
		}
		for _, ch := range chans {
			tp, ok := parseChannelName(ch)
			if !ok {
				t.Fatalf("shard %d: unexpected channel %q", i, ch)
			}
			if j, _ := a.be.For(tp.App, tp.Channel); j != i {
				t.Fatalf("topic %+v subscribed on shard %d, ring says %d", tp, i, j)
			}
		}
	}

	// B publishes, A receives exactly what was sent.
	for i, tp := range topics {
		m := &broker.Message{Topic: tp, Kind: broker.Kind(i % 2), Payload: []byte(fmt.Sprintf(`{"n":%d}`, i))}
		if i%3 == 0 {
			m.Exclude = fmt.Sprintf("%d.%d", i, i*7)
		}
		if err := b.br.Publish(ctx, m); err != nil {
			t.Fatal(err)
		}
		got := a.sink.next(t, 3*time.Second)
		if got.Topic != m.Topic || got.Kind != m.Kind || got.Exclude != m.Exclude || string(got.Payload) != string(m.Payload) {
			t.Fatalf("got %+v, want %+v", got, m)
		}
	}

	// Topics A does not subscribe, or unsubscribed, are not delivered. A
	// sentinel published after them on the same shard (same connection,
	// same order) proves they would have arrived first.
	if err := a.br.Unsubscribe(ctx, topics[0]); err != nil {
		t.Fatal(err)
	}
	for shard := 0; shard < 2; shard++ {
		sentinel := topics[shard*5+1]
		other := topicsOn(a.be, "other-app", shard, 1)[0]
		b.publish(t, other, "not subscribed")
		if shard == 0 {
			b.publish(t, topics[0], "unsubscribed")
		}
		b.publish(t, sentinel, "sentinel")
		a.sink.expect(t, sentinel, "sentinel")
	}
	// B subscribed to nothing and got nothing.
	select {
	case m := <-b.sink.ch:
		t.Fatalf("node b got %+v", m)
	default:
	}

	st := a.br.Stats()
	if st.Topics != len(topics)-1 || st.Delivered != uint64(len(topics))+2 || st.DecodeErrors != 0 || len(st.Shards) != 2 ||
		!st.Shards[0].Connected || !st.Shards[1].Connected {
		t.Fatalf("stats of a: %+v", st)
	}
	if st := b.br.Stats(); st.Published != uint64(len(topics))+5 || st.PublishErrors != 0 {
		t.Fatalf("stats of b: %+v", st)
	}
}

func TestShardFailureFailsFastAndRecovers(t *testing.T) {
	r0, r1 := redistest.Start(t), redistest.Start(t)
	shards := []string{r0.URL(), r1.URL()}
	a := newNode(t, shards, "", Options{NodeID: "a"})
	b := newNode(t, shards, "", Options{NodeID: "b"})
	live, dead := topicsOn(a.be, "app", 0, 3), topicsOn(a.be, "app", 1, 3)
	a.subscribe(t, live...)
	a.subscribe(t, dead...)
	b.publish(t, dead[0], "before")
	a.sink.expect(t, dead[0], "before")

	r1.Kill()

	// Publishing to the dead shard fails, fast, every time; the live shard
	// keeps working meanwhile.
	for i := 0; i < 3; i++ {
		start := time.Now()
		err := b.br.Publish(context.Background(), &broker.Message{Topic: dead[i], Payload: []byte("lost")})
		took := time.Since(start)
		if err == nil {
			t.Fatal("publish to a dead shard reported success")
		}
		if took > 1500*time.Millisecond {
			t.Fatalf("publish to a dead shard took %v", took)
		}
		t.Logf("publish to dead shard failed after %v: %v", took.Round(time.Millisecond), err)
		b.publish(t, live[i], "alive")
		a.sink.expect(t, live[i], "alive")
	}
	// Subscribing a new topic of the dead shard: its dropped connection made
	// the shard Suspect (failover.go), so the topic is subscribed on the
	// next shard too, which confirms it at once; publishers move there when
	// their monitor finds the shard Down (there is no monitor here).
	eventually(t, 2*time.Second, "shard suspect", func() bool { return a.be.Ring.Health(1) == redisx.Suspect })
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	err := a.br.Subscribe(ctx, topicsOn(a.be, "app2", 1, 1)[0])
	cancel()
	if err != nil {
		t.Fatalf("subscribe during the outage: %v", err)
	}
	if st := b.br.Stats(); st.PublishErrors != 3 {
		t.Fatalf("publish errors: %+v", st)
	}
	time.Sleep(300 * time.Millisecond) // a few failed reconnection attempts
	if st := a.br.Stats(); st.Shards[1].Connected || !st.Shards[0].Connected {
		t.Fatalf("shard states: %+v", st.Shards)
	}

	// The shard comes back on the same port: every subscription is
	// restored within 2s, without touching the broker.
	r1.Restart()
	restored := time.Now()
	for _, tp := range dead {
		for !func() bool {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			if b.br.Publish(ctx, &broker.Message{Topic: tp, Payload: []byte("back")}) != nil {
				return false
			}
			return a.sink.tryRecv(tp, "back", 50*time.Millisecond)
		}() {
			if time.Since(restored) > 2*time.Second {
				t.Fatalf("topic %+v not restored within 2s", tp)
			}
		}
	}
	t.Logf("all subscriptions of the restarted shard delivered %v after it accepted connections", time.Since(restored).Round(time.Millisecond))
	if st := a.br.Stats(); st.Reconnects < 1 || st.Shards[1].Reconnects < 1 || !st.Shards[1].Connected {
		t.Fatalf("stats after restore: %+v", st)
	}
}

func TestHungShardPublishTimesOut(t *testing.T) {
	r := redistest.Start(t)
	a := newNode(t, []string{r.URL()}, "", Options{NodeID: "a", ProbeInterval: 200 * time.Millisecond})
	b := newNode(t, []string{r.URL()}, "", Options{NodeID: "b"})
	tp := broker.Topic{App: "app", Channel: "c"}
	a.subscribe(t, tp)

	// The server stops answering but keeps its connections open.
	if _, err := r.Do("CLIENT", "PAUSE", "1500", "ALL"); err != nil {
		t.Fatal(err)
	}
	paused := time.Now()
	err := b.br.Publish(context.Background(), &broker.Message{Topic: tp, Payload: []byte("slow")})
	took := time.Since(paused)
	if err == nil || took < 900*time.Millisecond || took > 1400*time.Millisecond {
		t.Fatalf("publish to a hung shard: %v after %v", err, took)
	}
	t.Logf("publish to a hung shard failed after %v: %v", took.Round(time.Millisecond), err)
	// A caller's shorter deadline wins.
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	start := time.Now()
	err = b.br.Publish(ctx, &broker.Message{Topic: tp, Payload: []byte("slow")})
	cancel()
	if err == nil || time.Since(start) > 400*time.Millisecond {
		t.Fatalf("publish with a 100ms ctx: %v after %v", err, time.Since(start))
	}
	// Once the server answers again everything works, and the probes that
	// could not be sent meanwhile did not tear the subscription down.
	time.Sleep(time.Until(paused.Add(1600 * time.Millisecond)))
	b.publish(t, tp, "fast")
	if !a.sink.tryRecv(tp, "fast", 3*time.Second) {
		t.Fatal("no delivery after the pause")
	}
	if st := a.br.Stats(); st.Reconnects != 0 || st.ProbeErrors == 0 {
		t.Fatalf("a pause rebuilt the subscription: %+v", st)
	}
}

func TestResubscribeAfterConnectionKill(t *testing.T) {
	r := redistest.Start(t)
	a := newNode(t, []string{r.URL()}, "", Options{NodeID: "a", ProbeInterval: -1})
	b := newNode(t, []string{r.URL()}, "", Options{NodeID: "b", ProbeInterval: -1})
	tps := topicsOn(a.be, "app", 0, 50)
	a.subscribe(t, tps...)

	if _, err := r.Do("CLIENT", "KILL", "TYPE", "pubsub"); err != nil {
		t.Fatal(err)
	}
	took := eventually(t, 2*time.Second, "reconnect", func() bool { return a.br.Stats().Reconnects >= 1 })
	t.Logf("resubscribed 50 topics %v after CLIENT KILL", took.Round(time.Millisecond))
	for _, tp := range tps {
		b.publish(t, tp, "again")
		a.sink.expect(t, tp, "again")
	}
}

func TestProbeRebuildsSilentSubscription(t *testing.T) {
	r := redistest.Start(t)
	p := startProxy(t, r.Addr())
	a := newNode(t, []string{p.URL()}, "", Options{NodeID: "a", ProbeInterval: 200 * time.Millisecond, ProbeTimeout: 300 * time.Millisecond})
	b := newNode(t, []string{r.URL()}, "", Options{NodeID: "b", ProbeInterval: -1})
	tp := broker.Topic{App: "app", Channel: "ticker"}
	a.subscribe(t, tp)
	b.publish(t, tp, "1")
	a.sink.expect(t, tp, "1")
	time.Sleep(500 * time.Millisecond) // probes succeed meanwhile
	if st := a.br.Stats(); st.Probes < 1 || st.ProbeFailures != 0 || st.Reconnects != 0 {
		t.Fatalf("healthy stats: %+v", st)
	}

	// The subscriber connection goes silent but stays open.
	if n := p.freezeSubscribers(); n != 1 {
		t.Fatalf("froze %d connections", n)
	}
	b.publish(t, tp, "lost")
	if a.sink.tryRecv(tp, "lost", 100*time.Millisecond) {
		t.Fatal("frozen connection delivered")
	}
	start := time.Now()
	for !func() bool {
		b.publish(t, tp, "2")
		return a.sink.tryRecv(tp, "2", 50*time.Millisecond)
	}() {
		if time.Since(start) > 3*time.Second {
			t.Fatalf("deliveries did not resume: %+v", a.br.Stats())
		}
	}
	st := a.br.Stats()
	t.Logf("silent subscription rebuilt, deliveries resumed after %v: %+v", time.Since(start).Round(time.Millisecond), st)
	if st.ProbeFailures < 1 || st.Reconnects < 1 {
		t.Fatalf("stats: %+v", st)
	}
}

func TestUnsubscribedWhileReconnecting(t *testing.T) {
	// A topic unsubscribed while the connection is being rebuilt must not
	// stay subscribed on Redis.
	r := redistest.Start(t)
	a := newNode(t, []string{r.URL()}, "", Options{NodeID: "a", ProbeInterval: -1})
	tps := topicsOn(a.be, "app", 0, 3)
	a.subscribe(t, tps...)
	r.Kill()
	eventually(t, 2*time.Second, "shard down", func() bool { return !a.br.Stats().Shards[0].Connected })
	if err := a.br.Unsubscribe(context.Background(), tps[0]); err != nil {
		t.Fatal(err)
	}
	r.Restart()
	eventually(t, 2*time.Second, "reconnect", func() bool { return a.br.Stats().Shards[0].Connected })
	c := a.be.Clients[0]
	chans, err := c.Do(context.Background(), c.B().PubsubChannels().Pattern("herald{}:*").Build()).AsStrSlice()
	if err != nil {
		t.Fatal(err)
	}
	if len(chans) != 2 || strings.Contains(strings.Join(chans, " "), channelName(tps[0])) {
		t.Fatalf("subscribed channels after reconnect: %v", chans)
	}
}

func TestClosed(t *testing.T) {
	r := redistest.Start(t)
	a := newNode(t, []string{r.URL()}, "", Options{})
	tp := broker.Topic{App: "a", Channel: "c"}
	a.subscribe(t, tp)
	if err := a.br.Close(); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := a.br.Publish(ctx, &broker.Message{Topic: tp}); !errors.Is(err, broker.ErrClosed) {
		t.Fatalf("publish after close: %v", err)
	}
	if err := a.br.Subscribe(ctx, tp); !errors.Is(err, broker.ErrClosed) {
		t.Fatalf("subscribe after close: %v", err)
	}
	if err := a.br.Unsubscribe(ctx, tp); !errors.Is(err, broker.ErrClosed) {
		t.Fatalf("unsubscribe after close: %v", err)
	}
	if err := a.br.Close(); err != nil {
		t.Fatal(err)
	}
	// The subscription is gone from Redis.
	c := a.be.Clients[0]
	eventually(t, 2*time.Second, "subscription released", func() bool {
		m, err := c.Do(ctx, c.B().PubsubNumsub().Channel(channelName(tp)).Build()).AsIntMap()
		return err == nil && m[channelName(tp)] == 0
	})
}

func TestMalformedMessagesAreDropped(t *testing.T) {
	r := redistest.Start(t)
	a := newNode(t, []string{r.URL()}, "", Options{ProbeInterval: -1})
	tp := broker.Topic{App: "a", Channel: "c"}
	a.subscribe(t, tp)
	c := a.be.Clients[0]
	for _, bad := range []string{"", "x", "\x02\x00\x00{}", "\x01\x07\x00{}", "\x01\x00\x09ab"} {
		if err := c.Do(context.Background(), c.B().Publish().Channel(channelName(tp)).Message(bad).Build()).Error(); err != nil {
			t.Fatal(err)
		}
	}
	a.publish(t, tp, "good")
	a.sink.expect(t, tp, "good")
	if st := a.br.Stats(); st.DecodeErrors != 5 || st.Delivered != 1 {
		t.Fatalf("stats: %+v", st)
	}
}
