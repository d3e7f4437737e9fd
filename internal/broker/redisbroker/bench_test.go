package redisbroker

import (
	"context"
	"encoding/binary"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldrt/herald/internal/broker"
	"github.com/heraldrt/herald/internal/redistest"
	"github.com/heraldrt/herald/internal/redisx"
)

// latencies records publish→deliver latencies of up to len(ns) messages.
type latencies struct {
	ns        []int64
	n         atomic.Int64
	delivered atomic.Int64
	signal    chan struct{} // capacity 1, notified on every delivery
}

func newLatencies() *latencies {
	return &latencies{ns: make([]int64, 1<<20), signal: make(chan struct{}, 1)}
}

func (l *latencies) handle(m *broker.Message) {
	if len(m.Payload) >= 8 {
		sent := int64(binary.LittleEndian.Uint64(m.Payload))
		if i := l.n.Add(1) - 1; i < int64(len(l.ns)) {
			l.ns[i] = time.Now().UnixNano() - sent
		}
	}
	l.delivered.Add(1)
	select {
	case l.signal <- struct{}{}:
	default:
	}
}

func (l *latencies) report(b *testing.B) {
	n := min(l.n.Load(), int64(len(l.ns)))
	if n == 0 {
		return
	}
	s := slices.Clone(l.ns[:n])
	slices.Sort(s)
	b.ReportMetric(float64(s[n/2])/1e3, "p50-µs")
	b.ReportMetric(float64(s[n*99/100])/1e3, "p99-µs")
}

// payload is a ~100-byte Pusher frame with the send time in its first bytes.
func payload() []byte {
	p := make([]byte, 100)
	binary.LittleEndian.PutUint64(p, uint64(time.Now().UnixNano()))
	copy(p[8:], `{"event":"price","channel":"btc-usd","data":"{\"p\":64123.5,\"v\":0.25,\"t\":1700000000}"}`)
	return p
}

// BenchmarkPublishDeliver measures messages/s and publish→deliver latency
// from a publishing node to a subscribing node through one Redis server,
// against the in-memory broker. "parallel" publishes from 64 goroutines
// (rueidis pipelines them), "sequential" publishes one message at a time
// and waits for its delivery (pure round-trip latency).
func BenchmarkPublishDeliver(b *testing.B) {
	topic := broker.Topic{App: "app", Channel: "btc-usd"}
	type setup func(b *testing.B, h broker.Handler) (pub, sub broker.Broker)
	memory := func(b *testing.B, h broker.Handler) (broker.Broker, broker.Broker) {
		m := broker.NewMemory(h)
		return m, m
	}
	redis := func(b *testing.B, h broker.Handler) (broker.Broker, broker.Broker) {
		r := redistest.Start(b)
		mk := func(h broker.Handler) broker.Broker {
			be, err := redisx.Dial([]string{r.URL()}, "", redisx.Options{})
			if err != nil {
				b.Fatal(err)
			}
			br, err := New(be, h, Options{})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { br.Close(); be.Close() })
			return br
		}
		return mk(func(*broker.Message) {}), mk(h)
	}
	for _, bc := range []struct {
		name string
		mk   setup
	}{{"memory", memory}, {"redis", redis}} {
		b.Run(bc.name+"/parallel", func(b *testing.B) {
			l := newLatencies()
			pub, sub := bc.mk(b, l.handle)
			ctx := context.Background()
			if err := sub.Subscribe(ctx, topic); err != nil {
				b.Fatal(err)
			}
			b.SetParallelism(32) // 64 publishers on 2 cores
			b.ResetTimer()
			start := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := pub.Publish(ctx, &broker.Message{Topic: topic, Payload: payload()}); err != nil {
						b.Error(err)
						return
					}
				}
			})
			deadline := time.Now().Add(30 * time.Second)
			for l.delivered.Load() < int64(b.N) && time.Now().Before(deadline) {
				time.Sleep(time.Millisecond)
			}
			elapsed := time.Since(start)
			b.StopTimer()
			if got := l.delivered.Load(); got != int64(b.N) {
				b.Fatalf("delivered %d of %d", got, b.N)
			}
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "msgs/s")
			l.report(b)
		})
		b.Run(bc.name+"/sequential", func(b *testing.B) {
			l := newLatencies()
			pub, sub := bc.mk(b, l.handle)
			ctx := context.Background()
			if err := sub.Subscribe(ctx, topic); err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			start := time.Now()
			for i := 0; i < b.N; i++ {
				if err := pub.Publish(ctx, &broker.Message{Topic: topic, Payload: payload()}); err != nil {
					b.Fatal(err)
				}
				for l.delivered.Load() <= int64(i) {
					select {
					case <-l.signal:
					case <-time.After(5 * time.Second):
						b.Fatal("delivery stalled")
					}
				}
			}
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
			b.StopTimer()
			l.report(b)
		})
	}
}
