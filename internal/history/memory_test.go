package history_test

import (
	"context"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldrt/herald/internal/broker"
	"github.com/heraldrt/herald/internal/history"
	"github.com/heraldrt/herald/internal/history/historytest"
)

// fakeClock is a settable clock, safe for concurrent use.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

var apps atomic.Int64

func memoryFixture(t *testing.T) *historytest.Fixture {
	msgs := make(chan *broker.Message, 4096)
	b := broker.NewMemory(func(m *broker.Message) {
		select {
		case msgs <- m:
		default:
			t.Error("test sink overflowed")
		}
	})
	clock := &fakeClock{now: time.Now()}
	return &historytest.Fixture{
		Store: history.NewMemory(b, history.MemoryOptions{Now: clock.Now}),
		Subscribe: func(t testing.TB, tp broker.Topic) {
			if err := b.Subscribe(context.Background(), tp); err != nil {
				t.Fatal(err)
			}
		},
		Next: func(t testing.TB) *broker.Message {
			t.Helper()
			select {
			case m := <-msgs:
				return m
			case <-time.After(3 * time.Second):
				t.Fatal("no message delivered within 3s")
				return nil
			}
		},
		Advance: clock.Advance,
		App:     "app" + strconv.FormatInt(apps.Add(1), 10),
	}
}

func TestMemoryStore(t *testing.T) {
	historytest.Run(t, memoryFixture)
}

// A broker that refuses the message leaves the history untouched.
func TestMemoryPublishErrorRetainsNothing(t *testing.T) {
	b := broker.NewMemory(func(*broker.Message) {})
	s := history.NewMemory(b, history.MemoryOptions{})
	tp := broker.Topic{App: "a", Channel: "chat"}
	p := history.Policy{MaxEvents: 10, MaxAge: time.Minute}
	first, err := s.Publish(context.Background(), tp, p, "e", "1", "")
	if err != nil {
		t.Fatal(err)
	}
	b.Close()
	if _, err := s.Publish(context.Background(), tp, p, "e", "2", ""); err == nil {
		t.Fatal("publish on a closed broker succeeded")
	}
	r, _ := s.Since(context.Background(), tp, p, 0)
	if len(r.Events) != 1 || r.Last != first {
		t.Fatalf("history after a failed publish: %+v", r)
	}
}

// Idle channels are forgotten after twice their max age (at least a
// minute), by the sweep a later publish runs.
func TestMemoryForgetsIdleChannels(t *testing.T) {
	clock := &fakeClock{now: time.Now()}
	s := history.NewMemory(broker.NewMemory(func(*broker.Message) {}), history.MemoryOptions{Now: clock.Now, SweepInterval: time.Second})
	p := history.Policy{MaxEvents: 10, MaxAge: time.Second}
	ctx := context.Background()
	var serials []uint64
	for i := 0; i < 200; i++ {
		n, err := s.Publish(ctx, broker.Topic{App: "a", Channel: "idle-" + strconv.Itoa(i)}, p, "e", "d", "")
		if err != nil {
			t.Fatal(err)
		}
		serials = append(serials, n)
	}
	clock.Advance(2 * time.Minute)
	// Publishing on a channel of every shard sweeps them all.
	for i := 0; i < 2000; i++ {
		if _, err := s.Publish(ctx, broker.Topic{App: "b", Channel: "busy-" + strconv.Itoa(i)}, p, "e", "d", ""); err != nil {
			t.Fatal(err)
		}
	}
	for i, want := range serials {
		r, _ := s.Since(ctx, broker.Topic{App: "a", Channel: "idle-" + strconv.Itoa(i)}, p, want)
		if r.Last != 0 || r.Complete {
			t.Fatalf("idle channel %d still known after 2 minutes: %+v", i, r)
		}
	}
}

func TestSerialOf(t *testing.T) {
	for _, tt := range []struct {
		frame string
		want  uint64
		ok    bool
	}{
		{string(history.AppendFrame(nil, "e", "c", "d", 42)), 42, true},
		{"\x81\x30" + string(history.AppendFrame(nil, "e", "c", "d", history.MaxSerial)), history.MaxSerial, true},
		{`{"event":"e","data":"d","channel":"c"}`, 0, false},
		{`{"event":"e","data":{"serial":5},"channel":"c"}`, 0, false},
		{`{"event":"e","data":"d","channel":"c","serial":}`, 0, false},
		{`{"event":"e","data":"d","channel":"c","serial":99999999999999999}`, 0, false},
		{`{"event":"e","data":"d","channel":"c","serial":9007199254740992}`, 0, false}, // MaxSerial+1
		{`"serial":1}`, 0, false},
		{`,"serial":1}`, 1, true},
		{`}`, 0, false},
		{``, 0, false},
	} {
		got, ok := history.SerialOf([]byte(tt.frame))
		if got != tt.want || ok != tt.ok {
			t.Errorf("SerialOf(%q) = %d, %v; want %d, %v", tt.frame, got, ok, tt.want, tt.ok)
		}
	}
}

func TestNextSerial(t *testing.T) {
	now := time.UnixMicro(1_800_000_000_000_000)
	if s := history.NextSerial(0, now); s != 1_800_000_000_000_000 {
		t.Fatalf("first serial %d", s)
	}
	if s := history.NextSerial(1_800_000_000_000_000, now); s != 1_800_000_000_000_001 {
		t.Fatalf("same microsecond: %d", s)
	}
	if s := history.NextSerial(1_900_000_000_000_000, now); s != 1_900_000_000_000_001 {
		t.Fatalf("clock behind the last serial: %d", s)
	}
}

func BenchmarkMemoryPublish(b *testing.B) {
	s := history.NewMemory(broker.NewMemory(func(*broker.Message) {}), history.MemoryOptions{})
	tp := broker.Topic{App: "a", Channel: "chat"}
	p := history.Policy{MaxEvents: 100, MaxAge: time.Minute}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Publish(ctx, tp, p, "msg", `{"text":"hello"}`, ""); err != nil {
			b.Fatal(err)
		}
	}
}
