package redisx

import (
	"sync"
	"sync/atomic"
	"time"
)

// Health is what this node believes about one shard. Every node keeps its
// own view, driven by its own Monitor; all nodes see the same failures (a
// Redis server that stops answering stops answering everyone), so the views
// agree within about one probe interval. The states are ordered so that a
// node subscribes early and unsubscribes late: it subscribes a channel on
// every shard a publisher might pick during a change (Cover), while
// publishers move only on Down and back on Recovering (Pick).
type Health uint8

const (
	// Up: the shard answers; it serves its own channels.
	Up Health = iota
	// Suspect: a probe failed. Publishers still use the shard; subscribers
	// also subscribe its channels on the next shard, in case other nodes
	// already moved them.
	Suspect
	// Down: several probes in a row failed. Its channels are served by the
	// next live shard of each channel's rendezvous order.
	Down
	// Recovering: the shard answers again after being Down and serves its
	// channels again; for a grace period subscribers stay subscribed on the
	// next shard too, for nodes that have not noticed yet.
	Recovering
)

var healthNames = [...]string{"up", "suspect", "down", "recovering"}

func (h Health) String() string {
	if int(h) < len(healthNames) {
		return healthNames[h]
	}
	return "unknown"
}

// Change is one shard's health change, as Ring.Watch reports it.
type Change struct {
	Shard    int
	From, To Health
}

// Ring assigns keys to shards by rendezvous (highest random weight) hashing:
// each key goes to the shard whose hash with the key is highest, so adding a
// shard to n moves only the keys the new shard wins, about 1/(n+1) of them,
// and removing one moves only its own keys.
//
// It also holds this node's view of each shard's Health: a key whose shard
// is Down goes to the next-highest-scoring shard that is not, so a failed
// shard's keys spread over the others and come back when it returns, while
// every other key stays where it is.
type Ring struct {
	seeds []uint64
	st    atomic.Pointer[ringState]

	mu       sync.Mutex // serializes SetHealth and watcher calls
	watchers map[int]func(Change)
	nextW    int

	failovers, failbacks atomic.Uint64
}

// ringState is immutable once published.
type ringState struct {
	health []Health
	// upSince is when each shard last stopped being Down (zero: never was).
	upSince []time.Time
	down    int // shards that are Down
}

// NewRing returns a ring over shards identified by names (their URLs), all
// Up. The same names give the same assignment in every process.
func NewRing(names []string) *Ring {
	r := &Ring{seeds: make([]uint64, len(names))}
	for i, n := range names {
		r.seeds[i] = fnv64(n)
	}
	r.st.Store(&ringState{health: make([]Health, len(names)), upSince: make([]time.Time, len(names))})
	return r
}

// Len is the number of shards.
func (r *Ring) Len() int { return len(r.seeds) }

// Home returns the index of key's own shard, whatever its health.
func (r *Ring) Home(key string) int {
	if len(r.seeds) == 1 {
		return 0
	}
	k := fnv64(key)
	best, bestW := 0, uint64(0)
	for i, s := range r.seeds {
		if w := mix64(s ^ k); i == 0 || w > bestW {
			best, bestW = i, w
		}
	}
	return best
}

// Pick returns the index of the shard that serves key now: its home shard
// unless that is Down, else the highest-scoring shard that is not Down. With
// every shard Down it returns the home shard (whose operations then fail).
func (r *Ring) Pick(key string) int {
	if len(r.seeds) == 1 {
		return 0
	}
	st := r.st.Load()
	if st.down == 0 {
		return r.Home(key)
	}
	k := fnv64(key)
	best, bestW := -1, uint64(0)
	for i, s := range r.seeds {
		if st.health[i] == Down {
			continue
		}
		if w := mix64(s ^ k); best < 0 || w > bestW {
			best, bestW = i, w
		}
	}
	if best < 0 {
		return r.Home(key)
	}
	return best
}

// Order appends to buf every shard index in key's rendezvous order, highest
// score first (ties by index), and returns it.
func (r *Ring) Order(key string, buf []int) []int {
	n := len(r.seeds)
	var ws [16]uint64
	w := ws[:0]
	if n > len(ws) {
		w = make([]uint64, 0, n)
	}
	k := fnv64(key)
	base := len(buf)
	for i, s := range r.seeds {
		w = append(w, mix64(s^k))
		buf = append(buf, i)
	}
	// Insertion sort: n is small.
	out := buf[base:]
	for i := 1; i < len(out); i++ {
		for j := i; j > 0; j-- {
			a, b := out[j-1], out[j]
			if w[b] > w[a] || (w[b] == w[a] && b < a) {
				out[j-1], out[j] = b, a
				continue
			}
			break
		}
	}
	return buf
}

// Cover appends to buf the shards on which a subscriber must listen for key
// so that it hears a publisher whatever that publisher's view of the ring:
// key's rendezvous order up to and including the first shard that is Up
// (every shard when none is). The first is always the home shard; with
// every shard Up it is the only one.
func (r *Ring) Cover(key string, buf []int) []int {
	if len(r.seeds) == 1 {
		return append(buf, 0)
	}
	st := r.st.Load()
	base := len(buf)
	buf = r.Order(key, buf)
	for i, sh := range buf[base:] {
		if st.health[sh] == Up {
			return buf[:base+i+1]
		}
	}
	return buf
}

// Health returns this node's view of shard i.
func (r *Ring) Health(i int) Health { return r.st.Load().health[i] }

// UpSince returns when shard i last stopped being Down, and false when it is
// Down or was never Down.
func (r *Ring) UpSince(i int) (time.Time, bool) {
	st := r.st.Load()
	if st.health[i] == Down || st.upSince[i].IsZero() {
		return time.Time{}, false
	}
	return st.upSince[i], true
}

// Degraded reports whether any shard is not Up.
func (r *Ring) Degraded() bool {
	for _, h := range r.st.Load().health {
		if h != Up {
			return true
		}
	}
	return false
}

// SetHealth changes shard i's health and tells the watchers; it reports
// whether anything changed. Monitor calls it; tests may too.
func (r *Ring) SetHealth(i int, h Health) bool {
	return r.setHealthIf(i, 255, h)
}

// setHealthIf sets shard i to h if it is in state from (255: any state).
func (r *Ring) setHealthIf(i int, from, h Health) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	old := r.st.Load()
	if from != 255 && old.health[i] != from {
		return false
	}
	from = old.health[i]
	if from == h {
		return false
	}
	st := &ringState{
		health:  append([]Health(nil), old.health...),
		upSince: append([]time.Time(nil), old.upSince...),
		down:    old.down,
	}
	st.health[i] = h
	switch {
	case h == Down:
		st.down++
		r.failovers.Add(1)
	case from == Down:
		st.down--
		st.upSince[i] = time.Now()
		r.failbacks.Add(1)
	}
	r.st.Store(st)
	for _, w := range r.watchers {
		w(Change{Shard: i, From: from, To: h})
	}
	return true
}

// MarkSuspect makes shard i Suspect if it is Up or Recovering, on evidence
// other than a probe (a subscriber connection that just dropped): the
// subscribers cover its fallback at once, while publishers wait for the
// Monitor to decide. The Monitor's next successful probe clears it.
func (r *Ring) MarkSuspect(i int) bool {
	r.mu.Lock()
	h := r.st.Load().health[i]
	r.mu.Unlock()
	if h != Up && h != Recovering {
		return false
	}
	return r.setHealthIf(i, h, Suspect)
}

// Watch calls f after every health change, one call at a time, in order. f
// must not block (signal a goroutine) nor call SetHealth. The returned
// function stops the calls.
func (r *Ring) Watch(f func(Change)) (stop func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.watchers == nil {
		r.watchers = make(map[int]func(Change))
	}
	id := r.nextW
	r.nextW++
	r.watchers[id] = f
	return func() {
		r.mu.Lock()
		delete(r.watchers, id)
		r.mu.Unlock()
	}
}

// Failovers is how many times a shard became Down; Failbacks how many times
// one came back from Down.
func (r *Ring) Failovers() uint64 { return r.failovers.Load() }

// Failbacks: see Failovers.
func (r *Ring) Failbacks() uint64 { return r.failbacks.Load() }

func fnv64(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return h
}

// mix64 is the splitmix64 finalizer: it spreads FNV's output over all bits.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}
