package hub

import "github.com/heraldrt/herald/internal/broker"

// Offerer is a Conn that can report whether a frame entered its write queue
// (direct push counts only those in its receipts). Conns without it are
// taken to accept every frame.
type Offerer interface {
	// Offer queues a shared, pre-encoded frame like Send and reports whether
	// it was queued. It never blocks.
	Offer(wire []byte) bool
}

// DeliverTo writes payload, encoded once, to every local subscriber of t, as
// Deliver does for a broker message, and appends to ids the socket ids of the
// connections that queued it. It counts in Delivered like Deliver. Direct
// push uses it on a user's #server-to-user- topic to deliver and collect a
// receipt in one pass.
func (h *Hub) DeliverTo(t broker.Topic, payload []byte, ids []string) []string {
	s := h.shard(t)
	s.mu.RLock()
	defer s.mu.RUnlock()
	ch := s.channels[t]
	if ch == nil || ch.subs.len() == 0 {
		return ids
	}
	wire := h.encode(payload)
	n := uint64(0)
	ch.subs.each(func(c Conn) {
		if o, ok := c.(Offerer); ok {
			if !o.Offer(wire) {
				return
			}
		} else {
			c.Send(wire)
		}
		ids = append(ids, c.SocketID())
		n++
	})
	h.delivered.Add(n)
	return ids
}

// CountDelivered adds n events written to local connections outside Deliver
// and DeliverTo (a direct push to one socket) to Delivered.
func (h *Hub) CountDelivered(n uint64) { h.delivered.Add(n) }
