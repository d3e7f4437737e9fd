// Package historytest is the conformance suite every history.Store passes:
// the memory store and the Redis one run the same cases through a Fixture.
package historytest

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/heraldrt/herald/internal/broker"
	"github.com/heraldrt/herald/internal/history"
)

// Fixture is one store under test with a way to watch what it publishes.
type Fixture struct {
	Store history.Store
	// Subscribe makes Next receive the messages of t.
	Subscribe func(t testing.TB, tp broker.Topic)
	// Next returns the next message delivered on a subscribed topic, or
	// fails the test after a few seconds.
	Next func(t testing.TB) *broker.Message
	// Advance lets d pass on the store's clock (a fake clock, or a sleep).
	Advance func(d time.Duration)
	// App is a unique app id for the case, so cases never share channels.
	App string
}

// Run runs every case; newFixture is called once per case.
func Run(t *testing.T, newFixture func(t *testing.T) *Fixture) {
	cases := []struct {
		name string
		f    func(t *testing.T, fx *Fixture)
	}{
		{"PublishDeliversFrameWithSerial", publishDeliversFrame},
		{"SerialsIncreasePerChannel", serialsIncrease},
		{"ConcurrentPublishersDeliverInSerialOrder", concurrentOrder},
		{"SinceAndContinuity", sinceAndContinuity},
		{"MaxEventsTrims", maxEventsTrims},
		{"MaxEventsWindowIsExact", maxEventsWindow},
		{"MaxAgeExpires", maxAgeExpires},
		{"UnknownChannel", unknownChannel},
		{"InvalidPolicy", invalidPolicy},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.f(t, newFixture(t))
		})
	}
}

var policy = history.Policy{MaxEvents: 100, MaxAge: time.Minute}

func ctx(t testing.TB) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	t.Cleanup(cancel)
	return c
}

func publish(t testing.TB, fx *Fixture, tp broker.Topic, p history.Policy, event, data string) uint64 {
	t.Helper()
	s, err := fx.Store.Publish(ctx(t), tp, p, event, data, "")
	if err != nil {
		t.Fatalf("publish %s on %s: %v", event, tp.Channel, err)
	}
	return s
}

func since(t testing.TB, fx *Fixture, tp broker.Topic, p history.Policy, after uint64) history.Range {
	t.Helper()
	r, err := fx.Store.Since(ctx(t), tp, p, after)
	if err != nil {
		t.Fatalf("since %d on %s: %v", after, tp.Channel, err)
	}
	return r
}

func publishDeliversFrame(t *testing.T, fx *Fixture) {
	tp := broker.Topic{App: fx.App, Channel: "chat-frame"}
	fx.Subscribe(t, tp)
	before := uint64(time.Now().Add(-time.Minute).UnixMicro())
	s, err := fx.Store.Publish(ctx(t), tp, policy, "msg", `{"text":"hi \"there\""}`, "123.456")
	if err != nil {
		t.Fatal(err)
	}
	if s < before || s > history.MaxSerial {
		t.Fatalf("serial %d is not a recent time in microseconds", s)
	}
	m := fx.Next(t)
	want := `{"event":"msg","data":"{\"text\":\"hi \\\"there\\\"\"}","channel":"chat-frame","serial":` + strconv.FormatUint(s, 10) + `}`
	if m.Topic != tp || string(m.Payload) != want || m.Exclude != "123.456" || m.Kind != broker.KindEvent {
		t.Fatalf("delivered %+v %s\nwant %s (exclude 123.456)", m.Topic, m.Payload, want)
	}
	if got, ok := history.SerialOf(m.Payload); !ok || got != s {
		t.Fatalf("SerialOf(frame) = %d, %v; want %d", got, ok, s)
	}
}

func serialsIncrease(t *testing.T, fx *Fixture) {
	a := broker.Topic{App: fx.App, Channel: "chat-a"}
	b := broker.Topic{App: fx.App, Channel: "chat-b"}
	other := broker.Topic{App: fx.App + "-other", Channel: "chat-a"}
	var prev uint64
	for i := 0; i < 50; i++ {
		s := publish(t, fx, a, policy, "e", strconv.Itoa(i))
		if s <= prev {
			t.Fatalf("serial %d after %d", s, prev)
		}
		prev = s
	}
	// Other channels and other apps have their own sequences.
	publish(t, fx, b, policy, "e", "b")
	publish(t, fx, other, policy, "e", "other")
	if r := since(t, fx, a, policy, 0); len(r.Events) != 50 || r.Last != prev || !r.Complete {
		t.Fatalf("a: %d events, last %d (want 50, %d)", len(r.Events), r.Last, prev)
	}
	if r := since(t, fx, b, policy, 0); len(r.Events) != 1 || r.Events[0].Data != "b" {
		t.Fatalf("b: %+v", r.Events)
	}
	if r := since(t, fx, other, policy, 0); len(r.Events) != 1 || r.Events[0].Data != "other" {
		t.Fatalf("other app: %+v", r.Events)
	}
}

// Publishers racing on one channel: subscribers see serials strictly
// increasing, every event once, and the history holds them in the same order.
func concurrentOrder(t *testing.T, fx *Fixture) {
	tp := broker.Topic{App: fx.App, Channel: "chat-race"}
	fx.Subscribe(t, tp)
	const writers, each = 8, 25
	var wg sync.WaitGroup
	errs := make(chan error, writers*each)
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				if _, err := fx.Store.Publish(context.Background(), tp, history.Policy{MaxEvents: 1000, MaxAge: time.Minute},
					"e", fmt.Sprintf("%d-%d", w, i), ""); err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	var delivered []uint64
	seen := map[string]bool{}
	for len(delivered) < writers*each {
		m := fx.Next(t)
		s, ok := history.SerialOf(m.Payload)
		if !ok {
			t.Fatalf("frame without serial: %s", m.Payload)
		}
		if n := len(delivered); n > 0 && s <= delivered[n-1] {
			t.Fatalf("delivery %d has serial %d after %d: delivery order is not serial order", n, s, delivered[n-1])
		}
		if seen[string(m.Payload)] {
			t.Fatalf("delivered twice: %s", m.Payload)
		}
		seen[string(m.Payload)] = true
		delivered = append(delivered, s)
	}
	r := since(t, fx, tp, history.Policy{MaxEvents: 1000, MaxAge: time.Minute}, 0)
	if len(r.Events) != len(delivered) {
		t.Fatalf("history has %d events, delivered %d", len(r.Events), len(delivered))
	}
	for i, e := range r.Events {
		if e.Serial != delivered[i] {
			t.Fatalf("history[%d] = %d, delivered %d", i, e.Serial, delivered[i])
		}
	}
}

func sinceAndContinuity(t *testing.T, fx *Fixture) {
	tp := broker.Topic{App: fx.App, Channel: "chat-since"}
	var s []uint64
	for i := 0; i < 10; i++ {
		s = append(s, publish(t, fx, tp, policy, "e"+strconv.Itoa(i), "d"+strconv.Itoa(i)))
		fx.Advance(2 * time.Millisecond) // serials are then at least 2000 apart
	}
	r := since(t, fx, tp, policy, s[3])
	if !r.Complete || r.Last != s[9] || len(r.Events) != 6 {
		t.Fatalf("since s[3]: complete=%v last=%d events=%d", r.Complete, r.Last, len(r.Events))
	}
	for i, e := range r.Events {
		if e.Serial != s[4+i] || e.Name != "e"+strconv.Itoa(4+i) || e.Data != "d"+strconv.Itoa(4+i) {
			t.Fatalf("event %d = %+v", i, e)
		}
	}
	if r := since(t, fx, tp, policy, s[9]); !r.Complete || len(r.Events) != 0 || r.Last != s[9] {
		t.Fatalf("since newest: %+v", r)
	}
	if r := since(t, fx, tp, policy, 0); !r.Complete || len(r.Events) != 10 {
		t.Fatalf("since 0: complete=%v events=%d", r.Complete, len(r.Events))
	}
	// A serial that was never issued on this channel is a gap, not a match.
	if r := since(t, fx, tp, policy, s[4]+1); r.Complete {
		t.Fatalf("since a serial never issued (between two events): complete")
	}
	if r := since(t, fx, tp, policy, s[9]+1000); r.Complete || len(r.Events) != 0 {
		t.Fatalf("since a future serial: %+v", r)
	}
	if r := since(t, fx, tp, policy, s[0]-1); r.Complete {
		t.Fatalf("since a serial before the channel's history began: complete")
	}
}

func maxEventsTrims(t *testing.T, fx *Fixture) {
	tp := broker.Topic{App: fx.App, Channel: "chat-trim"}
	p := history.Policy{MaxEvents: 5, MaxAge: time.Minute}
	var s []uint64
	for i := 0; i < 12; i++ {
		s = append(s, publish(t, fx, tp, p, "e", strconv.Itoa(i)))
	}
	r := since(t, fx, tp, p, 0)
	if len(r.Events) != 5 || r.Events[0].Serial != s[7] || r.Events[4].Serial != s[11] {
		t.Fatalf("retained %+v, want the 5 newest", r.Events)
	}
	// s[6] is the predecessor of the oldest retained event: nothing missed.
	if r := since(t, fx, tp, p, s[6]); !r.Complete || len(r.Events) != 5 {
		t.Fatalf("since s[6]: complete=%v events=%d", r.Complete, len(r.Events))
	}
	if r := since(t, fx, tp, p, s[8]); !r.Complete || len(r.Events) != 3 {
		t.Fatalf("since s[8]: complete=%v events=%d", r.Complete, len(r.Events))
	}
	// s[5]: s[6] is gone, so the gap is reported (with what is retained).
	if r := since(t, fx, tp, p, s[5]); r.Complete || len(r.Events) != 5 {
		t.Fatalf("since s[5]: complete=%v events=%d, want a gap", r.Complete, len(r.Events))
	}
}

// Stores may trim lazily (Redis trims whole stream nodes) but answer with
// exactly the last MaxEvents events, and continuity follows that window.
func maxEventsWindow(t *testing.T, fx *Fixture) {
	tp := broker.Topic{App: fx.App, Channel: "chat-window"}
	p := history.Policy{MaxEvents: 150, MaxAge: time.Minute}
	var s []uint64
	for i := 0; i < 400; i++ {
		s = append(s, publish(t, fx, tp, p, "e", strconv.Itoa(i)))
	}
	r := since(t, fx, tp, p, 0)
	if len(r.Events) != 150 || r.Events[0].Serial != s[250] || r.Events[149].Serial != s[399] {
		t.Fatalf("window: %d events from %d, want 150 from %d", len(r.Events), r.Events[0].Serial, s[250])
	}
	if r := since(t, fx, tp, p, s[249]); !r.Complete || len(r.Events) != 150 {
		t.Fatalf("since the predecessor of the window: complete=%v events=%d", r.Complete, len(r.Events))
	}
	if r := since(t, fx, tp, p, s[248]); r.Complete {
		t.Fatalf("since an event just outside the window: complete")
	}
	if r := since(t, fx, tp, p, s[300]); !r.Complete || len(r.Events) != 99 {
		t.Fatalf("since inside the window: complete=%v events=%d", r.Complete, len(r.Events))
	}
}

func maxAgeExpires(t *testing.T, fx *Fixture) {
	tp := broker.Topic{App: fx.App, Channel: "chat-age"}
	p := history.Policy{MaxEvents: 100, MaxAge: 300 * time.Millisecond}
	old := publish(t, fx, tp, p, "e", "old")
	fx.Advance(400 * time.Millisecond)
	fresh := publish(t, fx, tp, p, "e", "fresh")
	r := since(t, fx, tp, p, 0)
	if len(r.Events) != 1 || r.Events[0].Serial != fresh || r.Last != fresh {
		t.Fatalf("after max age: %+v, want only the fresh event", r)
	}
	if r := since(t, fx, tp, p, old); !r.Complete || len(r.Events) != 1 {
		t.Fatalf("since the expired event that precedes the fresh one: %+v", r)
	}
	if r := since(t, fx, tp, p, old-1); r.Complete {
		t.Fatalf("since before the expired event: complete")
	}
	// Reading also applies the age: once everything is old, nothing is
	// returned, yet a client that saw the newest event is up to date.
	fx.Advance(400 * time.Millisecond)
	if r := since(t, fx, tp, p, 0); len(r.Events) != 0 {
		t.Fatalf("expired events returned: %+v", r.Events)
	}
	if r := since(t, fx, tp, p, fresh); !r.Complete || r.Last != fresh {
		t.Fatalf("since the newest (expired) serial: %+v", r)
	}
	if r := since(t, fx, tp, p, old); r.Complete {
		t.Fatalf("since an older serial after everything expired: complete")
	}
}

func unknownChannel(t *testing.T, fx *Fixture) {
	tp := broker.Topic{App: fx.App, Channel: "never-published"}
	if r := since(t, fx, tp, policy, 0); !r.Complete || r.Last != 0 || len(r.Events) != 0 {
		t.Fatalf("since 0: %+v", r)
	}
	if r := since(t, fx, tp, policy, 42); r.Complete {
		t.Fatalf("since 42 on a channel without history: complete")
	}
}

func invalidPolicy(t *testing.T, fx *Fixture) {
	tp := broker.Topic{App: fx.App, Channel: "chat-policy"}
	if _, err := fx.Store.Publish(ctx(t), tp, history.Policy{}, "e", "d", ""); err == nil {
		t.Fatal("publish with a zero policy succeeded")
	}
	if _, err := fx.Store.Since(ctx(t), tp, history.Policy{MaxEvents: 1}, 0); err == nil {
		t.Fatal("since with a zero max age succeeded")
	}
}
