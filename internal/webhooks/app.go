package webhooks

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/heraldrt/herald/internal/apps"
)

// app is one app's part of the pipeline: the hold list and the targets.
//
// Lock order: app.mu only; it is never held across I/O or a blocking send.
type app struct {
	d        *Dispatcher
	id       string
	key      string
	secret   string
	batching time.Duration
	targets  []*target
	// interest tells which event types any target takes (the paired types
	// count for each other); immutable after newApp.
	interest map[string]bool
	wake     chan struct{} // cap 1: the hold list became non-empty

	mu          sync.Mutex
	closed      bool
	held        map[heldKey]*held // the events waiting out Delay
	order       []*held           // held events (and cancelled ones) by due time
	dead        int               // cancelled entries still in order
	cancelled   uint64            // see Stats.Cancelled
	heldDropped uint64            // hold list full

	heldDropLoggedAt atomic.Int64 // unix ns of the last "hold list full" warning
}

// heldKey names a held event: the channel for channel_vacated, the channel
// and user for member_removed.
type heldKey struct {
	name, channel, userID string
}

type held struct {
	key       heldKey
	ev        *event
	due       time.Time
	cancelled bool
}

// observe runs one Observer call for a: cancel, hold, or queue.
func (a *app) observe(ev *event) {
	var drops []*target
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		return
	}
	switch ev.name {
	case apps.WebhookChannelOccupied:
		if a.cancel(heldKey{apps.WebhookChannelVacated, ev.channel, ""}) {
			a.mu.Unlock()
			return
		}
	case apps.WebhookMemberAdded:
		if a.cancel(heldKey{apps.WebhookMemberRemoved, ev.channel, ev.userID}) {
			a.mu.Unlock()
			return
		}
	case apps.WebhookChannelVacated, apps.WebhookMemberRemoved:
		if a.d.cfg.Delay > 0 {
			full := !a.hold(ev)
			a.mu.Unlock()
			if full && a.noteHeldDrop() {
				a.d.log.Warn("webhook hold list full: dropping new vacated/removed events", "app", a.id,
					"limit", a.d.cfg.QueueSize)
			}
			return
		}
	}
	ev.at = time.Now()
	drops = a.enqueueLocked(ev, drops)
	a.mu.Unlock()
	a.logDrops(drops)
}

// cancel drops the held event k, if any, and reports whether it did.
// a.mu must be held.
func (a *app) cancel(k heldKey) bool {
	h := a.held[k]
	if h == nil {
		return false
	}
	delete(a.held, k)
	h.cancelled = true
	a.cancelled++
	a.dead++
	if a.dead > 64 && a.dead > len(a.order)/2 {
		live := a.order[:0]
		for _, o := range a.order {
			if !o.cancelled {
				live = append(live, o)
			}
		}
		clear(a.order[len(live):])
		a.order = live
		a.dead = 0
	}
	return true
}

// hold keeps ev for Delay; false means the hold list was full and ev was
// dropped (counted). a.mu must be held.
func (a *app) hold(ev *event) bool {
	k := heldKey{ev.name, ev.channel, ev.userID}
	if ev.name == apps.WebhookChannelVacated {
		k.userID = ""
	}
	if a.held[k] != nil {
		return true // the state layer reports each transition once; a repeat adds nothing
	}
	if len(a.order) >= a.d.cfg.QueueSize {
		a.heldDropped++
		return false
	}
	h := &held{key: k, ev: ev, due: time.Now().Add(a.d.cfg.Delay)}
	a.held[k] = h
	a.order = append(a.order, h)
	if len(a.order) == 1 {
		select {
		case a.wake <- struct{}{}:
		default:
		}
	}
	return true
}

// noteHeldDrop reports whether a warning about a full hold list is due
// (at most one per dropLogEvery).
func (a *app) noteHeldDrop() bool {
	now := time.Now().UnixNano()
	last := a.heldDropLoggedAt.Load()
	return now-last >= int64(dropLogEvery) && a.heldDropLoggedAt.CompareAndSwap(last, now)
}

// release queues the held events that are due at now, in order, and returns
// how long until the next one is due (0 when none is held). With
// Config.StillTrue, due events are re-checked (without the lock) first.
func (a *app) release(now time.Time) time.Duration {
	var drops []*target
	a.mu.Lock()
	i := 0
	var due []*held
	for ; i < len(a.order) && !a.order[i].due.After(now); i++ {
		h := a.order[i]
		if h.cancelled {
			a.dead--
			continue
		}
		delete(a.held, h.key)
		due = append(due, h)
	}
	clear(a.order[:i])
	a.order = a.order[i:]
	if check := a.d.cfg.StillTrue; check != nil && len(due) > 0 {
		a.mu.Unlock()
		keep := due[:0]
		for _, h := range due {
			if check(a.id, h.key.channel, h.key.userID) {
				keep = append(keep, h)
			}
		}
		a.mu.Lock()
		a.cancelled += uint64(len(due) - len(keep))
		due = keep
	}
	for _, h := range due {
		h.ev.at = now
		drops = a.enqueueLocked(h.ev, drops)
	}
	var next time.Duration
	if len(a.order) > 0 {
		next = max(a.order[0].due.Sub(now), time.Millisecond)
	}
	a.mu.Unlock()
	a.logDrops(drops)
	return next
}

// clock releases held events when they are due; it exits when the
// Dispatcher stops (Close flushes what is still held).
func (a *app) clock() {
	defer a.d.wg.Done()
	t := time.NewTimer(time.Hour)
	t.Stop()
	defer t.Stop()
	for {
		select {
		case <-a.wake:
		case <-t.C:
		case <-a.d.stopping:
			return
		}
		if next := a.release(time.Now()); next > 0 {
			t.Reset(next)
		}
	}
}

// flush ends a: no more Observer calls, and every held event is queued now.
func (a *app) flush() {
	var drops []*target
	a.mu.Lock()
	now := time.Now()
	for _, h := range a.order {
		if !h.cancelled {
			h.ev.at = now
			drops = a.enqueueLocked(h.ev, drops)
		}
	}
	a.order, a.held, a.dead = nil, map[heldKey]*held{}, 0
	a.closed = true
	a.mu.Unlock()
	a.logDrops(drops)
}

// enqueueLocked puts ev on the queue of every target that takes its type,
// without waiting; targets whose queue was full, and whose drop is due to be
// logged, are appended to drops. a.mu must be held, so that the queues keep
// the order of the Observer calls.
func (a *app) enqueueLocked(ev *event, drops []*target) []*target {
	for _, t := range a.targets {
		if !t.types[ev.name] {
			continue
		}
		select {
		case t.queue <- ev:
		default:
			if t.noteDrop() {
				drops = append(drops, t)
			}
		}
	}
	return drops
}

// logDrops logs the targets whose queue overflowed (rate-limited by noteDrop).
func (a *app) logDrops(drops []*target) {
	for _, t := range drops {
		a.d.log.Warn("webhook queue full: dropping new events", "app", a.id, "url", t.shown,
			"queue_size", a.d.cfg.QueueSize, "dropped_total", t.dropped.Load())
	}
}
