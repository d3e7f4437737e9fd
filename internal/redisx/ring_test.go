package redisx

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/heraldrt/herald/internal/redistest"
)

func ringKeys(n int) []string {
	keys := make([]string, n)
	for i := range keys {
		keys[i] = ShardKey("app", fmt.Sprintf("channel-%d", i))
	}
	return keys
}

// A Down shard's keys go to their next-highest-scoring live shard, spread
// over all the others; no other key moves; when it comes back every key is
// where it was.
func TestRingDownShardMovesOnlyItsKeys(t *testing.T) {
	r := NewRing([]string{"redis://a:1", "redis://b:1", "redis://c:1", "redis://d:1"})
	keys := ringKeys(20000)
	home := make([]int, len(keys))
	for i, k := range keys {
		home[i] = r.Pick(k)
		if h := r.Home(k); h != home[i] {
			t.Fatalf("Pick %d != Home %d with every shard up", home[i], h)
		}
	}
	if !r.SetHealth(2, Down) {
		t.Fatal("SetHealth reported no change")
	}
	if r.SetHealth(2, Down) {
		t.Fatal("SetHealth reported a change twice")
	}
	gained := make([]int, 4)
	for i, k := range keys {
		got := r.Pick(k)
		order := r.Order(k, nil)
		if order[0] != home[i] {
			t.Fatalf("Order[0] = %d, home %d", order[0], home[i])
		}
		switch {
		case home[i] != 2 && got != home[i]:
			t.Fatalf("key of live shard %d moved to %d", home[i], got)
		case home[i] == 2 && got == 2:
			t.Fatal("key still on the down shard")
		case home[i] == 2:
			// The next-highest-scoring shard.
			if order[1] != got {
				t.Fatalf("moved to %d, want the next in order %v", got, order)
			}
			gained[got]++
		}
		if c := r.Cover(k, nil); home[i] == 2 && !slices.Equal(c, order[:2]) || home[i] != 2 && !slices.Equal(c, order[:1]) {
			t.Fatalf("Cover = %v, order %v, home %d", c, order, home[i])
		}
	}
	for i, g := range gained {
		if i != 2 && g < 1000 {
			t.Fatalf("shard %d took only %d of the down shard's keys: %v", i, g, gained)
		}
	}
	r.SetHealth(2, Recovering)
	for i, k := range keys {
		if got := r.Pick(k); got != home[i] {
			t.Fatalf("key not back home while Recovering: %d, want %d", got, home[i])
		}
		// Recovering: subscribers still cover the fallback.
		if c := r.Cover(k, nil); home[i] == 2 && len(c) != 2 {
			t.Fatalf("Cover while Recovering = %v", c)
		}
	}
	r.SetHealth(2, Up)
	if r.Degraded() {
		t.Fatal("Degraded with every shard up")
	}
	if f, b := r.Failovers(), r.Failbacks(); f != 1 || b != 1 {
		t.Fatalf("failovers %d, failbacks %d", f, b)
	}
}

// Two shards down: their keys go to the first live shard in order; every
// shard down: Pick falls back to home and Cover to every shard.
func TestRingSeveralDown(t *testing.T) {
	r := NewRing([]string{"redis://a:1", "redis://b:1", "redis://c:1"})
	r.SetHealth(0, Down)
	r.SetHealth(1, Suspect)
	for _, k := range ringKeys(3000) {
		order := r.Order(k, nil)
		want := order[0]
		if want == 0 {
			want = order[1]
		}
		if got := r.Pick(k); got != want {
			t.Fatalf("Pick = %d, order %v", got, order)
		}
		c := r.Cover(k, nil)
		// Up to and including the first Up shard (2).
		if c[len(c)-1] != 2 || !slices.Equal(c, order[:len(c)]) {
			t.Fatalf("Cover = %v, order %v", c, order)
		}
	}
	r.SetHealth(1, Down)
	r.SetHealth(2, Down)
	for _, k := range ringKeys(100) {
		if r.Pick(k) != r.Home(k) {
			t.Fatal("every shard down: Pick is not home")
		}
		if c := r.Cover(k, nil); len(c) != 3 {
			t.Fatalf("every shard down: Cover = %v", c)
		}
	}
	// One shard: always 0.
	one := NewRing([]string{"redis://a:1"})
	one.SetHealth(0, Down)
	if one.Pick("x") != 0 || !slices.Equal(one.Cover("x", nil), []int{0}) {
		t.Fatal("single shard")
	}
}

func TestRingOrderAndWatch(t *testing.T) {
	names := []string{"redis://a:1", "redis://b:1", "redis://c:1", "redis://d:1", "redis://e:1"}
	r := NewRing(names)
	for _, k := range ringKeys(500) {
		o := r.Order(k, []int{99})
		if o[0] != 99 || len(o) != 6 {
			t.Fatalf("Order did not append: %v", o)
		}
		o = o[1:]
		seen := map[int]bool{}
		for j, s := range o {
			seen[s] = true
			if j > 0 && mix64(r.seeds[o[j-1]]^fnv64(k)) < mix64(r.seeds[s]^fnv64(k)) {
				t.Fatalf("order not by descending weight: %v", o)
			}
		}
		if len(seen) != 5 {
			t.Fatalf("order misses shards: %v", o)
		}
	}
	var got []Change
	stop := r.Watch(func(c Change) { got = append(got, c) })
	r.SetHealth(1, Suspect)
	r.SetHealth(1, Down)
	stop()
	r.SetHealth(1, Up)
	want := []Change{{1, Up, Suspect}, {1, Suspect, Down}}
	if !slices.Equal(got, want) {
		t.Fatalf("changes = %v", got)
	}
	if _, ok := r.UpSince(1); !ok {
		t.Fatal("UpSince unknown after coming back")
	}
	if _, ok := r.UpSince(0); ok {
		t.Fatal("UpSince known for a shard that was never down")
	}
	if Health(9).String() != "unknown" || Down.String() != "down" {
		t.Fatal("Health.String")
	}
}

// fakeProbe answers per shard as the test says.
type fakeProbe struct {
	mu   sync.Mutex
	fail map[int]bool
	n    atomic.Int64
}

func (f *fakeProbe) probe(_ context.Context, i int) error {
	f.n.Add(1)
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail[i] {
		return errors.New("refused")
	}
	return nil
}

func (f *fakeProbe) set(i int, fail bool) {
	f.mu.Lock()
	f.fail[i] = fail
	f.mu.Unlock()
}

// The monitor walks a shard through Suspect → Down on failures and Recovering
// → Up when it answers again, with the configured thresholds and grace.
func TestMonitorStates(t *testing.T) {
	names := []string{"redis://a:1", "redis://b:1"}
	be := &Backend{Names: names, URLs: names, Ring: NewRing(names), Clients: make([]rueidis.Client, 2)}
	fp := &fakeProbe{fail: map[int]bool{}}
	var mu sync.Mutex
	var changes []Change
	be.Ring.Watch(func(c Change) {
		mu.Lock()
		changes = append(changes, c)
		mu.Unlock()
	})
	m := be.StartMonitor(MonitorOptions{Interval: 10 * time.Millisecond, DownAfter: 3, UpAfter: 2,
		Grace: 100 * time.Millisecond, Probe: fp.probe})
	defer m.Stop()
	waitHealth := func(i int, h Health) {
		t.Helper()
		deadline := time.Now().Add(3 * time.Second)
		for be.Ring.Health(i) != h {
			if time.Now().After(deadline) {
				t.Fatalf("shard %d is %v, want %v", i, be.Ring.Health(i), h)
			}
			time.Sleep(2 * time.Millisecond)
		}
	}
	fp.set(1, true)
	waitHealth(1, Down)
	fp.set(1, false)
	waitHealth(1, Up)
	if be.Ring.Health(0) != Up {
		t.Fatal("healthy shard changed")
	}
	mu.Lock()
	got := append([]Change(nil), changes...)
	mu.Unlock()
	want := []Change{{1, Up, Suspect}, {1, Suspect, Down}, {1, Down, Recovering}, {1, Recovering, Up}}
	if !slices.Equal(got, want) {
		t.Fatalf("changes = %v, want %v", got, want)
	}
	m.Stop()

	// Failures below DownAfter only make it Suspect, and a success clears it.
	mu.Lock()
	changes = nil
	mu.Unlock()
	m2 := be.StartMonitor(MonitorOptions{Interval: 10 * time.Millisecond, DownAfter: 1 << 30, Probe: fp.probe})
	defer m2.Stop()
	fp.set(0, true)
	waitHealth(0, Suspect)
	fp.set(0, false)
	waitHealth(0, Up)
	m2.Stop()
	mu.Lock()
	defer mu.Unlock()
	if want := []Change{{0, Up, Suspect}, {0, Suspect, Up}}; !slices.Equal(changes, want) {
		t.Fatalf("changes = %v, want %v", changes, want)
	}
}

// The default probe against real Redis: a killed server is Down within a
// second and back (Recovering) soon after it restarts.
func TestMonitorRealShard(t *testing.T) {
	s := redistest.Start(t)
	be, err := Dial([]string{s.URL()}, "", Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer be.Close()
	m := be.StartMonitor(MonitorOptions{Interval: 100 * time.Millisecond, Grace: time.Hour})
	defer m.Stop()
	wait := func(h Health, within time.Duration) time.Duration {
		t.Helper()
		start := time.Now()
		for be.Ring.Health(0) != h {
			if time.Since(start) > within {
				t.Fatalf("shard is %v after %v, want %v", be.Ring.Health(0), within, h)
			}
			time.Sleep(5 * time.Millisecond)
		}
		return time.Since(start)
	}
	s.Kill()
	t.Logf("down %v after SIGKILL", wait(Down, 2*time.Second))
	s.Restart()
	t.Logf("recovering %v after restart", wait(Recovering, 2*time.Second))
}
