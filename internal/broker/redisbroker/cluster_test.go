package redisbroker

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/heraldrt/herald/internal/broker"
	"github.com/heraldrt/herald/internal/redistest"
)

func TestRedisCluster(t *testing.T) {
	cl := redistest.StartCluster(t, 3)
	o := Options{ProbeInterval: 300 * time.Millisecond, ProbeTimeout: 500 * time.Millisecond}
	o.NodeID = "a"
	a := newNode(t, nil, cl.Seed(), o)
	o.NodeID = "b"
	b := newNode(t, nil, cl.Seed(), o)

	var topics []broker.Topic
	for i := 0; i < 30; i++ {
		topics = append(topics, broker.Topic{App: "app", Channel: fmt.Sprintf("presence-room-%d", i)})
	}
	a.subscribe(t, topics...)

	// The topics are spread over the three masters (sharded channels
	// live on their slot's master only), and each master also carries
	// a's probe channel.
	shardChannels := func(s *redistest.Server) int {
		n, err := s.Do("PUBSUB", "SHARDCHANNELS")
		if err != nil {
			t.Fatal(err)
		}
		c, _ := strconv.Atoi(n) // Do returns the array length line
		return c
	}
	eventually(t, 3*time.Second, "probes on every master", func() bool {
		return a.br.Stats().Shards[0].Connected
	})
	for i, s := range cl.Nodes {
		if n := shardChannels(s); n < 3 {
			t.Fatalf("master %d carries %d sharded channels", i, n)
		}
	}

	for i, tp := range topics {
		m := &broker.Message{Topic: tp, Kind: broker.KindEvent, Payload: []byte(fmt.Sprintf("m%d", i)), Exclude: "1.2"}
		if err := b.br.Publish(context.Background(), m); err != nil {
			t.Fatal(err)
		}
		got := a.sink.next(t, 3*time.Second)
		if got.Topic != tp || string(got.Payload) != string(m.Payload) || got.Exclude != "1.2" {
			t.Fatalf("got %+v, want %+v", got, m)
		}
	}
	if err := a.br.Unsubscribe(context.Background(), topics[0]); err != nil {
		t.Fatal(err)
	}
	b.publish(t, topics[0], "unsubscribed")
	b.publish(t, topics[1], "sentinel")
	if !a.sink.tryRecv(topics[1], "sentinel", 3*time.Second) {
		t.Fatal("sentinel lost")
	}
	select {
	case m := <-a.sink.ch:
		t.Fatalf("unexpected %+v %q", m.Topic, m.Payload)
	case <-time.After(100 * time.Millisecond):
	}

	// The probe reaches every master and comes back.
	eventually(t, 3*time.Second, "probes", func() bool { return a.br.Stats().Probes >= 6 })
	if st := a.br.Stats(); st.ProbeFailures != 0 || st.ProbeErrors != 0 {
		t.Fatalf("probe stats: %+v", st)
	}

	// Every subscription, probes included, silently stops delivering: the
	// probes fail and the subscriptions are made again.
	muteBefore := time.Now()
	mute := func(_ string, attemptStart time.Time) bool { return attemptStart.Before(muteBefore) }
	a.br.cluster.mute.Store(&mute)
	b.publish(t, topics[1], "muted")
	if a.sink.tryRecv(topics[1], "muted", 100*time.Millisecond) {
		t.Fatal("muted subscription delivered")
	}
	start := time.Now()
	for _, tp := range topics[1:] {
		for !func() bool {
			b.publish(t, tp, "unmuted")
			return a.sink.tryRecv(tp, "unmuted", 50*time.Millisecond)
		}() {
			if time.Since(start) > 3*time.Second {
				t.Fatalf("%+v still muted: %+v", tp, a.br.Stats())
			}
		}
	}
	st := a.br.Stats()
	t.Logf("probes failed and every topic was resubscribed within %v: %+v", time.Since(start).Round(time.Millisecond), st)
	if st.ProbeFailures < 3 || st.Reconnects < uint64(len(topics)-1) {
		t.Fatalf("stats: %+v", st)
	}
	a.br.cluster.mute.Store(nil)
	reconnects := st.Reconnects

	// Restart one master: its topics are resubscribed (by rueidis on the
	// new connection) without touching the broker. The cluster stays up as
	// the node is back before cluster-node-timeout.
	victim := cl.Nodes[1]
	victim.Kill()
	victim.Restart()
	restarted := time.Now()
	for _, tp := range topics[1:] {
		payload := "after restart " + tp.Channel
		for !func() bool {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			if b.br.Publish(ctx, &broker.Message{Topic: tp, Payload: []byte(payload)}) != nil {
				time.Sleep(50 * time.Millisecond)
				return false
			}
			return a.sink.tryRecv(tp, payload, 100*time.Millisecond)
		}() {
			if time.Since(restarted) > 10*time.Second {
				t.Fatalf("topic %+v not restored after a master restart: %+v", tp, a.br.Stats())
			}
		}
	}
	st = a.br.Stats()
	t.Logf("every topic delivered again %v after the master restarted; stats %+v", time.Since(restarted).Round(time.Millisecond), st)
	if st.Reconnects <= reconnects {
		t.Fatalf("stats: %+v", st)
	}
}
