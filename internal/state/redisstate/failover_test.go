package redisstate

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/heraldrt/herald/internal/protocol"
	"github.com/heraldrt/herald/internal/redistest"
	"github.com/heraldrt/herald/internal/redisx"
	"github.com/heraldrt/herald/internal/state"
)

// failoverEnv is three shards and two nodes, each with its own connections
// and its own view of the ring, as two Herald processes have.
type failoverEnv struct {
	servers []*redistest.Server
	urls    []string
	bA, bB  *redisx.Backend
	A, B    *State
}

func newFailoverEnv(t *testing.T) *failoverEnv {
	t.Helper()
	e := &failoverEnv{}
	for i := 0; i < 3; i++ {
		s := redistest.Start(t)
		e.servers = append(e.servers, s)
		e.urls = append(e.urls, s.URL())
	}
	dial := func() *redisx.Backend {
		b, err := redisx.Dial(e.urls, "", redisx.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(b.Close)
		return b
	}
	e.bA, e.bB = dial(), dial()
	o := Options{Reassert: true, Timeout: 500 * time.Millisecond}
	e.A = node(t, e.bA, "A", o)
	e.B = node(t, e.bB, "B", o)
	return e
}

// setHealth changes shard i's health in both nodes' rings, as their monitors
// would.
func (e *failoverEnv) setHealth(i int, h redisx.Health) {
	e.bA.Ring.SetHealth(i, h)
	e.bB.Ring.SetHealth(i, h)
}

// homedOn returns a name with prefix whose home shard is i.
func homedOn(r *redisx.Ring, app, prefix string, i int, user bool) string {
	for n := 0; ; n++ {
		name := prefix + strconv.Itoa(n)
		key := name
		if user {
			key = protocol.UserChannel(name)
		}
		if r.Home(redisx.ShardKey(app, key)) == i {
			return name
		}
	}
}

// view is what node S reads back about the test's channels.
type view struct {
	count, presCount int
	members          string
	online           bool
	channels         map[string]int
}

func read(t *testing.T, S *State, ch, room, user string) (view, bool) {
	t.Helper()
	var v view
	var err error
	if v.count, err = S.Occupancy().Count(ctx, "app", ch); err != nil {
		return v, false
	}
	if v.presCount, err = S.Occupancy().Count(ctx, "app", room); err != nil {
		return v, false
	}
	ms, err := S.Presence().Members(ctx, "app", room)
	if err != nil {
		return v, false
	}
	var ids []string
	for _, m := range ms {
		ids = append(ids, m.UserID+"="+string(m.UserInfo))
	}
	v.members = strings.Join(ids, ",")
	on, err := S.Users().Online(ctx, "app", []string{user})
	if err != nil {
		return v, false
	}
	v.online = on[0]
	if v.channels, err = S.Occupancy().Channels(ctx, "app", ""); err != nil {
		return v, false
	}
	return v, true
}

func waitView(t *testing.T, what string, nodes []*State, ch, room, user string, want view) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		ok := true
		var got view
		for _, S := range nodes {
			v, read := read(t, S, ch, room, user)
			got = v
			if !read || v.count != want.count || v.presCount != want.presCount || v.members != want.members ||
				v.online != want.online || len(v.channels) != len(want.channels) {
				ok = false
				break
			}
			for k, n := range want.channels {
				if v.channels[k] != n {
					ok = false
				}
			}
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: state is %+v, want %+v", what, got, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A shard dies: every node writes its part of the dead shard's channels to
// the shard that serves them now, so counts, members and signed-in users read
// the same as before; changes during the outage land there; when the shard
// comes back (empty), the nodes write their part back to it and remove it
// from the fallback shards.
func TestReassertAfterShardFailover(t *testing.T) {
	e := newFailoverEnv(t)
	r := e.bA.Ring
	ch := homedOn(r, "app", "news-", 1, false)
	room := homedOn(r, "app", "presence-room-", 1, false)
	user := homedOn(r, "app", "u", 1, true)
	for _, err := range []error{
		second(e.A.Presence().Join(ctx, "app", room, state.Member{UserID: "u1", UserInfo: []byte(`{"n":1}`)}, "a.1", 10)),
		second(e.A.Occupancy().Add(ctx, "app", room)),
		second(e.A.Occupancy().Add(ctx, "app", ch)),
		second(e.A.Occupancy().Add(ctx, "app", ch)),
		second(e.A.Users().SignIn(ctx, "app", user, "a.1")),
		second(e.B.Presence().Join(ctx, "app", room, state.Member{UserID: "u2"}, "b.1", 10)),
		second(e.B.Occupancy().Add(ctx, "app", room)),
		second(e.B.Occupancy().Add(ctx, "app", ch)),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	nodes := []*State{e.A, e.B}
	before := view{count: 3, presCount: 2, members: `u1={"n":1},u2=`, online: true, channels: map[string]int{ch: 3, room: 2}}
	waitView(t, "before", nodes, ch, room, user, before)

	e.servers[1].Kill()
	start := time.Now()
	e.setHealth(1, redisx.Down)
	waitView(t, "after failover", nodes, ch, room, user, before)
	t.Logf("state re-asserted on the fallback shards %v after the ring changed", time.Since(start).Round(time.Millisecond))
	fb := e.bA.Ring.Pick(redisx.ShardKey("app", room))
	if fb == 1 {
		t.Fatal("room still placed on the dead shard")
	}

	// Changes during the outage go to the fallback shards.
	for _, err := range []error{
		second(e.B.Presence().Leave(ctx, "app", room, "u2", "b.1")),
		second(e.B.Occupancy().Remove(ctx, "app", room)),
		second(e.A.Occupancy().Remove(ctx, "app", ch)),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	during := view{count: 2, presCount: 1, members: `u1={"n":1}`, online: true, channels: map[string]int{ch: 2, room: 1}}
	waitView(t, "during the outage", nodes, ch, room, user, during)

	e.servers[1].Restart() // empty
	start = time.Now()
	e.setHealth(1, redisx.Recovering)
	waitView(t, "after failback", nodes, ch, room, user, during)
	t.Logf("state re-asserted on the returned shard %v after the ring changed", time.Since(start).Round(time.Millisecond))
	// The returned shard holds it, the fallback shard no longer does.
	p := bucketPrefix("app", 0)
	if n, err := e.servers[1].Do("HLEN", p+"pm:"+room); err != nil || n != "1" {
		t.Fatalf("members on the returned shard: %q %v", n, err)
	}
	for i, s := range e.servers {
		if i == 1 {
			continue
		}
		for _, k := range []string{p + "pm:" + room, p + "pc:" + room} {
			if n, err := s.Do("EXISTS", k); err != nil || n != "0" {
				t.Fatalf("shard %d still has %s: %q %v", i, k, n, err)
			}
		}
		for _, f := range []string{ch, room} {
			if n, err := s.Do("HEXISTS", p+"occ", f); err != nil || n != "0" {
				t.Fatalf("shard %d still counts %s: %q %v", i, f, n, err)
			}
		}
		if n, err := s.Do("HEXISTS", p+"uc", user); err != nil || n != "0" {
			t.Fatalf("shard %d still has user %s: %q %v", i, user, n, err)
		}
	}
	// Leaving after the return works on the returned shard.
	for _, err := range []error{
		second(e.A.Presence().Leave(ctx, "app", room, "u1", "a.1")),
		second(e.A.Occupancy().Remove(ctx, "app", room)),
		second(e.A.Users().SignOut(ctx, "app", user, "a.1")),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	waitView(t, "after leaving", nodes, ch, room, user, view{count: 2, members: "", channels: map[string]int{ch: 2}})
}

// An unreachable shard keeps its data: when it comes back, each node removes
// what it no longer holds there (sockets that left during the outage) and
// the stale entries of its channels on the fallback shards are ignored by
// Channels until they are removed.
func TestReassertStaleShardAfterPartition(t *testing.T) {
	e := newFailoverEnv(t)
	r := e.bA.Ring
	ch := homedOn(r, "app", "news-", 1, false)
	room := homedOn(r, "app", "presence-room-", 1, false)
	user := homedOn(r, "app", "u", 1, true)
	for _, err := range []error{
		second(e.A.Presence().Join(ctx, "app", room, state.Member{UserID: "u1"}, "a.1", 10)),
		second(e.A.Occupancy().Add(ctx, "app", room)),
		second(e.B.Presence().Join(ctx, "app", room, state.Member{UserID: "u2"}, "b.1", 10)),
		second(e.B.Occupancy().Add(ctx, "app", room)),
		second(e.B.Occupancy().Add(ctx, "app", ch)),
		second(e.B.Users().SignIn(ctx, "app", user, "b.1")),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	nodes := []*State{e.A, e.B}
	waitView(t, "before", nodes, ch, room, user, view{count: 1, presCount: 2, members: "u1=,u2=", online: true, channels: map[string]int{ch: 1, room: 2}})
	e.setHealth(1, redisx.Down) // "unreachable", its data intact
	waitView(t, "after failover", nodes, ch, room, user, view{count: 1, presCount: 2, members: "u1=,u2=", online: true, channels: map[string]int{ch: 1, room: 2}})
	// B's socket leaves everything during the outage.
	for _, err := range []error{
		second(e.B.Presence().Leave(ctx, "app", room, "u2", "b.1")),
		second(e.B.Occupancy().Remove(ctx, "app", room)),
		second(e.B.Occupancy().Remove(ctx, "app", ch)),
		second(e.B.Users().SignOut(ctx, "app", user, "b.1")),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	after := view{count: 0, presCount: 1, members: "u1=", online: false, channels: map[string]int{room: 1}}
	waitView(t, "during the outage", nodes, ch, room, user, after)
	e.setHealth(1, redisx.Recovering)
	waitView(t, "after failback", nodes, ch, room, user, after)
	p := bucketPrefix("app", 0)
	if v, err := e.servers[1].Do("HGET", p+"pc:"+room, "u2"); err == nil && v != "-1" {
		t.Fatalf("stale socket of u2 still counted on the returned shard: %q", v)
	}
}

func TestReapableAfterReturn(t *testing.T) {
	e := newFailoverEnv(t)
	e.A.opts.NodeTimeout = 300 * time.Millisecond
	if !e.A.reapable(1) {
		t.Fatal("a shard that was never down is not reapable")
	}
	e.setHealth(1, redisx.Down)
	if e.A.reapable(1) {
		t.Fatal("a down shard is reapable")
	}
	e.setHealth(1, redisx.Recovering)
	if e.A.reapable(1) {
		t.Fatal("a shard is reapable right after it came back")
	}
	deadline := time.Now().Add(2 * time.Second)
	for !e.A.reapable(1) {
		if time.Now().After(deadline) {
			t.Fatal("not reapable a node timeout after it came back")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := (&State{}).Reconcile(ctx); err == nil {
		t.Fatal("Reconcile without Reassert")
	}
}
