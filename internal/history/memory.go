package history

import (
	"context"
	"hash/maphash"
	"sort"
	"sync"
	"time"

	"github.com/heraldrt/herald/internal/broker"
)

// MemoryOptions tune a Memory store. Zero values take the defaults.
type MemoryOptions struct {
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// SweepInterval is how often a shard forgets channels whose history
	// has expired (checked when one of its channels publishes). Default 10s.
	SweepInterval time.Duration
}

// Memory is the Store of a single process: histories in memory, published
// through the process's broker (normally broker.Memory, which delivers
// synchronously, so that the per-channel lock held across Publish orders
// delivery). A channel's history is forgotten once its newest event is
// older than twice its MaxAge (at least a minute). Memory starts no
// goroutine.
type Memory struct {
	b      broker.Broker
	now    func() time.Time
	sweep  time.Duration
	seed   maphash.Seed
	shards [memShards]memShard
}

var _ Store = (*Memory)(nil)

const memShards = 32

type memShard struct {
	mu    sync.Mutex
	logs  map[broker.Topic]*memLog
	swept time.Time
}

// memLog is one channel's history. Its mutex is held across the broker
// publish, which orders the channel's deliveries by serial.
type memLog struct {
	mu      sync.Mutex
	dead    bool // removed from its shard; look it up again
	last    uint64
	events  []memEvent // events[start:] are retained, oldest first
	start   int
	expires time.Time // when the whole log may be forgotten
}

type memEvent struct {
	Event
	prev uint64
}

// NewMemory returns a store that publishes through b.
func NewMemory(b broker.Broker, o MemoryOptions) *Memory {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.SweepInterval <= 0 {
		o.SweepInterval = 10 * time.Second
	}
	m := &Memory{b: b, now: o.Now, sweep: o.SweepInterval, seed: maphash.MakeSeed()}
	for i := range m.shards {
		m.shards[i].logs = make(map[broker.Topic]*memLog)
	}
	return m
}

func (m *Memory) shard(t broker.Topic) *memShard {
	var h maphash.Hash
	h.SetSeed(m.seed)
	h.WriteString(t.App)
	h.WriteByte(0)
	h.WriteString(t.Channel)
	return &m.shards[h.Sum64()%memShards]
}

// logTTL is how long a channel's history outlives its newest event.
func logTTL(p Policy) time.Duration { return max(2*p.MaxAge, time.Minute) }

// lockLog returns t's log, locked, creating it when create is set (nil
// otherwise when absent).
func (m *Memory) lockLog(t broker.Topic, create bool, now time.Time) *memLog {
	s := m.shard(t)
	for {
		s.mu.Lock()
		if now.Sub(s.swept) >= m.sweep {
			s.swept = now
			for k, l := range s.logs {
				// TryLock: a log in use is not idle; it is looked at next time.
				if l.mu.TryLock() {
					if now.After(l.expires) {
						l.dead = true
						delete(s.logs, k)
					}
					l.mu.Unlock()
				}
			}
		}
		l := s.logs[t]
		if l == nil {
			if !create {
				s.mu.Unlock()
				return nil
			}
			l = &memLog{}
			s.logs[t] = l
		}
		s.mu.Unlock()
		l.mu.Lock()
		if !l.dead {
			return l
		}
		l.mu.Unlock()
	}
}

// trim drops events beyond p's count and age limits at time now.
func (l *memLog) trim(p Policy, now time.Time) {
	cutoff := now.Add(-p.MaxAge).UnixMicro()
	for l.start < len(l.events) && (len(l.events)-l.start > p.MaxEvents || int64(l.events[l.start].Serial) < cutoff) {
		l.events[l.start] = memEvent{} // release the strings
		l.start++
	}
	if l.start == len(l.events) {
		l.events, l.start = l.events[:0], 0
	} else if l.start > 32 && l.start >= len(l.events)/2 {
		n := copy(l.events, l.events[l.start:])
		clear(l.events[n:])
		l.events, l.start = l.events[:n], 0
	}
}

// Publish implements Store. The event is retained only if the broker
// accepted it.
func (m *Memory) Publish(ctx context.Context, t broker.Topic, p Policy, event, data, exclude string) (uint64, error) {
	if !p.Valid() {
		return 0, ErrPolicy
	}
	now := m.now()
	l := m.lockLog(t, true, now)
	defer l.mu.Unlock()
	serial := NextSerial(l.last, now)
	if serial > MaxSerial {
		serial = MaxSerial // the year 2255; keeps the frame parsable
	}
	payload := AppendFrame(make([]byte, 0, 48+len(event)+len(t.Channel)+len(data)*11/10), event, t.Channel, data, serial)
	if err := m.b.Publish(ctx, &broker.Message{Topic: t, Payload: payload, Exclude: exclude}); err != nil {
		return 0, err
	}
	l.events = append(l.events, memEvent{Event: Event{Serial: serial, Name: event, Data: data}, prev: l.last})
	l.last = serial
	l.expires = now.Add(logTTL(p))
	l.trim(p, now)
	return serial, nil
}

// Since implements Store.
func (m *Memory) Since(_ context.Context, t broker.Topic, p Policy, after uint64) (Range, error) {
	if !p.Valid() {
		return Range{}, ErrPolicy
	}
	now := m.now()
	l := m.lockLog(t, false, now)
	if l == nil {
		return Range{Complete: after == 0}, nil
	}
	defer l.mu.Unlock()
	l.trim(p, now)
	r := Range{Last: l.last}
	ev := l.events[l.start:]
	// The first retained event after `after` (events are in serial order).
	i := sort.Search(len(ev), func(i int) bool { return ev[i].Serial > after })
	firstOK := i < len(ev)
	var firstPrev uint64
	if firstOK {
		firstPrev = ev[i].prev
	}
	r.Complete = Continuous(after, r.Last, firstOK, firstPrev)
	if rest := ev[i:]; len(rest) > 0 {
		r.Events = make([]Event, len(rest))
		for j := range rest {
			r.Events[j] = rest[j].Event
		}
	}
	return r, nil
}
