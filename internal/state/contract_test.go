package state_test

// The contract every implementation of the state interfaces must meet: the
// memory implementations run it here, the Redis ones in
// redisstate_contract_test.go.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/heraldrt/herald/internal/state"
)

// impl is one set of implementations, fresh (empty) for every subtest.
type impl struct {
	Presence  state.Presence
	Occupancy state.Occupancy
	Users     state.Users
	Cache     state.Cache
	Locks     state.Locks
}

type contractOptions struct {
	// ConcurrentRounds per worker in the concurrency test (default 200).
	ConcurrentRounds int
}

func runContract(t *testing.T, fresh func(t *testing.T) impl, o contractOptions) {
	if o.ConcurrentRounds == 0 {
		o.ConcurrentRounds = 200
	}
	t.Run("PresenceFirstAndLastSocket", func(t *testing.T) { testPresenceFirstAndLastSocket(t, fresh(t).Presence) })
	t.Run("PresenceScopedByAppAndChannel", func(t *testing.T) { testPresenceScoped(t, fresh(t).Presence) })
	t.Run("PresenceMaxMembers", func(t *testing.T) { testPresenceMaxMembers(t, fresh(t).Presence) })
	t.Run("PresenceMembersSortedAndFirstInfoKept", func(t *testing.T) { testPresenceMembersSorted(t, fresh(t).Presence) })
	t.Run("PresenceCopiesUserInfo", func(t *testing.T) { testPresenceCopiesUserInfo(t, fresh(t).Presence) })
	t.Run("Occupancy", func(t *testing.T) { testOccupancy(t, fresh(t).Occupancy) })
	t.Run("Users", func(t *testing.T) { testUsers(t, fresh(t).Users) })
	t.Run("Cache", func(t *testing.T) { testCache(t, fresh(t).Cache) })
	t.Run("Locks", func(t *testing.T) { testLocks(t, fresh(t).Locks) })
	t.Run("Concurrent", func(t *testing.T) { testConcurrent(t, fresh(t), o.ConcurrentRounds) })
}

func TestMemoryContract(t *testing.T) {
	runContract(t, func(*testing.T) impl {
		return impl{
			Presence:  state.NewMemoryPresence(),
			Occupancy: state.NewMemoryOccupancy(),
			Users:     state.NewMemoryUsers(),
			Cache:     state.NewMemoryCache(),
			Locks:     state.NewMemoryLocks(),
		}
	}, contractOptions{})
}

var ctx = context.Background()

func member(id, info string) state.Member {
	if info == "" {
		return state.Member{UserID: id}
	}
	return state.Member{UserID: id, UserInfo: json.RawMessage(info)}
}

func mustJoin(t *testing.T, p state.Presence, app, ch string, m state.Member, sock string, max int, wantAdded bool) {
	t.Helper()
	added, err := p.Join(ctx, app, ch, m, sock, max)
	if err != nil {
		t.Fatalf("Join(%s, %s, %s): %v", ch, m.UserID, sock, err)
	}
	if added != wantAdded {
		t.Fatalf("Join(%s, %s, %s) added = %v, want %v", ch, m.UserID, sock, added, wantAdded)
	}
}

func mustLeave(t *testing.T, p state.Presence, app, ch, user, sock string, wantRemoved bool) {
	t.Helper()
	removed, err := p.Leave(ctx, app, ch, user, sock)
	if err != nil {
		t.Fatalf("Leave(%s, %s, %s): %v", ch, user, sock, err)
	}
	if removed != wantRemoved {
		t.Fatalf("Leave(%s, %s, %s) removed = %v, want %v", ch, user, sock, removed, wantRemoved)
	}
}

func count(t *testing.T, p state.Presence, app, ch string) int {
	t.Helper()
	n, err := p.Count(ctx, app, ch)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func testPresenceFirstAndLastSocket(t *testing.T, p state.Presence) {
	const app, ch = "app", "presence-room"

	mustJoin(t, p, app, ch, member("u1", `{"n":1}`), "s1", 100, true)
	mustJoin(t, p, app, ch, member("u1", `{"n":1}`), "s2", 100, false)
	mustJoin(t, p, app, ch, member("u2", ""), "s3", 100, true)
	if n := count(t, p, app, ch); n != 2 {
		t.Fatalf("Count = %d, want 2 distinct users", n)
	}

	mustLeave(t, p, app, ch, "u1", "s1", false) // u1 still has s2
	if n := count(t, p, app, ch); n != 2 {
		t.Fatalf("Count after first leave = %d, want 2", n)
	}
	mustLeave(t, p, app, ch, "u1", "s1", false) // already gone
	mustLeave(t, p, app, ch, "u1", "s3", false) // s3 is u2's socket, not u1's
	mustLeave(t, p, app, ch, "u1", "s2", true)  // last socket
	if n := count(t, p, app, ch); n != 1 {
		t.Fatalf("Count = %d, want 1", n)
	}
	mustLeave(t, p, app, ch, "u1", "s2", false)
	mustLeave(t, p, app, ch, "nobody", "s9", false)
	mustLeave(t, p, app, "presence-other", "u2", "s3", false)
	mustLeave(t, p, app, ch, "u2", "s3", true)
	if n := count(t, p, app, ch); n != 0 {
		t.Fatalf("Count = %d, want 0", n)
	}
	ms, err := p.Members(ctx, app, ch)
	if err != nil || len(ms) != 0 {
		t.Fatalf("Members of empty channel = %v, %v", ms, err)
	}

	// A user who left entirely is added again on rejoin.
	mustJoin(t, p, app, ch, member("u1", ""), "s1", 100, true)
}

func testPresenceScoped(t *testing.T, p state.Presence) {
	mustJoin(t, p, "a1", "presence-x", member("u", ""), "s", 100, true)
	mustJoin(t, p, "a2", "presence-x", member("u", ""), "s", 100, true)
	mustJoin(t, p, "a1", "presence-y", member("u", ""), "s", 100, true)
	for _, k := range []struct{ app, ch string }{{"a1", "presence-x"}, {"a2", "presence-x"}, {"a1", "presence-y"}} {
		if n := count(t, p, k.app, k.ch); n != 1 {
			t.Errorf("Count(%s, %s) = %d, want 1", k.app, k.ch, n)
		}
	}
	mustLeave(t, p, "a2", "presence-x", "u", "s", true)
	if n := count(t, p, "a1", "presence-x"); n != 1 {
		t.Errorf("leaving a2 affected a1: Count = %d", n)
	}
}

func testPresenceMaxMembers(t *testing.T, p state.Presence) {
	const app, ch = "app", "presence-room"
	mustJoin(t, p, app, ch, member("u1", ""), "s1", 2, true)
	mustJoin(t, p, app, ch, member("u2", ""), "s2", 2, true)

	// A new user is refused...
	added, err := p.Join(ctx, app, ch, member("u3", ""), "s3", 2)
	if !errors.Is(err, state.ErrChannelFull) || added {
		t.Fatalf("Join of a third user into a channel of max 2 = %v, %v; want false, ErrChannelFull", added, err)
	}
	if n := count(t, p, app, ch); n != 2 {
		t.Fatalf("Count after refused join = %d, want 2", n)
	}
	ms, _ := p.Members(ctx, app, ch)
	for _, m := range ms {
		if m.UserID == "u3" {
			t.Fatal("refused user is listed as a member")
		}
	}
	// ...and leaving with the refused socket is a no-op.
	mustLeave(t, p, app, ch, "u3", "s3", false)

	// ...but an existing member may open another socket.
	mustJoin(t, p, app, ch, member("u1", ""), "s1b", 2, false)
	if n := count(t, p, app, ch); n != 2 {
		t.Fatalf("Count = %d, want 2", n)
	}

	// Once a member leaves entirely, there is room again.
	mustLeave(t, p, app, ch, "u2", "s2", true)
	mustJoin(t, p, app, ch, member("u3", ""), "s3", 2, true)

	// max <= 0 means no limit.
	for i := 0; i < 300; i++ {
		mustJoin(t, p, app, "presence-big", member(fmt.Sprint("u", i), ""), fmt.Sprint("s", i), 0, true)
	}
	if n := count(t, p, app, "presence-big"); n != 300 {
		t.Fatalf("Count with no limit = %d, want 300", n)
	}

	// max 1: the limit counts distinct users, not sockets.
	mustJoin(t, p, app, "presence-one", member("a", ""), "s1", 1, true)
	mustJoin(t, p, app, "presence-one", member("a", ""), "s2", 1, false)
	if _, err := p.Join(ctx, app, "presence-one", member("b", ""), "s3", 1); !errors.Is(err, state.ErrChannelFull) {
		t.Fatalf("Join into full presence-one: %v, want ErrChannelFull", err)
	}
}

func testPresenceMembersSorted(t *testing.T, p state.Presence) {
	const app, ch = "app", "presence-room"
	ids := []string{"zed", "10", "2", "alice", "Bob", "_", "1"}
	for i, id := range ids {
		mustJoin(t, p, app, ch, member(id, fmt.Sprintf(`{"i":%d}`, i)), "s"+id, 100, true)
	}
	// A second socket of alice with different info: the first info is kept.
	mustJoin(t, p, app, ch, member("alice", `{"i":"changed"}`), "s-alice-2", 100, false)
	// A user with no user_info.
	mustJoin(t, p, app, ch, member("noinfo", ""), "s-noinfo", 100, true)

	ms, err := p.Members(ctx, app, ch)
	if err != nil {
		t.Fatal(err)
	}
	got := make([]string, len(ms))
	for i, m := range ms {
		got[i] = m.UserID
	}
	want := append(slices.Clone(ids), "noinfo")
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("Members order = %v, want %v", got, want)
	}
	for _, m := range ms {
		switch m.UserID {
		case "alice":
			if string(m.UserInfo) != `{"i":3}` {
				t.Errorf("alice's info = %s, want the first connection's {\"i\":3}", m.UserInfo)
			}
		case "noinfo":
			if m.UserInfo != nil {
				t.Errorf("user without info has UserInfo %q, want nil", m.UserInfo)
			}
		}
	}
	if n := count(t, p, app, ch); n != len(want) {
		t.Fatalf("Count = %d, want %d", n, len(want))
	}
}

// The registry must not alias the caller's user_info buffer.
func testPresenceCopiesUserInfo(t *testing.T, p state.Presence) {
	info := []byte(`{"name":"ana"}`)
	mustJoin(t, p, "app", "presence-x", state.Member{UserID: "u", UserInfo: info}, "s", 10, true)
	copy(info, `{"name":"XXX"}`)
	ms, _ := p.Members(ctx, "app", "presence-x")
	if len(ms) != 1 || string(ms[0].UserInfo) != `{"name":"ana"}` {
		t.Fatalf("Members = %+v, want the info as joined", ms)
	}
}

func testOccupancy(t *testing.T, o state.Occupancy) {
	add := func(app, ch string, want int) {
		t.Helper()
		n, err := o.Add(ctx, app, ch)
		if err != nil || n != want {
			t.Fatalf("Add(%s, %s) = %d, %v; want %d", app, ch, n, err, want)
		}
	}
	remove := func(app, ch string, want int) {
		t.Helper()
		n, err := o.Remove(ctx, app, ch)
		if err != nil || n != want {
			t.Fatalf("Remove(%s, %s) = %d, %v; want %d", app, ch, n, err, want)
		}
	}
	cnt := func(app, ch string, want int) {
		t.Helper()
		n, err := o.Count(ctx, app, ch)
		if err != nil || n != want {
			t.Fatalf("Count(%s, %s) = %d, %v; want %d", app, ch, n, err, want)
		}
	}

	remove("app", "never", 0) // never below zero
	cnt("app", "never", 0)
	add("app", "never", 1) // and the failed remove left no debt
	remove("app", "never", 0)

	add("app", "presence-a", 1)
	add("app", "presence-a", 2)
	add("app", "private-b", 1)
	add("app", "c", 1)
	add("other", "presence-a", 1)
	cnt("app", "presence-a", 2)
	cnt("other", "presence-a", 1)

	chans, err := o.Channels(ctx, "app", "presence-")
	if err != nil {
		t.Fatal(err)
	}
	if len(chans) != 1 || chans["presence-a"] != 2 {
		t.Fatalf("Channels(presence-) = %v", chans)
	}
	all, _ := o.Channels(ctx, "app", "")
	if len(all) != 3 || all["presence-a"] != 2 || all["private-b"] != 1 || all["c"] != 1 {
		t.Fatalf("Channels(\"\") = %v", all)
	}
	if none, _ := o.Channels(ctx, "nope", ""); len(none) != 0 {
		t.Fatalf("Channels of unknown app = %v", none)
	}
	if none, _ := o.Channels(ctx, "app", "zzz"); none == nil || len(none) != 0 {
		t.Fatalf("Channels with unmatched prefix = %#v, want empty non-nil map", none)
	}

	remove("app", "presence-a", 1)
	remove("app", "presence-a", 0)
	remove("app", "presence-a", 0)
	cnt("app", "presence-a", 0)
	chans, _ = o.Channels(ctx, "app", "")
	if _, ok := chans["presence-a"]; ok {
		t.Fatalf("vacated channel still listed: %v", chans)
	}
	for ch, n := range chans {
		if n <= 0 {
			t.Fatalf("channel %s listed with count %d", ch, n)
		}
	}
	add("app", "presence-a", 1)

	// The map returned is the caller's: mutating it does not change state.
	chans["c"] = 99
	cnt("app", "c", 1)

	// Prefixes are literal, not patterns.
	add("app", "x*[y]?\\z", 1)
	add("app", "xa", 1)
	if got, _ := o.Channels(ctx, "app", "x*[y]?\\"); len(got) != 1 || got["x*[y]?\\z"] != 1 {
		t.Fatalf("Channels with a glob-like prefix = %v", got)
	}
	if got, _ := o.Channels(ctx, "app", "x"); len(got) != 2 {
		t.Fatalf("Channels(x) = %v", got)
	}

	// Many channels: every one is listed.
	for i := 0; i < 150; i++ {
		add("many", fmt.Sprint("ch-", i), 1)
	}
	if got, _ := o.Channels(ctx, "many", "ch-1"); len(got) != 1+10+50 {
		t.Fatalf("Channels(ch-1) of 150 channels lists %d, want 61", len(got))
	}
	if got, _ := o.Channels(ctx, "many", ""); len(got) != 150 {
		t.Fatalf("Channels of 150 channels lists %d", len(got))
	}
}

func testUsers(t *testing.T, u state.Users) {
	signIn := func(app, user, sock string, want bool) {
		t.Helper()
		first, err := u.SignIn(ctx, app, user, sock)
		if err != nil || first != want {
			t.Fatalf("SignIn(%s, %s, %s) = %v, %v; want %v", app, user, sock, first, err, want)
		}
	}
	signOut := func(app, user, sock string, want bool) {
		t.Helper()
		last, err := u.SignOut(ctx, app, user, sock)
		if err != nil || last != want {
			t.Fatalf("SignOut(%s, %s, %s) = %v, %v; want %v", app, user, sock, last, err, want)
		}
	}
	online := func(app string, ids []string, want []bool) {
		t.Helper()
		got, err := u.Online(ctx, app, ids)
		if err != nil || !slices.Equal(got, want) || got == nil {
			t.Fatalf("Online(%s, %v) = %#v, %v; want %v", app, ids, got, err, want)
		}
	}

	online("app", nil, []bool{})
	signOut("app", "u1", "s1", false) // not signed in: not a "last"
	signIn("app", "u1", "s1", true)
	signIn("app", "u1", "s2", false)
	signIn("app", "u2", "s3", true)
	signIn("other", "u1", "s4", true) // apps are separate
	online("app", []string{"u1", "u2", "u3", "u1"}, []bool{true, true, false, true})

	signOut("app", "u1", "s3", false) // s3 is u2's
	signOut("app", "u1", "s1", false)
	online("app", []string{"u1"}, []bool{true})
	signOut("app", "u1", "s1", false) // twice
	signOut("app", "u1", "s2", true)
	online("app", []string{"u1", "u2"}, []bool{false, true})
	online("other", []string{"u1", "u2"}, []bool{true, false})
	signOut("app", "u1", "s2", false)
	signIn("app", "u1", "s5", true) // back online

	// Many users at once.
	ids := make([]string, 100)
	want := make([]bool, 100)
	for i := range ids {
		ids[i] = fmt.Sprint("many-", i)
		if i%3 == 0 {
			signIn("app", ids[i], "sm"+ids[i], true)
			want[i] = true
		}
	}
	online("app", ids, want)
}

// testCache runs on the real clock: TTLs are checked within a tolerance.
func testCache(t *testing.T, c state.Cache) {
	const slack = 2 * time.Second
	get := func(app, ch string) (state.CachedEvent, time.Duration, bool) {
		t.Helper()
		ev, ttl, ok, err := c.Get(ctx, app, ch)
		if err != nil {
			t.Fatalf("Get(%s, %s): %v", app, ch, err)
		}
		return ev, ttl, ok
	}
	set := func(app, ch string, ev state.CachedEvent, ttl time.Duration) {
		t.Helper()
		if err := c.Set(ctx, app, ch, ev, ttl); err != nil {
			t.Fatalf("Set(%s, %s): %v", app, ch, err)
		}
	}

	if _, _, ok := get("app", "cache-x"); ok {
		t.Fatal("Get on empty cache found something")
	}
	ev := state.CachedEvent{Event: "price", Data: `{"p":1}`}
	set("app", "cache-x", ev, 30*time.Minute)
	if got, ttl, ok := get("app", "cache-x"); !ok || got != ev || ttl > 30*time.Minute || ttl < 30*time.Minute-slack {
		t.Fatalf("Get = %+v, %v, %v; want %+v, ~30m, true", got, ttl, ok, ev)
	}
	if _, _, ok := get("other", "cache-x"); ok {
		t.Fatal("cache leaked across apps")
	}
	if _, _, ok := get("app", "cache-y"); ok {
		t.Fatal("cache leaked across channels")
	}

	// A newer event replaces the old one and restarts the TTL.
	ev2 := state.CachedEvent{Event: "price", Data: `{"p":2}`}
	set("app", "cache-x", ev2, time.Minute)
	if got, ttl, ok := get("app", "cache-x"); !ok || got != ev2 || ttl > time.Minute || ttl < time.Minute-slack {
		t.Fatalf("after replace: %+v %v %v", got, ttl, ok)
	}

	// Odd event names and data survive.
	odd := state.CachedEvent{Event: "a:b:\x00é", Data: "1:x\x00\n{}"}
	set("app", "cache-odd", odd, time.Minute)
	if got, _, ok := get("app", "cache-odd"); !ok || got != odd {
		t.Fatalf("odd event = %+v %v", got, ok)
	}
	empty := state.CachedEvent{}
	set("app", "cache-empty", empty, time.Minute)
	if got, _, ok := get("app", "cache-empty"); !ok || got != empty {
		t.Fatalf("empty event = %+v %v", got, ok)
	}

	// Entries expire.
	set("app", "cache-short", ev, 150*time.Millisecond)
	if _, _, ok := get("app", "cache-short"); !ok {
		t.Fatal("short entry not served before its expiry")
	}
	time.Sleep(300 * time.Millisecond)
	if _, _, ok := get("app", "cache-short"); ok {
		t.Fatal("entry still served after its expiry")
	}

	// Zero and negative TTLs store nothing visible, and hide an older entry.
	set("app", "cache-z", ev, 0)
	set("app", "cache-n", ev, -time.Second)
	set("app", "cache-x", ev, 0)
	for _, ch := range []string{"cache-z", "cache-n", "cache-x"} {
		if _, _, ok := get("app", ch); ok {
			t.Fatalf("%s with ttl <= 0 is served", ch)
		}
	}
}

func testLocks(t *testing.T, l state.Locks) {
	try := func(app, name string, ttl time.Duration, want bool) {
		t.Helper()
		ok, err := l.TryLock(ctx, app, name, ttl)
		if err != nil || ok != want {
			t.Fatalf("TryLock(%s, %s, %v) = %v, %v; want %v", app, name, ttl, ok, err, want)
		}
	}
	try("app", "a", time.Minute, true)
	try("app", "a", time.Minute, false)
	try("app", "b", time.Minute, true)
	try("other", "a", time.Minute, true)
	try("app", "short", 150*time.Millisecond, true)
	try("app", "short", 150*time.Millisecond, false)
	time.Sleep(300 * time.Millisecond)
	try("app", "short", time.Minute, true)
	try("app", "a", time.Minute, false)
	try("app", "zero", 0, true)
	try("app", "zero", 0, true)
}

func testConcurrent(t *testing.T, im impl, rounds int) {
	p, o, u, c := im.Presence, im.Occupancy, im.Users, im.Cache
	const workers, users = 8, 5
	const ch = "presence-c"

	var mu sync.Mutex
	added, removed := map[string]int{}, map[string]int{}
	signedIn, signedOut := map[string]int{}, map[string]int{}
	occupied, vacated := 0, 0
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := 0; r < rounds; r++ {
				uid := fmt.Sprint("u", (w+r)%users)
				sock := fmt.Sprintf("%d.%d", w, r)
				a, err := p.Join(ctx, "app", ch, member(uid, `{}`), sock, 0)
				if err != nil {
					t.Error(err)
					return
				}
				first, _ := u.SignIn(ctx, "app", uid, sock)
				n, _ := o.Add(ctx, "app", ch)
				_ = c.Set(ctx, "app", "cache-c", state.CachedEvent{Event: uid}, time.Minute)
				_, _, _, _ = c.Get(ctx, "app", "cache-c")
				_, _ = p.Members(ctx, "app", ch)
				_, _ = p.Count(ctx, "app", ch)
				_, _ = o.Channels(ctx, "app", "")
				_, _ = u.Online(ctx, "app", []string{uid})
				rm, _ := p.Leave(ctx, "app", ch, uid, sock)
				last, _ := u.SignOut(ctx, "app", uid, sock)
				left, _ := o.Remove(ctx, "app", ch)
				if left < 0 {
					t.Errorf("occupancy went negative: %d", left)
				}
				mu.Lock()
				if a {
					added[uid]++
				}
				if rm {
					removed[uid]++
				}
				if first {
					signedIn[uid]++
				}
				if last {
					signedOut[uid]++
				}
				if n == 1 {
					occupied++
				}
				if left == 0 {
					vacated++
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	// Every member_added has exactly one member_removed, likewise online/offline
	// and occupied/vacated.
	for i := 0; i < users; i++ {
		uid := fmt.Sprint("u", i)
		if added[uid] != removed[uid] || added[uid] == 0 {
			t.Errorf("%s: added %d times, removed %d times", uid, added[uid], removed[uid])
		}
		if signedIn[uid] != signedOut[uid] || signedIn[uid] == 0 {
			t.Errorf("%s: online %d times, offline %d times", uid, signedIn[uid], signedOut[uid])
		}
	}
	if occupied != vacated || occupied == 0 {
		t.Errorf("occupied %d times, vacated %d times", occupied, vacated)
	}
	if n := count(t, p, "app", ch); n != 0 {
		t.Errorf("presence Count after all left = %d", n)
	}
	if n, _ := o.Count(ctx, "app", ch); n != 0 {
		t.Errorf("occupancy after all left = %d", n)
	}
	if got, _ := u.Online(ctx, "app", []string{"u0", "u1"}); got[0] || got[1] {
		t.Errorf("users still online: %v", got)
	}
}
