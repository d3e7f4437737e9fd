package redisbroker

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldrt/herald/internal/broker"
	"github.com/heraldrt/herald/internal/history"
	"github.com/heraldrt/herald/internal/history/historytest"
	"github.com/heraldrt/herald/internal/redistest"
	"github.com/heraldrt/herald/internal/redisx"
)

var historyApps atomic.Int64

// historyFixture publishes through node a's store and watches through node
// b, a second broker on the same Redis: what the script publishes reaches
// other nodes.
func historyFixture(shards []string, cluster string) func(t *testing.T) *historytest.Fixture {
	return func(t *testing.T) *historytest.Fixture {
		o := Options{ProbeInterval: -1}
		a := newNode(t, shards, cluster, o)
		b := newNode(t, shards, cluster, o)
		return &historytest.Fixture{
			Store:     a.br.History(),
			Subscribe: func(t testing.TB, tp broker.Topic) { b.subscribe(t, tp) },
			Next:      func(t testing.TB) *broker.Message { return b.sink.next(t, 3*time.Second) },
			Advance:   time.Sleep, // Redis's clock
			App:       "happ" + strconv.FormatInt(historyApps.Add(1), 10),
		}
	}
}

func TestHistoryShards(t *testing.T) {
	r0, r1 := redistest.Start(t), redistest.Start(t)
	historytest.Run(t, historyFixture([]string{r0.URL(), r1.URL()}, ""))
}

func TestHistoryRedisCluster(t *testing.T) {
	cl := redistest.StartCluster(t, 3)
	historytest.Run(t, historyFixture(nil, cl.Seed()))
}

// The stream lives on the channel's shard, under the channel's pub/sub
// name, with the documented fields, and expires with the channel's history.
func TestHistoryStreamLayout(t *testing.T) {
	r0, r1 := redistest.Start(t), redistest.Start(t)
	n := newNode(t, []string{r0.URL(), r1.URL()}, "", Options{ProbeInterval: -1})
	shards := []*redistest.Server{r0, r1}
	for i := 0; i < 2; i++ {
		tp := topicsOn(n.be, "layout", i, 1)[0]
		p := history.Policy{MaxEvents: 3, MaxAge: time.Minute}
		var last uint64
		for j := 0; j < 5; j++ {
			s, err := n.br.History().Publish(context.Background(), tp, p, "e", "d"+strconv.Itoa(j), "")
			if err != nil {
				t.Fatal(err)
			}
			last = s
		}
		key := channelName(tp)
		// Below 100 events trimming by count is exact.
		if got, err := shards[i].Do("XLEN", key); err != nil || got != "3" {
			t.Fatalf("shard %d: XLEN %q = %q, %v; want 3", i, key, got, err)
		}
		if r, err := n.br.History().Since(context.Background(), tp, p, 0); err != nil || len(r.Events) != 3 || r.Events[2].Data != "d4" {
			t.Fatalf("since 0 = %+v, %v; want the 3 newest", r, err)
		}
		if got, _ := shards[1-i].Do("EXISTS", key); got != "0" {
			t.Fatalf("the stream is also on shard %d", 1-i)
		}
		c := n.be.Clients[i]
		top, err := c.Do(context.Background(), c.B().Xrevrange().Key(key).End("+").Start("-").Count(1).Build()).AsXRange()
		if err != nil || len(top) != 1 || top[0].ID != strconv.FormatUint(last, 10)+"-0" ||
			top[0].FieldValues["d"] != "d4" || top[0].FieldValues["e"] != "e" || top[0].FieldValues["p"] == "" {
			t.Fatalf("newest entry: %+v, %v; want id %d-0 with p, e, d", top, err, last)
		}
		ttl, err := shards[i].Do("PTTL", key)
		if ms, _ := strconv.Atoi(ttl); err != nil || ms <= 60_000 || ms > 120_000 {
			t.Fatalf("PTTL = %q, %v; want twice the max age", ttl, err)
		}
	}
}

// A shard that does not answer fails Publish and Since within the timeouts
// with an error naming the shard, and retains nothing.
func TestHistoryShardDown(t *testing.T) {
	r0 := redistest.Start(t)
	n := newNode(t, []string{r0.URL()}, "", Options{ProbeInterval: -1, PublishTimeout: 300 * time.Millisecond})
	tp := broker.Topic{App: "down", Channel: "chat"}
	p := history.Policy{MaxEvents: 3, MaxAge: time.Minute}
	if _, err := n.br.History().Publish(context.Background(), tp, p, "e", "d", ""); err != nil {
		t.Fatal(err)
	}
	r0.Kill()
	start := time.Now()
	_, err := n.br.History().Publish(context.Background(), tp, p, "e", "d", "")
	if err == nil || !strings.Contains(err.Error(), "127.0.0.1") || time.Since(start) > 2*time.Second {
		t.Fatalf("publish on a dead shard: %v after %v", err, time.Since(start))
	}
	if _, err := n.br.History().Since(context.Background(), tp, p, 0); err == nil {
		t.Fatal("since on a dead shard succeeded")
	}
}

// BenchmarkHistoryPublish compares a history publish (one Lua script:
// serial, XADD, trims, PUBLISH) with a plain PUBLISH of the same frame, from
// 64 concurrent publishers on 64 channels through one Redis server.
func BenchmarkHistoryPublish(b *testing.B) {
	r := redistest.Start(b)
	n := newNode(b, []string{r.URL()}, "", Options{ProbeInterval: -1})
	p := history.Policy{MaxEvents: 100, MaxAge: 10 * time.Minute}
	data := `{"p":64123.5,"v":0.25,"t":1700000000,"pad":"........................"}`
	var next atomic.Int64
	for _, mode := range []string{"plain", "history"} {
		b.Run(mode, func(b *testing.B) {
			b.SetParallelism(32)
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				tp := broker.Topic{App: "bench", Channel: "chat-" + strconv.FormatInt(next.Add(1)%64, 10)}
				ctx := context.Background()
				for pb.Next() {
					var err error
					if mode == "history" {
						_, err = n.br.History().Publish(ctx, tp, p, "price", data, "")
					} else {
						err = n.br.Publish(ctx, &broker.Message{Topic: tp, Payload: []byte(`{"event":"price","data":"` + data + `","channel":"` + tp.Channel + `"}`)})
					}
					if err != nil {
						b.Fatal(err)
					}
				}
			})
		})
	}
}

// Shard failover: while the channel's home shard is Suspect or Down its
// history may be split between shards, so Since refuses; after the shard
// is back, a recovery from a serial older than its return (plus the grace)
// is not complete, even though the home stream alone looks continuous: the
// events of the failover went to the other shard.
func TestHistoryFenceOnFailover(t *testing.T) {
	r0, r1 := redistest.Start(t), redistest.Start(t)
	n := newNode(t, []string{r0.URL(), r1.URL()}, "", Options{ProbeInterval: -1})
	h := &History{b: n.br, grace: 300 * time.Millisecond}
	tp := topicsOn(n.be, "fence", 0, 1)[0] // home: shard 0
	p := history.Policy{MaxEvents: 100, MaxAge: time.Minute}
	ctx := context.Background()
	pub := func() uint64 {
		t.Helper()
		s, err := h.Publish(ctx, tp, p, "e", "d", "")
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	s1 := pub()
	s2 := pub()
	if r, err := h.Since(ctx, tp, p, s1); err != nil || !r.Complete {
		t.Fatalf("before the failover: %+v, %v", r, err)
	}
	ring := n.be.Ring
	for _, st := range []redisx.Health{redisx.Suspect, redisx.Down} {
		ring.SetHealth(0, st)
		if _, err := h.Since(ctx, tp, p, s2); !errors.Is(err, ErrHistoryMoving) {
			t.Fatalf("home %v: since = %v, want ErrHistoryMoving", st, err)
		}
	}
	pub() // goes to shard 1 while shard 0 is Down
	if n, err := r1.Do("XLEN", channelName(tp)); err != nil || n != "1" {
		t.Fatalf("the failover's event is not on shard 1: XLEN %q, %v", n, err)
	}
	ring.SetHealth(0, redisx.Up)
	// Shard 0's stream ends at s2 and looks continuous, but an event went
	// to shard 1 in between: not complete.
	if r, err := h.Since(ctx, tp, p, s2); err != nil || r.Complete {
		t.Fatalf("after the failback, since s2: %+v, %v; want incomplete", r, err)
	}
	time.Sleep(350 * time.Millisecond) // past the grace
	s4 := pub()
	pub()
	if r, err := h.Since(ctx, tp, p, s4); err != nil || !r.Complete || len(r.Events) != 1 {
		t.Fatalf("since a serial after the failback: %+v, %v", r, err)
	}
	if r, err := h.Since(ctx, tp, p, s2); err != nil || r.Complete {
		t.Fatalf("since a serial before the failover, later: %+v, %v", r, err)
	}
	if r, err := h.Since(ctx, tp, p, 0); err != nil || !r.Complete {
		t.Fatalf("since 0 claims no continuity: %+v, %v", r, err)
	}
}
