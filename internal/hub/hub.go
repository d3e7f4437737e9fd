// Package hub is a node's local index of which connections are on which
// channel. It subscribes the node to a broker topic once, on a channel's first
// local subscriber, and releases it after the last one (optionally after a
// delay, so a channel that empties and refills does not flap). Deliveries are
// encoded into a WebSocket frame once and the same bytes are handed to every
// local subscriber's write queue.
package hub

import (
	"context"
	"hash/maphash"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/heraldrt/herald/internal/broker"
	"github.com/heraldrt/herald/internal/protocol"
)

// Conn is a local connection as the hub sees it.
type Conn interface {
	// SocketID returns the connection's socket_id.
	SocketID() string
	// Send queues a pre-encoded WebSocket frame. The bytes are shared by many
	// connections and must not be modified. It never blocks.
	Send(wire []byte)
	// Terminate closes the connection because the app asked for it.
	Terminate()
}

// Encoder turns a Pusher JSON payload into WebSocket frame bytes.
type Encoder func(payload []byte) []byte

const shardCount = 64

// Hub is safe for concurrent use.
type Hub struct {
	broker broker.Broker
	encode Encoder
	delay  time.Duration
	seed   maphash.Seed
	shards [shardCount]shard

	delivered atomic.Uint64              // events written to one connection's queue
	subs      [channelKinds]atomic.Int64 // local subscriptions by ChannelKind
}

// ChannelKind is the bounded label set subscriptions are counted by.
type ChannelKind uint8

// Channel kinds, from the channel name's prefix.
const (
	KindPublic ChannelKind = iota
	KindPrivate
	KindEncrypted
	KindPresence
	KindCache // any cache- channel
	KindUser  // #server-to-user-… (signed-in users)
	KindOther
	channelKinds
)

// KindNames are the label values of the ChannelKinds, in order.
var KindNames = [channelKinds]string{"public", "private", "private_encrypted", "presence", "cache", "user", "other"}

// Kind classifies a channel name without allocating, by the protocol's
// channel rules; other internal topics (#…) are KindOther.
func Kind(name string) ChannelKind {
	c := protocol.Classify(name)
	switch {
	case c.Type == protocol.ChannelUser:
		return KindUser
	case strings.HasPrefix(name, "#"):
		return KindOther
	case c.Cache:
		return KindCache
	case c.Type == protocol.ChannelEncrypted:
		return KindEncrypted
	case c.Type == protocol.ChannelPrivate:
		return KindPrivate
	case c.Type == protocol.ChannelPresence:
		return KindPresence
	}
	return KindPublic
}

// Delivered returns how many events were handed to a local connection's
// write queue (one per event per connection), since start.
func (h *Hub) Delivered() uint64 { return h.delivered.Load() }

// Subscriptions returns the local subscriptions of channels of kind k.
func (h *Hub) Subscriptions(k ChannelKind) int64 { return h.subs[k].Load() }

type shard struct {
	mu       sync.RWMutex
	channels map[broker.Topic]*channel
}

// channel is guarded by its shard's mutex.
type channel struct {
	subs       subscribers
	subscribed bool          // the broker subscription is active
	busy       chan struct{} // non-nil while a broker call is in flight; closed when done
	timer      *time.Timer   // a pending delayed unsubscribe
}

// subscribers is a channel's set of local connections. Most channels of a
// busy node have one subscriber (a user's own channel), so the first one is
// held inline and a map is made only for a second: 48 bytes per channel
// instead of about 300 for a one-entry map.
type subscribers struct {
	one  Conn              // the only subscriber, when many is nil
	many map[Conn]struct{} // two or more (or, after leaves, fewer) subscribers
}

func (s *subscribers) len() int {
	if s.many != nil {
		return len(s.many)
	}
	if s.one != nil {
		return 1
	}
	return 0
}

func (s *subscribers) has(c Conn) bool {
	if s.many != nil {
		_, ok := s.many[c]
		return ok
	}
	return s.one != nil && s.one == c
}

// add adds c and reports whether it was new.
func (s *subscribers) add(c Conn) bool {
	switch {
	case s.many != nil:
		if _, ok := s.many[c]; ok {
			return false
		}
		s.many[c] = struct{}{}
	case s.one == nil:
		s.one = c
	case s.one == c:
		return false
	default:
		s.many = map[Conn]struct{}{s.one: {}, c: {}}
		s.one = nil
	}
	return true
}

// remove removes c and reports whether it was there.
func (s *subscribers) remove(c Conn) bool {
	if s.many != nil {
		if _, ok := s.many[c]; !ok {
			return false
		}
		delete(s.many, c)
		if len(s.many) == 0 {
			s.many = nil
		}
		return true
	}
	if s.one != nil && s.one == c {
		s.one = nil
		return true
	}
	return false
}

// each calls f for every subscriber; f must not change the set.
func (s *subscribers) each(f func(Conn)) {
	if s.many != nil {
		for c := range s.many {
			f(c)
		}
		return
	}
	if s.one != nil {
		f(s.one)
	}
}

// New returns a hub that subscribes through b, encodes frames with enc, and
// releases empty channels' broker subscriptions after unsubscribeDelay (0 = at
// once). The broker's Handler must call (*Hub).Deliver; use SetBroker when the
// broker is built after the hub.
func New(b broker.Broker, enc Encoder, unsubscribeDelay time.Duration) *Hub {
	h := &Hub{broker: b, encode: enc, delay: unsubscribeDelay, seed: maphash.MakeSeed()}
	for i := range h.shards {
		h.shards[i].channels = make(map[broker.Topic]*channel)
	}
	return h
}

// SetBroker sets the broker; call it before the hub is used.
func (h *Hub) SetBroker(b broker.Broker) { h.broker = b }

func (h *Hub) shard(t broker.Topic) *shard {
	var m maphash.Hash
	m.SetSeed(h.seed)
	m.WriteString(t.App)
	m.WriteByte(0)
	m.WriteString(t.Channel)
	return &h.shards[m.Sum64()%shardCount]
}

// Join adds c to topic t, subscribing the node to t first if c is its first
// local subscriber. When Join returns nil, events published afterwards reach c.
func (h *Hub) Join(ctx context.Context, t broker.Topic, c Conn) error {
	s := h.shard(t)
	for {
		s.mu.Lock()
		ch := s.channels[t]
		if ch == nil {
			ch = &channel{}
			s.channels[t] = ch
		}
		if busy := ch.busy; busy != nil {
			s.mu.Unlock()
			select {
			case <-busy:
				continue
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		if ch.subs.add(c) {
			h.subs[Kind(t.Channel)].Add(1)
		}
		if ch.timer != nil {
			ch.timer.Stop()
			ch.timer = nil
		}
		if ch.subscribed {
			s.mu.Unlock()
			return nil
		}
		busy := make(chan struct{})
		ch.busy = busy
		s.mu.Unlock()

		err := h.broker.Subscribe(ctx, t)

		s.mu.Lock()
		ch.busy = nil
		if err != nil {
			if ch.subs.remove(c) {
				h.subs[Kind(t.Channel)].Add(-1)
			}
		} else {
			ch.subscribed = true
		}
		empty := ch.subs.len() == 0
		if empty && !ch.subscribed {
			delete(s.channels, t)
		}
		s.mu.Unlock()
		close(busy)
		if empty && err == nil {
			// Everyone left while we subscribed.
			h.release(t)
		}
		return err
	}
}

// Leave removes c from t, releasing the node's subscription after the last
// local subscriber leaves. It reports whether c was on t.
func (h *Hub) Leave(t broker.Topic, c Conn) bool {
	s := h.shard(t)
	s.mu.Lock()
	ch := s.channels[t]
	if ch == nil {
		s.mu.Unlock()
		return false
	}
	if !ch.subs.remove(c) {
		s.mu.Unlock()
		return false
	}
	h.subs[Kind(t.Channel)].Add(-1)
	release := ch.subs.len() == 0 && ch.subscribed && ch.busy == nil
	if release && h.delay > 0 {
		if ch.timer == nil {
			ch.timer = time.AfterFunc(h.delay, func() { h.tryUnsubscribe(t) })
		}
		release = false
	}
	s.mu.Unlock()
	if release {
		h.tryUnsubscribe(t)
	}
	return true
}

func (h *Hub) release(t broker.Topic) {
	if h.delay > 0 {
		s := h.shard(t)
		s.mu.Lock()
		if ch := s.channels[t]; ch != nil && ch.timer == nil && ch.subs.len() == 0 {
			ch.timer = time.AfterFunc(h.delay, func() { h.tryUnsubscribe(t) })
		}
		s.mu.Unlock()
		return
	}
	h.tryUnsubscribe(t)
}

// tryUnsubscribe drops the broker subscription of t if t is still empty.
func (h *Hub) tryUnsubscribe(t broker.Topic) {
	s := h.shard(t)
	s.mu.Lock()
	ch := s.channels[t]
	if ch == nil || ch.subs.len() > 0 || ch.busy != nil || !ch.subscribed {
		s.mu.Unlock()
		return
	}
	ch.timer = nil
	busy := make(chan struct{})
	ch.busy = busy
	s.mu.Unlock()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	_ = h.broker.Unsubscribe(ctx, t) // on error the broker may still deliver; an empty channel drops it
	cancel()

	s.mu.Lock()
	ch.subscribed = false
	ch.busy = nil
	// Joiners wait while busy, so the channel is still empty.
	delete(s.channels, t)
	s.mu.Unlock()
	close(busy)
}

// Deliver fans a broker message out to the local subscribers of its topic.
// It is the broker's Handler.
func (h *Hub) Deliver(m *broker.Message) {
	s := h.shard(m.Topic)
	s.mu.RLock()
	defer s.mu.RUnlock()
	ch := s.channels[m.Topic]
	if ch == nil || ch.subs.len() == 0 {
		return
	}
	switch m.Kind {
	case broker.KindTerminate:
		// Terminate must not call back into the hub synchronously.
		ch.subs.each(Conn.Terminate)
	default:
		wire := h.encode(m.Payload)
		n := uint64(0)
		send := func(c Conn) {
			if m.Exclude != "" && c.SocketID() == m.Exclude {
				return
			}
			c.Send(wire)
			n++
		}
		if ch.subs.many != nil {
			for c := range ch.subs.many {
				send(c)
			}
		} else {
			send(ch.subs.one)
		}
		h.delivered.Add(n)
	}
}

// Count returns the number of local subscribers of t.
func (h *Hub) Count(t broker.Topic) int {
	s := h.shard(t)
	s.mu.RLock()
	defer s.mu.RUnlock()
	if ch := s.channels[t]; ch != nil {
		return ch.subs.len()
	}
	return 0
}

// Topics returns the number of topics this node holds (subscribed or pending).
func (h *Hub) Topics() int {
	n := 0
	for i := range h.shards {
		s := &h.shards[i]
		s.mu.RLock()
		n += len(s.channels)
		s.mu.RUnlock()
	}
	return n
}
