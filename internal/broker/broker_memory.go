package broker

import (
	"context"
	"sync"
)

// Memory is the in-process Broker of a single-node Herald: Publish calls the
// Handler synchronously when the topic is subscribed.
type Memory struct {
	handler Handler

	mu     sync.RWMutex
	topics map[Topic]struct{}
	closed bool
}

var _ Broker = (*Memory)(nil)

// NewMemory returns an in-memory broker that delivers to h.
func NewMemory(h Handler) *Memory {
	return &Memory{handler: h, topics: make(map[Topic]struct{})}
}

// Publish delivers m at once if its topic is subscribed.
func (b *Memory) Publish(_ context.Context, m *Message) error {
	b.mu.RLock()
	_, ok := b.topics[m.Topic]
	closed := b.closed
	b.mu.RUnlock()
	if closed {
		return ErrClosed
	}
	if ok {
		b.handler(m)
	}
	return nil
}

// Subscribe marks t as subscribed.
func (b *Memory) Subscribe(_ context.Context, t Topic) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return ErrClosed
	}
	b.topics[t] = struct{}{}
	return nil
}

// Unsubscribe forgets t.
func (b *Memory) Unsubscribe(_ context.Context, t Topic) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.topics, t)
	return nil
}

// Close stops all delivery.
func (b *Memory) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	b.topics = map[Topic]struct{}{}
	return nil
}

// Subscribed reports whether t is subscribed (for tests).
func (b *Memory) Subscribed(t Topic) bool {
	b.mu.RLock()
	defer b.mu.RUnlock()
	_, ok := b.topics[t]
	return ok
}
