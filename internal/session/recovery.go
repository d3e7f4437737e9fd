package session

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/heraldrt/herald/internal/apps"
	"github.com/heraldrt/herald/internal/broker"
	"github.com/heraldrt/herald/internal/history"
	"github.com/heraldrt/herald/internal/hub"
	"github.com/heraldrt/herald/internal/protocol"
)

// Channel history and recovery (see package history and README "Channel
// history and recovery").
//
// A client that subscribes with "last_serial": L in pusher:subscribe data
// gets, after pusher_internal:subscription_succeeded, every event of the
// channel published after serial L, in order, then the live events, with no
// gap and no duplicate; or herald:recovery_failed saying why not. To do so
// the subscription joins the hub through a recoveringConn that holds the
// channel's live frames while the history is read and sent; it then lets
// through the held frames whose serial is above the last one sent (and every
// frame without a serial), and from then on passes everything straight on.

// EventRecoveryFailed is sent on a channel, instead of the missed events,
// when a recovery cannot deliver every event after the client's last_serial.
// Its data: {"last_serial": L, "reason": …, "message": …} with reason one of
// RecoveryGap, RecoveryNotEnabled, RecoveryInvalid, RecoveryUnavailable,
// RecoveryOverflow.
const EventRecoveryFailed = "herald:recovery_failed"

// Reasons of a failed recovery.
const (
	// RecoveryGap: events after last_serial are no longer retained (trimmed
	// by count or age, or the history was lost), or the serial is unknown.
	RecoveryGap = "gap"
	// RecoveryNotEnabled: the channel matches no history rule of the app.
	RecoveryNotEnabled = "not_enabled"
	// RecoveryInvalid: last_serial is not an integer in 0..2⁵³−1.
	RecoveryInvalid = "invalid"
	// RecoveryUnavailable: the history could not be read (storage error).
	RecoveryUnavailable = "unavailable"
	// RecoveryOverflow: live events arrived faster than the recovery could
	// send them and more than the connection's queue limit was held.
	RecoveryOverflow = "overflow"
)

// recoveryReadTimeout bounds the history read of one recovery.
const recoveryReadTimeout = 5 * time.Second

// HistoryStats count history publishes and recoveries (for metrics).
type HistoryStats struct {
	// Published counts events published with a serial.
	Published uint64
	// Recovered counts recoveries that delivered every missed event;
	// RecoveredEvents the events they sent.
	Recovered, RecoveredEvents uint64
	// Failed counts failed recoveries by reason.
	Failed map[string]uint64
}

var recoveryReasons = []string{RecoveryGap, RecoveryNotEnabled, RecoveryInvalid, RecoveryUnavailable, RecoveryOverflow}

type historyCounters struct {
	published, recovered, recoveredEvents atomic.Uint64
	failed                                [5]atomic.Uint64 // by recoveryReasons index
}

// HistoryStats returns the node's history counters.
func (n *Node) HistoryStats() HistoryStats {
	c := &n.hist
	st := HistoryStats{Published: c.published.Load(), Recovered: c.recovered.Load(),
		RecoveredEvents: c.recoveredEvents.Load(), Failed: make(map[string]uint64, len(recoveryReasons))}
	for i, r := range recoveryReasons {
		st.Failed[r] = c.failed[i].Load()
	}
	return st
}

// nodeHistory is the part of Node that serves channel history (embedded in
// Node, so its fields are Node's).
type nodeHistory struct {
	// History keeps the histories of the channels that match an app's
	// history rules (history.Memory or the Redis broker's store). Nil: no
	// history; such channels publish like any other and recoveries fail
	// with RecoveryUnavailable.
	History history.Store

	hist historyCounters
}

// HistoryPolicy returns the history policy of rule r.
func HistoryPolicy(r *apps.HistoryRule) history.Policy {
	return history.Policy{MaxEvents: r.MaxEvents, MaxAge: r.MaxAge.Duration}
}

// publishHistory publishes an API event on a history channel: serial,
// retention and broker publish in one step (history.Store.Publish).
func (n *Node) publishHistory(ctx context.Context, a *apps.App, r *apps.HistoryRule, channel, event, data, exclude string) error {
	_, err := n.History.Publish(ctx, broker.Topic{App: a.ID, Channel: channel}, HistoryPolicy(r), event, data, exclude)
	if err == nil {
		n.apiPublished.Add(1)
		n.hist.published.Add(1)
	}
	return err
}

// parseLastSerial reads last_serial: a JSON integer or a string of digits,
// at most history.MaxSerial.
func parseLastSerial(raw json.RawMessage) (uint64, bool) {
	s := string(raw)
	if len(s) >= 2 && s[0] == '"' && s[len(s)-1] == '"' {
		s = s[1 : len(s)-1]
	}
	if s == "" || len(s) > 16 {
		return 0, false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
	}
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil || v > history.MaxSerial {
		return 0, false
	}
	return v, true
}

// recovery is one subscription's catch-up, from pusher:subscribe to live.
type recovery struct {
	s       *Session
	channel string
	raw     json.RawMessage // last_serial as sent, for the failure message
	after   uint64
	invalid bool
	rule    *apps.HistoryRule // nil: the channel keeps no history
	conn    *recoveringConn   // nil when nothing needs holding
	upTo    uint64            // the newest serial sent (or after)
}

// newRecovery returns the recovery a subscription asked for with
// last_serial (raw), or nil when it did not ask.
func (s *Session) newRecovery(channel string, raw json.RawMessage) *recovery {
	if len(raw) == 0 || string(raw) == "null" {
		return nil
	}
	r := &recovery{s: s, channel: channel, raw: raw}
	r.after, r.invalid = parseLastSerial(raw)
	r.invalid = !r.invalid
	r.rule = s.app.HistoryFor(channel)
	if !r.invalid && r.rule != nil && s.node.History != nil {
		r.conn = &recoveringConn{Conn: s.conn, limit: s.app.MaxQueuedBytes}
	}
	return r
}

// hubConn is the connection the subscription joins the hub with.
func (r *recovery) hubConn(c Conn) hub.Conn {
	if r == nil || r.conn == nil {
		return c
	}
	return r.conn
}

// replay sends what the client missed, or herald:recovery_failed. It
// reports whether the client is now up to date through the history (a cache
// channel's last event then need not be replayed).
func (r *recovery) replay() bool {
	if r == nil {
		return false
	}
	s, n := r.s, r.s.node
	switch {
	case r.invalid:
		r.fail(RecoveryInvalid, "last_serial must be an integer between 0 and "+strconv.FormatUint(history.MaxSerial, 10))
		return false
	case r.rule == nil:
		r.fail(RecoveryNotEnabled, "Channel "+r.channel+" keeps no history (no history rule of the app matches it)")
		return false
	case n.History == nil:
		r.fail(RecoveryUnavailable, "This server keeps no history")
		return false
	}
	ctx, cancel := context.WithTimeout(s.ctx, recoveryReadTimeout)
	rg, err := n.History.Since(ctx, s.topic(r.channel), HistoryPolicy(r.rule), r.after)
	cancel()
	if err != nil {
		n.log().Warn("history read failed", "app", s.app.ID, "channel", r.channel, "err", err)
		msg := "The channel's history could not be read, try again"
		if errors.Is(err, history.ErrMoving) {
			msg = "The channel's history is moving (its Redis shard is failing over) and may be incomplete, try again later"
		}
		r.fail(RecoveryUnavailable, msg)
		return false
	}
	if !rg.Complete {
		r.fail(RecoveryGap, "Events after serial "+strconv.FormatUint(r.after, 10)+" are no longer retained (the channel keeps its last "+
			strconv.Itoa(r.rule.MaxEvents)+" events for at most "+r.rule.MaxAge.String()+")")
		return false
	}
	r.upTo = r.after
	for _, e := range rg.Events {
		s.conn.SendPayload(history.AppendFrame(make([]byte, 0, 48+len(e.Name)+len(r.channel)+len(e.Data)*11/10),
			e.Name, r.channel, e.Data, e.Serial))
		r.upTo = e.Serial
	}
	n.hist.recovered.Add(1)
	n.hist.recoveredEvents.Add(uint64(len(rg.Events)))
	return r.after > 0 || len(rg.Events) > 0
}

// goLive hands the held live frames on (those not already sent from the
// history) and lets later frames straight through.
func (r *recovery) goLive() {
	if r == nil || r.conn == nil {
		return
	}
	r.conn.flush(r.upTo, func() {
		r.fail(RecoveryOverflow, "Live events arrived faster than the recovery could send them; some were dropped")
	})
}

// fail sends herald:recovery_failed and counts it.
func (r *recovery) fail(reason, msg string) {
	for i, x := range recoveryReasons {
		if x == reason {
			r.s.node.hist.failed[i].Add(1)
		}
	}
	b := make([]byte, 0, 64+len(msg)+len(r.raw))
	b = append(b, `{"last_serial":`...)
	if r.invalid {
		b = append(b, "null"...)
	} else {
		b = strconv.AppendUint(b, r.after, 10)
	}
	b = append(b, `,"reason":`...)
	b = protocol.AppendString(b, reason)
	b = append(b, `,"message":`...)
	b = protocol.AppendString(b, msg)
	b = append(b, '}')
	r.s.conn.SendPayload(protocol.Event(EventRecoveryFailed, r.channel, string(b)))
}

// recoveringConn is a subscription's hub connection while it recovers: it
// holds the channel's frames (at most limit bytes) until flush, then passes
// frames straight to Conn. Every other method is Conn's.
//
// After the flush it still drops frames whose serial is at most upTo until
// the first frame above upTo passes: an event the history read returned
// may reach this node through pub/sub only after the flush (the stream read
// and the pub/sub message travel on different Redis connections), and would
// otherwise be delivered twice. Once a newer frame passed, pub/sub order
// (serial order) guarantees no older one follows.
type recoveringConn struct {
	Conn
	limit int

	live     atomic.Bool
	caught   atomic.Bool // live, and a frame above upTo has passed
	mu       sync.Mutex
	held     [][]byte
	size     int
	overflow bool
	upTo     uint64 // set by flush before live
}

// Send implements hub.Conn.
func (c *recoveringConn) Send(wire []byte) {
	if c.live.Load() {
		c.sendLive(wire)
		return
	}
	c.mu.Lock()
	if c.live.Load() {
		c.mu.Unlock()
		c.sendLive(wire)
		return
	}
	switch {
	case c.overflow:
	case c.size+len(wire) > c.limit:
		// Past the connection's own queue bound: give the frames up and
		// say so at flush, rather than hold without limit.
		c.overflow = true
		c.held, c.size = nil, 0
	default:
		c.held = append(c.held, wire)
		c.size += len(wire)
	}
	c.mu.Unlock()
}

// flush sends the held frames, minus those whose serial is at most upTo
// (already sent from the history), and turns the connection live. When
// frames were dropped for overflow it calls overflowed first, before any
// live frame.
func (c *recoveringConn) flush(upTo uint64, overflowed func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.overflow {
		overflowed()
	}
	for _, w := range c.held {
		if s, ok := history.SerialOf(w); ok && s <= upTo {
			continue
		}
		c.Conn.Send(w)
	}
	c.held, c.size = nil, 0
	c.upTo = upTo
	c.live.Store(true)
}

// sendLive passes a frame after the flush, dropping the late duplicates of
// events already sent from the history.
func (c *recoveringConn) sendLive(wire []byte) {
	if !c.caught.Load() {
		if s, ok := history.SerialOf(wire); ok {
			if s <= c.upTo {
				return
			}
			c.caught.Store(true)
		}
	}
	c.Conn.Send(wire)
}
