package redisstate

import (
	"maps"
	"testing"
	"time"

	"github.com/heraldrt/herald/internal/push"
)

// State is direct push's connection registry.
var _ push.Registry = (*State)(nil)

// wantNodes checks UserNodes. A read that follows a change made through
// another connection of the same process may still be served from the
// client cache until Redis's invalidation arrives (microseconds); across
// nodes the invalidation is sent before the write is acknowledged, so a push
// caused by a signin sees it. Hence the short poll.
func wantNodes(t *testing.T, s *State, user string, want map[string]int) {
	t.Helper()
	deadline := time.Now().Add(time.Second)
	for {
		got, err := s.UserNodes(ctx, "app", user)
		if err == nil && maps.Equal(got, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("UserNodes(%s) from %s = %v, %v; want %v", user, s.node, got, err, want)
		}
		time.Sleep(time.Millisecond)
	}
}

// The user → nodes registry follows signin and signout on every node, is
// read through the client-side cache without going stale, and loses a dead
// node's entries when the reaper removes its signed-in sockets.
func TestUserNodesRegistry(t *testing.T) {
	e := shards(t, 2)
	o := Options{NodeTimeout: time.Second, HeartbeatInterval: 200 * time.Millisecond, ReapInterval: 100 * time.Millisecond}
	A, B := node(t, e.b, "A", o), node(t, e.b, "B", o)
	wantNodes(t, A, "u1", map[string]int{})
	for _, step := range []struct {
		s    *State
		sock string
		want map[string]int
	}{
		{A, "1.1", map[string]int{"A": 1}},
		{B, "2.1", map[string]int{"A": 1, "B": 1}},
		{B, "2.2", map[string]int{"A": 1, "B": 2}},
	} {
		if _, err := step.s.Users().SignIn(ctx, "app", "u1", step.sock); err != nil {
			t.Fatal(err)
		}
		// The entry cached by the previous read is invalidated by Redis.
		wantNodes(t, A, "u1", step.want)
		wantNodes(t, B, "u1", step.want)
	}
	// A repeated signin of the same socket changes nothing.
	if _, err := B.Users().SignIn(ctx, "app", "u1", "2.2"); err != nil {
		t.Fatal(err)
	}
	wantNodes(t, B, "u1", map[string]int{"A": 1, "B": 2})
	if _, err := A.Users().SignOut(ctx, "app", "u1", "1.1"); err != nil {
		t.Fatal(err)
	}
	wantNodes(t, A, "u1", map[string]int{"B": 2})
	if _, err := A.Users().SignIn(ctx, "app", "u2", "1.2"); err != nil {
		t.Fatal(err)
	}
	// B dies with two sockets of u1: the reaper removes B from the registry.
	B.halt()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got, err := A.UserNodes(ctx, "app", "u1")
		if err == nil && len(got) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("u1 still registered on %v (%v) 5 s after B died", got, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	wantNodes(t, A, "u2", map[string]int{"A": 1})
	// Signing out after signing in leaves no key behind.
	if _, err := A.Users().SignOut(ctx, "app", "u2", "1.2"); err != nil {
		t.Fatal(err)
	}
	for _, c := range e.b.Clients {
		if keys := must(c.Do(ctx, c.B().Keys().Pattern("herald:{app:*}:un:*").Build()).AsStrSlice()); len(keys) != 0 {
			t.Fatalf("registry keys left: %v", keys)
		}
	}
}

// Socket-id tags: unique among live nodes, visible from every node, released
// by Close and expired with a dead node's heartbeat.
func TestSocketTags(t *testing.T) {
	e := shards(t, 2)
	o := Options{NodeTimeout: time.Second, HeartbeatInterval: 200 * time.Millisecond, ReapInterval: 100 * time.Millisecond}
	A, B, C := node(t, e.b, "A", o), node(t, e.b, "B", o), node(t, e.b, "C", o)
	// A range of 2 tags for 2 nodes: both get one, and they differ.
	ta := must(A.ClaimSocketTag(ctx, 2))
	tb := must(B.ClaimSocketTag(ctx, 2))
	if ta == tb || ta < 1 || ta > 2 || tb < 1 || tb > 2 {
		t.Fatalf("tags %d and %d, want 1 and 2", ta, tb)
	}
	if _, err := C.ClaimSocketTag(ctx, 2); err != ErrNoTag {
		t.Fatalf("a third node in a range of 2: %v, want ErrNoTag", err)
	}
	for tag, want := range map[uint64]string{ta: "A", tb: "B", 99: ""} {
		if got := must(C.SocketTagNode(ctx, tag)); got != want {
			t.Fatalf("tag %d is %q, want %q", tag, got, want)
		}
	}
	// Refreshed past the node timeout while alive.
	time.Sleep(1500 * time.Millisecond)
	if got := must(C.SocketTagNode(ctx, ta)); got != "A" {
		t.Fatalf("A's tag after 1.5 s: %q", got)
	}
	if err := A.Close(); err != nil {
		t.Fatal(err)
	}
	if got := must(C.SocketTagNode(ctx, ta)); got != "" {
		t.Fatalf("A's tag after Close: %q", got)
	}
	B.halt() // SIGKILL
	deadline := time.Now().Add(3 * time.Second)
	for must(C.SocketTagNode(ctx, tb)) != "" {
		if time.Now().After(deadline) {
			t.Fatal("B's tag did not expire after it died")
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The freed tags can be claimed again.
	if _, err := C.ClaimSocketTag(ctx, 2); err != nil {
		t.Fatal(err)
	}
}
