//go:build chaos || soak

package chaos

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// churnConfig: the fleet's config for churn and soak: no API rate limit, a
// short node timeout, history on the hist-* channels.
const churnConfig = `node_timeout: 5
apps:
  - id: app-id
    key: app-key
    secret: app-secret
    api_requests_per_second: -1
    history:
      - channels: ["hist-*"]
        max_events: 1000
        max_age: 10m
`

// subRec is one subscription of one connection: from subscription_succeeded
// to the moment the client decided to leave, and the event ids it received.
type subRec struct {
	ch    int32 // index into the test's channel names
	subAt int64 // unix nanos when subscription_succeeded was read
	endAt int64 // unix nanos when the client started disconnecting (or was cut)
	ids   []uint64
}

// pubEvent is one event as the publisher saw it.
type pubEvent struct {
	id         uint64
	start, end int64 // request start and answer, unix nanos
	ok         bool
}

// channelLog collects, per channel index, the events published to it.
type channelLog struct {
	mu     sync.Mutex
	events [][]pubEvent
}

func newChannelLog(n int) *channelLog { return &channelLog{events: make([][]pubEvent, n)} }

func (l *channelLog) add(chs []int, e pubEvent) {
	l.mu.Lock()
	for _, c := range chs {
		l.events[c] = append(l.events[c], e)
	}
	l.mu.Unlock()
}

// prune forgets the events that started before cutoff on the channels
// keep does not protect.
func (l *channelLog) prune(cutoff int64, keep func(ch int) bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for c, evs := range l.events {
		if keep(c) {
			continue
		}
		out := evs[:0]
		for _, e := range evs {
			if e.start >= cutoff {
				out = append(out, e)
			}
		}
		l.events[c] = out
	}
}

// deliveryStats compares what each subscription received with what it had
// to receive: every event published successfully after the subscription
// succeeded (request started after) and before the client started leaving
// (answer received before).
type deliveryStats struct {
	expected, delivered, missing, duplicates int64
	missed                                   []string // the first few, for diagnosis
}

func (st *deliveryStats) add(o deliveryStats) {
	st.expected += o.expected
	st.delivered += o.delivered
	st.missing += o.missing
	st.duplicates += o.duplicates
	for _, m := range o.missed {
		if len(st.missed) < 10 {
			st.missed = append(st.missed, m)
		}
	}
}

// checkDeliveries checks every subscription against the log.
func checkDeliveries(names []string, log *channelLog, subs []*subRec) deliveryStats {
	var st deliveryStats
	for _, s := range subs {
		checkSub(&st, names, log.events[s.ch], s)
	}
	return st
}

// checkSub checks one subscription against its channel's events (in any
// order).
func checkSub(st *deliveryStats, names []string, evs []pubEvent, s *subRec) {
	ids := s.ids
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	got := make(map[uint64]bool, len(ids))
	for i, id := range ids {
		if i > 0 && ids[i-1] == id {
			st.duplicates++
			continue
		}
		got[id] = true
	}
	for _, e := range evs {
		if e.start <= s.subAt || e.start > s.endAt || !e.ok || e.end >= s.endAt {
			continue
		}
		st.expected++
		if got[e.id] {
			st.delivered++
			continue
		}
		st.missing++
		if len(st.missed) < 10 {
			st.missed = append(st.missed, fmt.Sprintf("event %d on %s: published %s–%s, subscription %s–%s",
				e.id, names[s.ch], fmtNanos(e.start), fmtNanos(e.end), fmtNanos(s.subAt), fmtNanos(s.endAt)))
		}
	}
}

func fmtNanos(n int64) string { return time.Unix(0, n).UTC().Format("15:04:05.000000") }

// histUser is a connection slot on a history channel: across its
// reconnections it resumes from the last serial it received, so it must see
// every event published on the channel from its first subscription to its
// last leave, exactly once.
type histUser struct {
	ch          int32
	first, last int64 // first subscription succeeded; last session's end
	serial      uint64
	session     int // sessions that subscribed
	ids         []uint64
	trace       []string // the last events (session:id:serial), for diagnosing duplicates
	failures    []string // herald:recovery_failed data
	noSerial    int      // events without a serial
}

func (h *histUser) note(s string) {
	if len(h.trace) >= 64 {
		h.trace = h.trace[1:]
	}
	h.trace = append(h.trace, s)
}

func (h *histUser) receive(m *msg) {
	switch m.Event {
	case "herald:recovery_failed":
		h.failures = append(h.failures, string(m.Data))
	case "e":
		id, _, ok := parseEventData(m.Data)
		if !ok {
			return
		}
		h.ids = append(h.ids, id)
		h.note(fmt.Sprintf("s%d:%d:%d", h.session, id, m.Serial))
		if m.Serial == 0 {
			h.noSerial++
		} else if m.Serial > h.serial {
			h.serial = m.Serial
		}
	}
}

// historyStats is what the history users received against what they had to.
type historyStats struct {
	users, expected, delivered, dups, failedRecoveries, noSerial int64
	missed                                                       []string
}

// checkHistory checks every history user against the log.
func checkHistory(names []string, log *channelLog, users []*histUser) historyStats {
	var st historyStats
	for _, h := range users {
		st.users++
		st.failedRecoveries += int64(len(h.failures))
		for _, f := range h.failures {
			if len(st.missed) < 10 {
				st.missed = append(st.missed, "recovery failed: "+f)
			}
		}
		st.noSerial += int64(h.noSerial)
		got := make(map[uint64]int, len(h.ids))
		for _, id := range h.ids {
			got[id]++
			if got[id] == 2 {
				st.dups++
				if len(st.missed) < 10 {
					st.missed = append(st.missed, fmt.Sprintf("duplicate %d on %s; last events %v", id, names[h.ch], h.trace))
				}
			}
		}
		for _, e := range log.events[h.ch] {
			if !e.ok || e.start <= h.first || e.end >= h.last {
				continue
			}
			st.expected++
			if got[e.id] > 0 {
				st.delivered++
			} else if len(st.missed) < 10 {
				st.missed = append(st.missed, fmt.Sprintf("event %d on %s: published %s–%s, user %s–%s",
					e.id, names[h.ch], fmtNanos(e.start), fmtNanos(e.end), fmtNanos(h.first), fmtNanos(h.last)))
			}
		}
	}
	return st
}

// churnOpts shape a churn load.
type churnOpts struct {
	slots         int // connection slots (concurrent connections)
	dense         int // channels every slot's connection joins one of (hundreds of subscribers each)
	sparse        int // channels with a few subscribers each (nodes subscribe and release them)
	sparsePer     int // channels per sparse event (one API call)
	histN         int // history channels
	histEvery     int // every histEvery-th slot is a history user (0: none)
	presenceEvery int // every presenceEvery-th slot joins a presence room (0: none)
	rooms         int // presence rooms
	ticks         int // per second: one dense, one sparse and one history event each
	ramp          time.Duration
	minLife       time.Duration
	maxLife       time.Duration
}

// churnRun is a churn load on a fleet: slots that connect, subscribe, live a
// random time, leave (after a fence, see slot) and connect again, and a
// publisher on the api node.
type churnRun struct {
	o     churnOpts
	f     *fleet
	names []string
	index map[string]int32
	log   *channelLog
	pub   *publisher

	pubEnd, clientEnd time.Time

	sessions, dialErrs, subErrs, cut, fenceTimeouts, recoveries atomic.Int64
	pubCount, pubFail                                           atomic.Int64

	mu         sync.Mutex
	errSamples []string
	histUsers  []*histUser
	onSubs     func([]*subRec) // finished subscriptions (from the slot's goroutine)

	pwg, cwg sync.WaitGroup
}

func newChurnRun(f *fleet, o churnOpts, onSubs func([]*subRec)) *churnRun {
	r := &churnRun{o: o, f: f, index: map[string]int32{}, onSubs: onSubs, pub: newPublisher(f.api.Addr)}
	for i := 0; i < o.dense; i++ {
		r.names = append(r.names, "churn-d"+strconv.Itoa(i))
	}
	for i := 0; i < o.sparse; i++ {
		r.names = append(r.names, "churn-s"+strconv.Itoa(i))
	}
	for i := 0; i < o.histN; i++ {
		r.names = append(r.names, "hist-"+strconv.Itoa(i))
	}
	for i, n := range r.names {
		r.index[n] = int32(i)
	}
	r.log = newChannelLog(len(r.names))
	return r
}

func (r *churnRun) isHist(ch int) bool { return ch >= r.o.dense+r.o.sparse }

func (r *churnRun) sample(s string) {
	r.mu.Lock()
	if len(r.errSamples) < 10 {
		r.errSamples = append(r.errSamples, s)
	}
	r.mu.Unlock()
}

// start publishes until pubEnd and runs the slots until clientEnd (pubEnd
// + 3 s, so the last events arrive).
func (r *churnRun) start(pubEnd time.Time) {
	r.pubEnd, r.clientEnd = pubEnd, pubEnd.Add(3*time.Second)
	o := r.o
	jobs := make(chan int, 1000)
	for w := 0; w < 8; w++ {
		r.pwg.Add(1)
		go func() {
			defer r.pwg.Done()
			for k := range jobs {
				var chs []int
				switch k % 3 {
				case 0:
					chs = []int{(k / 3) % o.dense}
				case 1:
					first := ((k / 3) * o.sparsePer) % o.sparse
					for j := 0; j < o.sparsePer; j++ {
						chs = append(chs, o.dense+(first+j)%o.sparse)
					}
				case 2:
					if o.histN == 0 {
						continue
					}
					chs = []int{o.dense + o.sparse + (k/3)%o.histN}
				}
				chNames := make([]string, len(chs))
				for i, c := range chs {
					chNames[i] = r.names[c]
				}
				start := time.Now()
				id := uint64(k)
				body, _ := json.Marshal(map[string]any{"name": "e", "channels": chNames, "data": eventData(id, start, 0)})
				code, err := r.pub.do("POST", "/events", nil, body)
				e := pubEvent{id: id, start: start.UnixNano(), end: time.Now().UnixNano(), ok: err == nil && code == 200}
				r.pubCount.Add(1)
				if !e.ok {
					if r.pubFail.Add(1) <= 3 {
						r.sample(fmt.Sprintf("publish: HTTP %d %v", code, err))
					}
				}
				r.log.add(chs, e)
			}
		}()
	}
	r.pwg.Add(1)
	go func() {
		defer r.pwg.Done()
		tk := time.NewTicker(time.Second / time.Duration(3*o.ticks))
		defer tk.Stop()
		k := 0
		for now := range tk.C {
			if now.After(pubEnd) {
				close(jobs)
				return
			}
			jobs <- k
			k++
		}
	}()
	for slot := 0; slot < o.slots; slot++ {
		r.cwg.Add(1)
		go func() {
			defer r.cwg.Done()
			r.slot(slot)
		}()
	}
}

// wait waits for the publisher and the slots; false after d (a hang).
func (r *churnRun) wait(d time.Duration) bool {
	done := make(chan struct{})
	go func() { r.cwg.Wait(); r.pwg.Wait(); close(done) }()
	select {
	case <-done:
		r.pub.close()
		return true
	case <-time.After(d):
		return false
	}
}

// concurrent returns the connections the edges hold.
func (r *churnRun) concurrent() (float64, error) {
	total := 0.0
	for _, e := range r.f.edges {
		m, err := e.Metrics()
		if err != nil {
			return 0, fmt.Errorf("%s metrics: %w", e.Name, err)
		}
		total += m[`herald_connections{app="app-id"}`]
	}
	return total, nil
}

// slot is one connection slot's life: connect to a random edge, subscribe
// to a dense and a sparse channel (and, for history users, its history
// channel with the last serial seen; for presence members, a room), live
// minLife–maxLife, then leave: it notes when it decided to leave, reads on
// until an event published after that moment arrived on each of its
// channels (events of a channel arrive in publish order, so that is a
// fence: everything published before arrived or was lost), and closes.
func (r *churnRun) slot(slot int) {
	o := r.o
	rng := rand.New(rand.NewPCG(uint64(slot), 7))
	time.Sleep(time.Duration(rng.Int64N(int64(o.ramp))))
	var h *histUser
	if o.histEvery > 0 && o.histN > 0 && slot%o.histEvery == 0 {
		h = &histUser{ch: int32(o.dense + o.sparse + rng.IntN(o.histN))}
	}
	room, user := "", ""
	if o.presenceEvery > 0 && o.rooms > 0 && slot%o.presenceEvery == 1 {
		room, user = "presence-churn-"+strconv.Itoa(rng.IntN(o.rooms)), "s"+strconv.Itoa(slot)
	}
	defer func() {
		if h != nil && h.first != 0 {
			r.mu.Lock()
			r.histUsers = append(r.histUsers, h)
			r.mu.Unlock()
		}
	}()
	for time.Now().Before(r.clientEnd) {
		edge := r.f.edges[rng.IntN(len(r.f.edges))]
		c, err := dialWS(context.Background(), edge.Addr, 0)
		if err != nil {
			if r.dialErrs.Add(1) <= 3 {
				r.sample(fmt.Sprintf("dial %s: %v", edge.Name, err))
			}
			time.Sleep(time.Duration(100+rng.IntN(200)) * time.Millisecond)
			continue
		}
		r.sessions.Add(1)
		chs := []int32{int32(rng.IntN(o.dense)), int32(o.dense + rng.IntN(o.sparse))}
		var subs []*subRec
		histOn := false
		onMsg := func(m *msg) {
			ci, ok := r.index[m.Channel]
			if !ok {
				return
			}
			if h != nil && histOn && ci == h.ch {
				h.receive(m)
				return
			}
			if m.Event != "e" {
				return
			}
			id, _, ok := parseEventData(m.Data)
			if !ok {
				return
			}
			for _, s := range subs {
				if s.ch == ci {
					s.ids = append(s.ids, id)
				}
			}
		}
		failed := false
		subFailed := func(what string, err error) {
			failed = true
			if r.subErrs.Add(1) <= 5 {
				r.sample(fmt.Sprintf("subscribe %s on %s: %v", what, edge.Name, err))
			}
		}
		for _, ch := range chs {
			if err := c.subscribeWait(r.names[ch], "", time.Now().Add(5*time.Second), onMsg); err != nil {
				subFailed(r.names[ch], err)
				break
			}
			subs = append(subs, &subRec{ch: ch, subAt: time.Now().UnixNano()})
		}
		if room != "" && !failed {
			if err := c.subscribeWait(room, user, time.Now().Add(5*time.Second), onMsg); err != nil {
				subFailed(room, err)
			}
		}
		if h != nil && !failed {
			// A history user resumes from the last serial it saw.
			var extra map[string]any
			if h.serial > 0 {
				extra = map[string]any{"last_serial": h.serial}
				r.recoveries.Add(1)
			}
			histOn = true
			h.session++
			h.note(fmt.Sprintf("subscribe s%d last_serial=%d", h.session, h.serial))
			if err := c.subscribeWaitData(r.names[h.ch], "", extra, time.Now().Add(5*time.Second), onMsg); err != nil {
				subFailed(fmt.Sprintf("%s (history, last_serial %d)", r.names[h.ch], h.serial), err)
			} else if h.first == 0 {
				h.first = time.Now().UnixNano()
			}
		}
		leaveAt := time.Now().Add(o.minLife + time.Duration(rng.Int64N(int64(o.maxLife-o.minLife))))
		final := !leaveAt.Before(r.pubEnd) // the last session: stays until publishing is over
		if final {
			leaveAt = r.clientEnd
		}
		var endAt int64
		for !failed {
			m, err := c.next(leaveAt)
			if err != nil {
				if isTimeout(err) {
					break
				}
				// Dropped by the server: a failure; what it received so
				// far still counts.
				endAt = time.Now().UnixNano()
				if r.cut.Add(1) <= 5 {
					r.sample(fmt.Sprintf("connection on %s dropped: %v", edge.Name, err))
				}
				failed = true
				break
			}
			onMsg(&m)
		}
		switch {
		case endAt != 0:
		case final:
			endAt = r.pubEnd.UnixNano() // every event; the last had 3 s to arrive
		default:
			endAt = time.Now().UnixNano()
		}
		for _, s := range subs {
			s.endAt = endAt
		}
		if h != nil && h.first != 0 {
			h.last = endAt
		}
		if failed {
			c.Close()
			if r.onSubs != nil {
				r.onSubs(subs)
			}
			continue
		}
		if !final {
			fence := make(map[int32]bool, len(subs))
			until := time.Now().Add(5 * time.Second)
			for len(fence) < len(subs) {
				m, err := c.next(until)
				if err != nil {
					if !isTimeout(err) {
						r.cut.Add(1)
					}
					r.fenceTimeouts.Add(1)
					break
				}
				onMsg(&m)
				if m.Event != "e" {
					continue
				}
				ci := r.index[m.Channel]
				for _, s := range subs {
					if s.ch == ci {
						if _, sent, ok := parseEventData(m.Data); ok && sent > endAt {
							fence[ci] = true
						}
					}
				}
			}
		}
		if r.onSubs != nil {
			r.onSubs(subs)
		}
		c.closeGracefully(2 * time.Second)
	}
}
