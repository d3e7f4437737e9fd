package redisstate

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heraldrt/herald/internal/redistest"
	"github.com/heraldrt/herald/internal/redisx"
	"github.com/heraldrt/herald/internal/state"
)

var ctx = context.Background()

type env struct {
	servers []*redistest.Server
	b       *redisx.Backend
}

func shards(t *testing.T, n int) *env {
	t.Helper()
	e := &env{}
	var urls []string
	for i := 0; i < n; i++ {
		s := redistest.Start(t)
		e.servers = append(e.servers, s)
		urls = append(urls, s.URL())
	}
	b, err := redisx.Dial(urls, "", redisx.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	e.b = b
	return e
}

func cluster(t *testing.T) *env {
	t.Helper()
	c := redistest.StartCluster(t, 3)
	b, err := redisx.Dial(nil, c.Seed(), redisx.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	return &env{servers: c.Nodes, b: b}
}

func node(t *testing.T, b *redisx.Backend, id string, o Options) *State {
	t.Helper()
	s, err := New(b, id, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.halt() })
	return s
}

// recorder collects transitions from several nodes' callbacks.
type recorder struct {
	mu  sync.Mutex
	got []Transition
}

func (r *recorder) add(t Transition) {
	r.mu.Lock()
	r.got = append(r.got, t)
	r.mu.Unlock()
}

func (r *recorder) list() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]string, len(r.got))
	for i, t := range r.got {
		out[i] = tstring(t)
	}
	sort.Strings(out)
	return out
}

func tstring(t Transition) string {
	s := t.Kind.String() + " " + t.App + "/" + t.Channel
	if t.UserID != "" {
		s += " user=" + t.UserID
	}
	if t.Kind == CountChanged {
		s += fmt.Sprint(" count=", t.Count)
	}
	return s + " node=" + t.Node
}

// must returns v, panicking (failing the test binary loudly) on error; for
// the test goroutine only.
func must[T any](v T, err error) T {
	if err != nil {
		panic(fmt.Sprintf("unexpected error: %v", err))
	}
	return v
}

func wantInt(t *testing.T, what string, got, want int, err error) {
	t.Helper()
	if err != nil || got != want {
		t.Fatalf("%s = %d, %v; want %d", what, got, err, want)
	}
}

func wantBool(t *testing.T, what string, got, want bool, err error) {
	t.Helper()
	if err != nil || got != want {
		t.Fatalf("%s = %v, %v; want %v", what, got, err, want)
	}
}

// Two nodes on the same backend: a channel is occupied and vacated once for
// the cluster, and both see the same counts and channel list.
func TestTwoNodesOccupancy(t *testing.T) { testTwoNodesOccupancy(t, shards(t, 2)) }

func testTwoNodesOccupancy(t *testing.T, e *env) {
	a := node(t, e.b, "A", Options{}).Occupancy()
	b := node(t, e.b, "B", Options{}).Occupancy()
	n, err := a.Add(ctx, "app", "ch")
	wantInt(t, "A.Add", n, 1, err)
	n, err = b.Add(ctx, "app", "ch")
	wantInt(t, "B.Add", n, 2, err)
	n, err = a.Add(ctx, "app", "ch")
	wantInt(t, "A.Add", n, 3, err)
	for _, o := range []state.Occupancy{a, b} {
		n, err = o.Count(ctx, "app", "ch")
		wantInt(t, "Count", n, 3, err)
		chans := must(o.Channels(ctx, "app", ""))
		if len(chans) != 1 || chans["ch"] != 3 {
			t.Fatalf("Channels = %v", chans)
		}
	}
	n, err = b.Remove(ctx, "app", "ch")
	wantInt(t, "B.Remove", n, 2, err)
	n, err = b.Remove(ctx, "app", "ch") // B has nothing left: no change
	wantInt(t, "B.Remove again", n, 2, err)
	n, err = a.Remove(ctx, "app", "ch")
	wantInt(t, "A.Remove", n, 1, err)
	n, err = a.Remove(ctx, "app", "ch")
	wantInt(t, "A.Remove", n, 0, err)
	if chans := must(b.Channels(ctx, "app", "")); len(chans) != 0 {
		t.Fatalf("Channels after vacating = %v", chans)
	}

	// Concurrently on both nodes: occupied and vacated alternate,
	// once each per transition.
	var wg sync.WaitGroup
	var mu sync.Mutex
	occupied, vacated := 0, 0
	for w := 0; w < 6; w++ {
		o := []state.Occupancy{a, b}[w%2]
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 50; i++ {
				n, err := o.Add(ctx, "app", "busy")
				if err != nil {
					t.Error(err)
					return
				}
				m, err := o.Remove(ctx, "app", "busy")
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				if n == 1 {
					occupied++
				}
				if m == 0 {
					vacated++
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if occupied != vacated || occupied == 0 {
		t.Fatalf("occupied %d times, vacated %d times", occupied, vacated)
	}
}

// A presence user with sockets on two nodes is one member, added once and
// removed once; signed-in users are online across nodes.
func TestTwoNodesPresenceAndUsers(t *testing.T) {
	e := shards(t, 2)
	A := node(t, e.b, "A", Options{})
	B := node(t, e.b, "B", Options{})
	pa, pb := A.Presence(), B.Presence()
	const ch = "presence-room"
	added, err := pa.Join(ctx, "app", ch, state.Member{UserID: "u", UserInfo: []byte(`{"on":"A"}`)}, "1.1", 10)
	wantBool(t, "A.Join", added, true, err)
	added, err = pb.Join(ctx, "app", ch, state.Member{UserID: "u", UserInfo: []byte(`{"on":"B"}`)}, "2.1", 10)
	wantBool(t, "B.Join", added, false, err)
	added, err = pb.Join(ctx, "app", ch, state.Member{UserID: "v"}, "2.2", 10)
	wantBool(t, "B.Join v", added, true, err)
	for _, p := range []state.Presence{pa, pb} {
		ms := must(p.Members(ctx, "app", ch))
		if len(ms) != 2 || ms[0].UserID != "u" || string(ms[0].UserInfo) != `{"on":"A"}` || ms[1].UserID != "v" {
			t.Fatalf("Members = %+v", ms)
		}
		n, err := p.Count(ctx, "app", ch)
		wantInt(t, "Count", n, 2, err)
	}
	// The member limit counts members on every node.
	if _, err := pa.Join(ctx, "app", ch, state.Member{UserID: "w"}, "1.2", 2); !errors.Is(err, state.ErrChannelFull) {
		t.Fatalf("Join past the limit: %v", err)
	}
	removed, err := pa.Leave(ctx, "app", ch, "u", "2.1") // B's socket: not A's to remove
	wantBool(t, "A.Leave of B's socket", removed, false, err)
	removed, err = pa.Leave(ctx, "app", ch, "u", "1.1")
	wantBool(t, "A.Leave", removed, false, err)
	removed, err = pb.Leave(ctx, "app", ch, "u", "2.1")
	wantBool(t, "B.Leave", removed, true, err)
	removed, err = pb.Leave(ctx, "app", ch, "u", "2.1")
	wantBool(t, "B.Leave again", removed, false, err)

	ua, ub := A.Users(), B.Users()
	first, err := ua.SignIn(ctx, "app", "x", "1.1")
	wantBool(t, "A.SignIn", first, true, err)
	first, err = ub.SignIn(ctx, "app", "x", "2.1")
	wantBool(t, "B.SignIn", first, false, err)
	for _, u := range []state.Users{ua, ub} {
		if got := must(u.Online(ctx, "app", []string{"x", "y"})); !slices.Equal(got, []bool{true, false}) {
			t.Fatalf("Online = %v", got)
		}
	}
	last, err := ub.SignOut(ctx, "app", "x", "2.1")
	wantBool(t, "B.SignOut", last, false, err)
	last, err = ua.SignOut(ctx, "app", "x", "1.1")
	wantBool(t, "A.SignOut", last, true, err)
	if got := must(ub.Online(ctx, "app", []string{"x"})); got[0] {
		t.Fatal("x still online")
	}
}

// populateDead gives node B (to be killed) and node A (surviving) state and
// returns the transitions B's death must cause.
func populateDead(t *testing.T, A, B *State) []string {
	t.Helper()
	oa, ob := A.Occupancy(), B.Occupancy()
	pa, pb := A.Presence(), B.Presence()
	ua, ub := A.Users(), B.Users()
	for _, step := range []error{
		// shared: A 1, B 2 → stays at 1
		second(oa.Add(ctx, "app", "shared")),
		second(ob.Add(ctx, "app", "shared")),
		second(ob.Add(ctx, "app", "shared")),
		// only on B → vacated
		second(ob.Add(ctx, "app", "only-b")),
		second(ob.Add(ctx, "other", "only-b")),
		// presence: u1 only on B (removed), u2 on both (stays), u3 two sockets on B
		second(pb.Join(ctx, "app", "presence-p", state.Member{UserID: "u1"}, "b.1", 0)),
		second(ob.Add(ctx, "app", "presence-p")),
		second(pb.Join(ctx, "app", "presence-p", state.Member{UserID: "u2"}, "b.2", 0)),
		second(ob.Add(ctx, "app", "presence-p")),
		second(pa.Join(ctx, "app", "presence-p", state.Member{UserID: "u2"}, "a.2", 0)),
		second(oa.Add(ctx, "app", "presence-p")),
		second(pb.Join(ctx, "app", "presence-p", state.Member{UserID: "u3"}, "b.3", 0)),
		second(pb.Join(ctx, "app", "presence-p", state.Member{UserID: "u3"}, "b.4", 0)),
		second(ob.Add(ctx, "app", "presence-p")),
		second(ob.Add(ctx, "app", "presence-p")),
		// presence only on B
		second(pb.Join(ctx, "app", "presence-q", state.Member{UserID: "u1"}, "b.1", 0)),
		second(ob.Add(ctx, "app", "presence-q")),
		// users: s1 only on B (offline), s2 on both
		second(ub.SignIn(ctx, "app", "s1", "b.1")),
		second(ub.SignIn(ctx, "app", "s1", "b.5")),
		second(ub.SignIn(ctx, "app", "s2", "b.2")),
		second(ua.SignIn(ctx, "app", "s2", "a.2")),
	} {
		if step != nil {
			t.Fatal(step)
		}
	}
	// B's channels left on B cleanly before it died change nothing.
	if _, err := ob.Add(ctx, "app", "left"); err != nil {
		t.Fatal(err)
	}
	if _, err := ob.Remove(ctx, "app", "left"); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"count_changed app/shared count=1 node=B",
		"vacated app/only-b node=B",
		"vacated other/only-b node=B",
		"member_removed app/presence-p user=u1 node=B",
		"member_removed app/presence-p user=u3 node=B",
		"count_changed app/presence-p count=1 node=B",
		"member_removed app/presence-q user=u1 node=B",
		"vacated app/presence-q node=B",
		"user_offline app/ user=s1 node=B",
	}
	sort.Strings(want)
	return want
}

func second[T any](_ T, err error) error { return err }

// checkAfterDeath checks the global state no longer includes B.
func checkAfterDeath(t *testing.T, A *State) {
	t.Helper()
	o, p, u := A.Occupancy(), A.Presence(), A.Users()
	for _, c := range []struct {
		app, ch string
		n       int
	}{{"app", "shared", 1}, {"app", "only-b", 0}, {"other", "only-b", 0}, {"app", "presence-p", 1}, {"app", "presence-q", 0}} {
		n, err := o.Count(ctx, c.app, c.ch)
		wantInt(t, "Count "+c.app+"/"+c.ch, n, c.n, err)
	}
	chans := must(o.Channels(ctx, "app", ""))
	if len(chans) != 2 || chans["shared"] != 1 || chans["presence-p"] != 1 {
		t.Fatalf("Channels = %v", chans)
	}
	ms := must(p.Members(ctx, "app", "presence-p"))
	if len(ms) != 1 || ms[0].UserID != "u2" {
		t.Fatalf("Members = %+v, want u2 only", ms)
	}
	if n, err := p.Count(ctx, "app", "presence-q"); n != 0 || err != nil {
		t.Fatalf("presence-q Count = %d, %v", n, err)
	}
	if got := must(u.Online(ctx, "app", []string{"s1", "s2"})); !slices.Equal(got, []bool{false, true}) {
		t.Fatalf("Online(s1, s2) = %v", got)
	}
}

// keysOf lists the keys of every server that mention node.
func keysOf(t *testing.T, e *env, node string) []string {
	t.Helper()
	var out []string
	for _, c := range e.b.Clients {
		for _, n := range c.Nodes() {
			keys := must(n.Do(ctx, n.B().Keys().Pattern("*").Build()).AsStrSlice())
			for _, k := range keys {
				if strings.HasSuffix(k, ":"+node) {
					out = append(out, k)
				}
			}
		}
		if ok := must(c.Do(ctx, c.B().Sismember().Key(nodesKey).Member(node).Build()).AsBool()); ok {
			out = append(out, nodesKey+" has "+node)
		}
	}
	return out
}

// A node killed without cleanup is reaped by a survivor: each transition is
// reported once though two survivors run reapers, and the global state no
// longer counts it.
func TestDeadNodeReaped(t *testing.T) { testDeadNodeReaped(t, shards(t, 2)) }

func testDeadNodeReaped(t *testing.T, e *env) {
	rec := &recorder{}
	o := Options{
		NodeTimeout:          time.Second,
		HeartbeatInterval:    200 * time.Millisecond,
		ReapInterval:         100 * time.Millisecond,
		OnDeadNodeTransition: rec.add,
	}
	A := node(t, e.b, "A", o)
	C := node(t, e.b, "C", o) // a second survivor with its own reaper
	B := node(t, e.b, "B", o)
	want := populateDead(t, A, B)
	for shard, c := range e.b.Clients {
		if n := must(c.Do(ctx, c.B().Scard().Key(regKeyName("B")).Build()).AsInt64()); n == 0 {
			t.Fatalf("B has no state on shard %d: the test should cover every shard", shard)
		}
	}
	time.Sleep(300 * time.Millisecond)
	if got := rec.list(); len(got) != 0 {
		t.Fatalf("transitions while B lives: %v", got)
	}
	killed := time.Now()
	B.halt() // SIGKILL: B's state stays in Redis, its heartbeat stops
	deadline := killed.Add(5 * time.Second)
	for len(rec.list()) < len(want) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	took := time.Since(killed)
	time.Sleep(400 * time.Millisecond) // a few more reaper rounds: no repeats
	if got := rec.list(); !slices.Equal(got, want) {
		t.Fatalf("transitions:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if took < 700*time.Millisecond || took > 2*time.Second {
		t.Errorf("reaped %v after the kill, want about the 1 s node timeout", took)
	}
	t.Logf("reaped %v after the kill", took)
	checkAfterDeath(t, A)
	checkAfterDeath(t, C)
	if k := keysOf(t, e, "B"); len(k) != 0 {
		t.Fatalf("B's keys left: %v", k)
	}
	// Member-removed transitions of a channel come before its count.
	rec.mu.Lock()
	seenCount := false
	for _, tr := range rec.got {
		if tr.Channel == "presence-p" {
			if tr.Kind == CountChanged {
				seenCount = true
			} else if seenCount {
				t.Errorf("%s after the channel's count", tstring(tr))
			}
		}
	}
	rec.mu.Unlock()
}

// Reaping is idempotent: a reaper that dies half-way leaves the rest to the
// next, concurrent reapers (even without the lock) report each transition
// once, and batches smaller than a node's state take several rounds.
func TestReapIdempotent(t *testing.T) {
	e := shards(t, 1)
	rec := &recorder{}
	o := Options{
		NodeTimeout:          time.Second,
		HeartbeatInterval:    200 * time.Millisecond,
		ReapInterval:         -1,
		Buckets:              8,
		ReapBatch:            2,
		OnDeadNodeTransition: rec.add,
	}
	A := node(t, e.b, "A", o)
	C := node(t, e.b, "C", o)
	B := node(t, e.b, "B", o)
	want := populateDead(t, A, B)
	// More state than a batch in one bucket.
	var more []string
	for i := 0; i < 20; i++ {
		ch := fmt.Sprint("presence-big-", i)
		if _, err := B.Presence().Join(ctx, "app", ch, state.Member{UserID: "big"}, "b.9", 0); err != nil {
			t.Fatal(err)
		}
		if _, err := B.Occupancy().Add(ctx, "app", ch); err != nil {
			t.Fatal(err)
		}
		more = append(more, "member_removed app/"+ch+" user=big node=B", "vacated app/"+ch+" node=B")
	}
	want = append(want, more...)
	sort.Strings(want)
	entries := must(e.b.Clients[0].Do(ctx, e.b.Clients[0].B().Smembers().Key(regKeyName("B")).Build()).AsStrSlice())
	if len(entries) < 3 {
		t.Fatalf("B registered %v: want several buckets for this test", entries)
	}
	B.halt()
	if dead := must(A.deadNodes(ctx, 0)); len(dead) != 0 {
		t.Fatalf("dead before the timeout: %v", dead)
	}
	time.Sleep(1200 * time.Millisecond)
	if dead := must(A.deadNodes(ctx, 0)); !slices.Equal(dead, []string{"B"}) {
		t.Fatalf("dead nodes = %v, want [B]", dead)
	}
	// A dies after two buckets...
	if err := A.reapNode(ctx, 0, "B", 2); err != nil {
		t.Fatal(err)
	}
	partial := len(rec.list())
	if partial >= len(want) {
		t.Fatalf("partial reap reported %d of %d transitions", partial, len(want))
	}
	// ...then two reapers finish concurrently.
	var wg sync.WaitGroup
	for _, s := range []*State{A, C, A, C} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.reapNode(ctx, 0, "B", -1); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if got := rec.list(); !slices.Equal(got, want) {
		t.Fatalf("transitions:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	checkAfterDeath(t, A)
	if k := keysOf(t, e, "B"); len(k) != 0 {
		t.Fatalf("B's keys left: %v", k)
	}
	// Nothing more to do.
	if err := A.Reap(ctx); err != nil {
		t.Fatal(err)
	}
	if got := len(rec.list()); got != len(want) {
		t.Fatalf("%d transitions after a last pass, want %d", got, len(want))
	}
}

// Close deletes the heartbeat so that leftovers are reaped at once; the
// closed state refuses operations.
func TestCloseHandsOver(t *testing.T) {
	e := shards(t, 1)
	rec := &recorder{}
	A := node(t, e.b, "A", Options{ReapInterval: -1, OnDeadNodeTransition: rec.add})
	B := node(t, e.b, "B", Options{ReapInterval: -1})
	if _, err := B.Occupancy().Add(ctx, "app", "ch"); err != nil {
		t.Fatal(err)
	}
	if err := B.Close(); err != nil {
		t.Fatal(err)
	}
	if err := B.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := B.Occupancy().Add(ctx, "app", "ch"); !errors.Is(err, ErrClosed) {
		t.Fatalf("Add after Close: %v", err)
	}
	if _, err := B.Locks().TryLock(ctx, "app", "x", time.Second); !errors.Is(err, ErrClosed) {
		t.Fatalf("TryLock after Close: %v", err)
	}
	if err := A.Reap(ctx); err != nil {
		t.Fatal(err)
	}
	if got := rec.list(); !slices.Equal(got, []string{"vacated app/ch node=B"}) {
		t.Fatalf("transitions = %v", got)
	}
}

// Joining, leaving, signing in and out leave no keys behind but the node's
// liveness keys.
func TestNoLeftoverKeys(t *testing.T) { testNoLeftoverKeys(t, shards(t, 1)) }

func testNoLeftoverKeys(t *testing.T, e *env) {
	s := node(t, e.b, "A", Options{})
	for i := 0; i < 10; i++ {
		ch := fmt.Sprint("presence-", i)
		u := fmt.Sprint("u", i%3)
		sock := fmt.Sprint("1.", i)
		for _, err := range []error{
			second(s.Presence().Join(ctx, "app", ch, state.Member{UserID: u, UserInfo: []byte(`{}`)}, sock, 0)),
			second(s.Occupancy().Add(ctx, "app", ch)),
			second(s.Users().SignIn(ctx, "app", u, sock)),
			second(s.Presence().Leave(ctx, "app", ch, u, sock)),
			second(s.Occupancy().Remove(ctx, "app", ch)),
			second(s.Users().SignOut(ctx, "app", u, sock)),
		} {
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	var left []string
	for _, c := range e.b.Clients {
		for _, n := range c.Nodes() {
			for _, k := range must(n.Do(ctx, n.B().Keys().Pattern("*").Build()).AsStrSlice()) {
				if !strings.HasPrefix(k, "herald:{nodes}:") {
					left = append(left, k)
				}
			}
		}
	}
	if len(left) != 0 {
		t.Fatalf("keys left: %v", left)
	}
}

// A node that finds its heartbeat gone while it had state (reaped while
// paused, or the shard restarted empty) restores its registry and says so.
func TestStateLost(t *testing.T) {
	e := shards(t, 1)
	lost := make(chan int, 10)
	A := node(t, e.b, "A", Options{OnStateLost: func(shard int) { lost <- shard }})
	if _, err := A.Occupancy().Add(ctx, "app", "ch"); err != nil {
		t.Fatal(err)
	}
	if err := A.Heartbeat(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-lost:
		t.Fatal("state reported lost while intact")
	default:
	}
	if _, err := e.servers[0].Do("FLUSHALL"); err != nil {
		t.Fatal(err)
	}
	if err := A.Heartbeat(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case shard := <-lost:
		if shard != 0 {
			t.Fatalf("lost shard %d", shard)
		}
	default:
		t.Fatal("lost state not reported")
	}
	c := e.b.Clients[0]
	if reg := must(c.Do(ctx, c.B().Smembers().Key(regKeyName("A")).Build()).AsStrSlice()); !slices.Equal(reg, []string{"0:app"}) {
		t.Fatalf("registry after restore = %v", reg)
	}
}

// With Redis down every operation fails within the timeout, and works again
// once it is back.
func TestRedisDown(t *testing.T) {
	e := shards(t, 1)
	s := node(t, e.b, "A", Options{Timeout: 300 * time.Millisecond})
	if _, err := s.Occupancy().Add(ctx, "app", "ch"); err != nil {
		t.Fatal(err)
	}
	e.servers[0].Kill()
	ops := map[string]func() error{
		"Join": func() error {
			return second(s.Presence().Join(ctx, "app", "presence-x", state.Member{UserID: "u"}, "1.1", 0))
		},
		"Leave":    func() error { return second(s.Presence().Leave(ctx, "app", "presence-x", "u", "1.1")) },
		"Members":  func() error { return second(s.Presence().Members(ctx, "app", "presence-x")) },
		"PCount":   func() error { return second(s.Presence().Count(ctx, "app", "presence-x")) },
		"Add":      func() error { return second(s.Occupancy().Add(ctx, "app", "ch2")) },
		"Remove":   func() error { return second(s.Occupancy().Remove(ctx, "app", "ch")) },
		"Count":    func() error { return second(s.Occupancy().Count(ctx, "app", "ch")) },
		"Channels": func() error { return second(s.Occupancy().Channels(ctx, "app", "")) },
		"SignIn":   func() error { return second(s.Users().SignIn(ctx, "app", "u", "1.1")) },
		"SignOut":  func() error { return second(s.Users().SignOut(ctx, "app", "u", "1.1")) },
		"Online":   func() error { return second(s.Users().Online(ctx, "app", []string{"u"})) },
		"CacheSet": func() error {
			return s.Cache().Set(ctx, "app", "cache-x", state.CachedEvent{Event: "e"}, time.Minute)
		},
		"CacheGet":  func() error { _, _, _, err := s.Cache().Get(ctx, "app", "cache-x"); return err },
		"TryLock":   func() error { return second(s.Locks().TryLock(ctx, "app", "l", time.Second)) },
		"Heartbeat": func() error { return s.Heartbeat(ctx) },
		"Reap":      func() error { return s.Reap(ctx) },
	}
	for name, op := range ops {
		start := time.Now()
		err := op()
		if err == nil {
			t.Errorf("%s succeeded with Redis down", name)
		}
		if d := time.Since(start); d > time.Second {
			t.Errorf("%s took %v with Redis down", name, d)
		}
	}
	e.servers[0].Restart()
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, err := s.Occupancy().Add(ctx, "app", "ch3")
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("still failing after Redis came back: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestNewRejects(t *testing.T) {
	e := shards(t, 1)
	if _, err := New(nil, "A", Options{}); err == nil {
		t.Error("nil backend accepted")
	}
	if _, err := New(e.b, "", Options{}); err == nil {
		t.Error("empty node id accepted")
	}
	if _, err := New(e.b, "A", Options{NodeTimeout: time.Second, HeartbeatInterval: time.Second}); err == nil {
		t.Error("heartbeat interval = node timeout accepted")
	}
}

func TestKeyHelpers(t *testing.T) {
	if got := escape("a:b{c}%"); got != "a%3Ab%7Bc%7D%25" {
		t.Errorf("escape = %q", got)
	}
	if bucketPrefix("a:1", 2) == bucketPrefix("a", 12) {
		t.Error("bucket prefixes collide")
	}
	for _, e := range []string{"", "x:app", ":app", "-1:app"} {
		if _, _, ok := parseRegEntry(e); ok {
			t.Errorf("parseRegEntry(%q) accepted", e)
		}
	}
	if b, app, ok := parseRegEntry(regEntry(7, "my:app")); !ok || b != 7 || app != "my:app" {
		t.Errorf("parseRegEntry round trip = %d %q %v", b, app, ok)
	}
	if got := globEscape(`a*b?[c]\`); got != `a\*b\?\[c\]\\` {
		t.Errorf("globEscape = %q", got)
	}
	for _, v := range []string{"", "x", "5:ab", "-1:", "1"} {
		if _, ok := decodeCached(v); ok {
			t.Errorf("decodeCached(%q) accepted", v)
		}
	}
}

// The multi-node tests on one 3-master Redis Cluster (no CROSSSLOT errors;
// Redis routes each bucket to its slot).
func TestCluster(t *testing.T) {
	e := cluster(t)
	for _, tc := range []struct {
		name string
		run  func(*testing.T, *env)
	}{
		{"TwoNodesOccupancy", testTwoNodesOccupancy},
		{"DeadNodeReaped", testDeadNodeReaped},
		{"NoLeftoverKeys", testNoLeftoverKeys},
	} {
		for _, s := range e.servers {
			if _, err := s.Do("FLUSHALL"); err != nil {
				t.Fatal(err)
			}
		}
		t.Run(tc.name, func(t *testing.T) { tc.run(t, e) })
	}
}

// A node taken for dead while it was only slow: its state is reaped once;
// when it heartbeats again it learns so (OnStateLost), restores its registry,
// and its sockets' later leaves report nothing twice.
func TestSlowNodeReapedThenBack(t *testing.T) {
	e := shards(t, 1)
	rec := &recorder{}
	lost := make(chan int, 10)
	A := node(t, e.b, "A", Options{ReapInterval: -1, OnDeadNodeTransition: rec.add})
	B := node(t, e.b, "B", Options{ReapInterval: -1, NodeTimeout: 2 * time.Hour, HeartbeatInterval: time.Hour, OnStateLost: func(s int) { lost <- s }})
	for _, err := range []error{
		second(B.Presence().Join(ctx, "app", "presence-x", state.Member{UserID: "u"}, "b.1", 0)),
		second(B.Occupancy().Add(ctx, "app", "presence-x")),
		second(B.Users().SignIn(ctx, "app", "u", "b.1")),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	c := e.b.Clients[0]
	if err := c.Do(ctx, c.B().Del().Key(aliveKey("B")).Build()).Error(); err != nil { // as if it expired
		t.Fatal(err)
	}
	if err := A.Reap(ctx); err != nil {
		t.Fatal(err)
	}
	want := []string{"member_removed app/presence-x user=u node=B", "user_offline app/ user=u node=B", "vacated app/presence-x node=B"}
	if got := rec.list(); !slices.Equal(got, want) {
		t.Fatalf("transitions = %v", got)
	}
	if err := B.Heartbeat(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-lost:
	default:
		t.Fatal("OnStateLost not called")
	}
	if reg := must(c.Do(ctx, c.B().Smembers().Key(regKeyName("B")).Build()).AsStrSlice()); len(reg) == 0 {
		t.Fatal("registry not restored")
	}
	removed, err := B.Presence().Leave(ctx, "app", "presence-x", "u", "b.1")
	wantBool(t, "Leave after reap", removed, false, err)
	last, err := B.Users().SignOut(ctx, "app", "u", "b.1")
	wantBool(t, "SignOut after reap", last, false, err)
	n, err := B.Occupancy().Remove(ctx, "app", "presence-x")
	wantInt(t, "Remove after reap", n, 0, err)
	// New subscriptions are counted and registered again.
	n, err = B.Occupancy().Add(ctx, "app", "presence-x")
	wantInt(t, "Add after reap", n, 1, err)
	if err := c.Do(ctx, c.B().Del().Key(aliveKey("B")).Build()).Error(); err != nil {
		t.Fatal(err)
	}
	if err := A.Reap(ctx); err != nil {
		t.Fatal(err)
	}
	if got := rec.list(); len(got) != 4 || !slices.Contains(got, "vacated app/presence-x node=B") {
		t.Fatalf("transitions after the second reap = %v", got)
	}
	if n, err := A.Occupancy().Count(ctx, "app", "presence-x"); n != 0 || err != nil {
		t.Fatalf("Count = %d, %v", n, err)
	}
}
