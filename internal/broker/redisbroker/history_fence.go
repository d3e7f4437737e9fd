package redisbroker

import (
	"fmt"
	"time"

	"github.com/heraldrt/herald/internal/broker"
	"github.com/heraldrt/herald/internal/history"
	"github.com/heraldrt/herald/internal/redisx"
)

// Shard failover and history (shard mode). While a channel's home shard is
// failed over, its events go to another shard's stream; when the home shard
// comes back they go to its stream again. Each stream then misses the events
// of the other period, and its continuity links (each entry's previous
// serial) cannot show it. So a recovery must not vouch for events that
// may have been published while the channel's shard changed:
//
//   - while the home shard is Suspect or Down (in this node's view) the
//     channel's events may be split between shards right now: Since fails
//     with ErrHistoryMoving (recovery answers "unavailable", the history
//     endpoint 503);
//   - after it came back (UpSince), a serial older than that moment plus
//     historyFenceGrace (the time every node takes to move back) is not
//     Complete (recovery answers "gap").
//
// Serials are publish times in microseconds, so "older than that moment" is
// a comparison of the serial with the time. The residual risk is nodes that
// disagree about a shard for longer than the grace.

// historyFenceGrace covers the nodes that notice a shard's return later than
// this one (about a probe interval).
const historyFenceGrace = 10 * time.Second

// ErrHistoryMoving is returned by History.Since while the channel's shard is
// failing over: its history may be split between shards. It matches
// history.ErrMoving.
var ErrHistoryMoving = fmt.Errorf("redisbroker: %w", history.ErrMoving)

// home returns the home shard of t in shard mode (-1: cluster mode or a
// single shard, where channels never move).
func (h *History) home(t broker.Topic) int {
	b := h.b
	if b.be.Cluster || b.be.Ring.Len() < 2 {
		return -1
	}
	return b.be.Ring.Home(redisx.ShardKey(t.App, t.Channel))
}

// moving reports whether t's home shard is Suspect or Down in this node's
// view.
func (h *History) moving(t broker.Topic) bool {
	i := h.home(t)
	if i < 0 {
		return false
	}
	switch h.b.be.Ring.Health(i) {
	case redisx.Suspect, redisx.Down:
		return true
	}
	return false
}

// fence marks r, the answer for a recovery from serial after, incomplete
// when after predates the return of t's home shard (plus the grace).
func (h *History) fence(t broker.Topic, after uint64, r *history.Range) {
	i := h.home(t)
	if i < 0 || after == 0 || !r.Complete {
		return
	}
	grace := h.grace
	if grace == 0 {
		grace = historyFenceGrace
	}
	if up, ok := h.b.be.Ring.UpSince(i); ok && int64(after) < up.Add(grace).UnixMicro() {
		r.Complete = false
	}
}
