package broker_test

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/heraldrt/herald/internal/broker"
)

type recorder struct {
	mu   sync.Mutex
	msgs []*broker.Message
}

func (r *recorder) handle(m *broker.Message) {
	r.mu.Lock()
	r.msgs = append(r.msgs, m)
	r.mu.Unlock()
}

func (r *recorder) len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.msgs)
}

func TestMemoryPublishOnlySubscribed(t *testing.T) {
	ctx := context.Background()
	var r recorder
	b := broker.NewMemory(r.handle)
	t1 := broker.Topic{App: "a", Channel: "c1"}
	t2 := broker.Topic{App: "a", Channel: "c2"}
	t1other := broker.Topic{App: "b", Channel: "c1"}

	if b.Subscribed(t1) {
		t.Fatal("new broker reports t1 subscribed")
	}
	if err := b.Publish(ctx, &broker.Message{Topic: t1, Payload: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	if r.len() != 0 {
		t.Fatal("message to an unsubscribed topic was delivered")
	}

	if err := b.Subscribe(ctx, t1); err != nil {
		t.Fatal(err)
	}
	if !b.Subscribed(t1) || b.Subscribed(t2) || b.Subscribed(t1other) {
		t.Fatal("Subscribed does not match the subscriptions")
	}
	m := &broker.Message{Topic: t1, Payload: []byte("hello"), Exclude: "1.2"}
	if err := b.Publish(ctx, m); err != nil {
		t.Fatal(err)
	}
	_ = b.Publish(ctx, &broker.Message{Topic: t2})
	_ = b.Publish(ctx, &broker.Message{Topic: t1other})
	if r.len() != 1 || r.msgs[0] != m {
		t.Fatalf("delivered %d messages, want exactly the one for t1", r.len())
	}

	// Subscribing twice is fine; one Unsubscribe drops it.
	_ = b.Subscribe(ctx, t1)
	if err := b.Unsubscribe(ctx, t1); err != nil {
		t.Fatal(err)
	}
	if b.Subscribed(t1) {
		t.Fatal("still subscribed after Unsubscribe")
	}
	_ = b.Publish(ctx, &broker.Message{Topic: t1})
	if r.len() != 1 {
		t.Fatal("delivered after Unsubscribe")
	}
	if err := b.Unsubscribe(ctx, t2); err != nil {
		t.Fatalf("Unsubscribe of an unknown topic: %v", err)
	}
}

func TestMemoryClose(t *testing.T) {
	ctx := context.Background()
	var r recorder
	b := broker.NewMemory(r.handle)
	tp := broker.Topic{App: "a", Channel: "c"}
	_ = b.Subscribe(ctx, tp)
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if b.Subscribed(tp) {
		t.Error("subscribed after Close")
	}
	if err := b.Publish(ctx, &broker.Message{Topic: tp}); !errors.Is(err, broker.ErrClosed) {
		t.Errorf("Publish after Close = %v, want ErrClosed", err)
	}
	if err := b.Subscribe(ctx, tp); !errors.Is(err, broker.ErrClosed) {
		t.Errorf("Subscribe after Close = %v, want ErrClosed", err)
	}
	if r.len() != 0 {
		t.Error("delivered after Close")
	}
}

func TestMemoryConcurrent(t *testing.T) {
	ctx := context.Background()
	var r recorder
	b := broker.NewMemory(r.handle)
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tp := broker.Topic{App: "a", Channel: string(rune('a' + i))}
			for j := 0; j < 200; j++ {
				_ = b.Subscribe(ctx, tp)
				_ = b.Publish(ctx, &broker.Message{Topic: tp})
				_ = b.Subscribed(tp)
				_ = b.Unsubscribe(ctx, tp)
			}
		}()
	}
	wg.Wait()
	if got := r.len(); got != 8*200 {
		t.Fatalf("delivered %d, want %d", got, 8*200)
	}
}
