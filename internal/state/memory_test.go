package state

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"
)

var ctx = context.Background()

func member(id, info string) Member {
	if info == "" {
		return Member{UserID: id}
	}
	return Member{UserID: id, UserInfo: json.RawMessage(info)}
}

func mustJoin(t *testing.T, p Presence, app, ch string, m Member, sock string, max int, wantAdded bool) {
	t.Helper()
	added, err := p.Join(ctx, app, ch, m, sock, max)
	if err != nil {
		t.Fatalf("Join(%s, %s, %s): %v", ch, m.UserID, sock, err)
	}
	if added != wantAdded {
		t.Fatalf("Join(%s, %s, %s) added = %v, want %v", ch, m.UserID, sock, added, wantAdded)
	}
}

func mustLeave(t *testing.T, p Presence, app, ch, user, sock string, wantRemoved bool) {
	t.Helper()
	removed, err := p.Leave(ctx, app, ch, user, sock)
	if err != nil {
		t.Fatalf("Leave(%s, %s, %s): %v", ch, user, sock, err)
	}
	if removed != wantRemoved {
		t.Fatalf("Leave(%s, %s, %s) removed = %v, want %v", ch, user, sock, removed, wantRemoved)
	}
}

func count(t *testing.T, p Presence, app, ch string) int {
	t.Helper()
	n, err := p.Count(ctx, app, ch)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// The generic behaviour of the memory implementations is checked by the
// shared contract (contract_test.go, TestMemoryContract); these tests look at
// what only the memory implementations have: their maps and their clock.

// Empty channels and users are not kept in memory.
func TestMemoryFreesEmpty(t *testing.T) {
	p := NewMemoryPresence()
	mustJoin(t, p, "app", "presence-room", member("u1", `{"n":1}`), "s1", 100, true)
	mustJoin(t, p, "app", "presence-room", member("u1", ""), "s2", 100, false)
	mustLeave(t, p, "app", "presence-room", "u1", "s1", false)
	mustLeave(t, p, "app", "presence-room", "u1", "s2", true)
	if len(p.channels) != 0 {
		t.Fatalf("empty channel kept in memory: %v", p.channels)
	}
	// A refused join leaves nothing behind either.
	mustJoin(t, p, "app", "presence-one", member("a", ""), "s1", 1, true)
	if _, err := p.Join(ctx, "app", "presence-one", member("b", ""), "s2", 1); !errors.Is(err, ErrChannelFull) {
		t.Fatalf("Join into full channel: %v", err)
	}
	mustLeave(t, p, "app", "presence-one", "a", "s1", true)
	if len(p.channels) != 0 {
		t.Fatalf("empty channel kept in memory: %v", p.channels)
	}

	o := NewMemoryOccupancy()
	_, _ = o.Add(ctx, "app", "c")
	_, _ = o.Remove(ctx, "app", "c")
	_, _ = o.Remove(ctx, "app", "never")
	if len(o.counts) != 0 {
		t.Fatalf("vacated channel kept in memory: %v", o.counts)
	}

	u := NewMemoryUsers()
	_, _ = u.SignIn(ctx, "app", "u", "s")
	_, _ = u.SignOut(ctx, "app", "u", "s")
	if len(u.users) != 0 {
		t.Fatalf("signed-out user kept in memory: %v", u.users)
	}
}

func TestCacheSetGetExpiry(t *testing.T) {
	c := NewMemoryCache()
	now := time.Unix(1_700_000_000, 0)
	c.now = func() time.Time { return now }

	if _, _, ok, err := c.Get(ctx, "app", "cache-x"); ok || err != nil {
		t.Fatalf("Get on empty cache = %v, %v", ok, err)
	}
	ev := CachedEvent{Event: "price", Data: `{"p":1}`}
	if err := c.Set(ctx, "app", "cache-x", ev, 30*time.Minute); err != nil {
		t.Fatal(err)
	}
	got, ttl, ok, err := c.Get(ctx, "app", "cache-x")
	if err != nil || !ok || got != ev || ttl != 30*time.Minute {
		t.Fatalf("Get = %+v, %v, %v, %v; want %+v, 30m, true", got, ttl, ok, err, ev)
	}
	if _, _, ok, _ := c.Get(ctx, "other", "cache-x"); ok {
		t.Fatal("cache leaked across apps")
	}
	if _, _, ok, _ := c.Get(ctx, "app", "cache-y"); ok {
		t.Fatal("cache leaked across channels")
	}

	now = now.Add(10 * time.Minute)
	if _, ttl, ok, _ := c.Get(ctx, "app", "cache-x"); !ok || ttl != 20*time.Minute {
		t.Fatalf("after 10m: ok=%v ttl=%v, want true 20m", ok, ttl)
	}

	// A newer event replaces the old one and restarts the TTL.
	ev2 := CachedEvent{Event: "price", Data: `{"p":2}`}
	_ = c.Set(ctx, "app", "cache-x", ev2, time.Minute)
	if got, ttl, ok, _ := c.Get(ctx, "app", "cache-x"); !ok || got != ev2 || ttl != time.Minute {
		t.Fatalf("after replace: %+v %v %v", got, ttl, ok)
	}

	now = now.Add(time.Minute - time.Nanosecond)
	if _, ttl, ok, _ := c.Get(ctx, "app", "cache-x"); !ok || ttl != time.Nanosecond {
		t.Fatalf("just before expiry: ok=%v ttl=%v", ok, ttl)
	}
	now = now.Add(time.Nanosecond)
	if _, _, ok, _ := c.Get(ctx, "app", "cache-x"); ok {
		t.Fatal("entry still served at its expiry time")
	}
	if _, found := c.entries[key{"app", "cache-x"}]; found {
		t.Fatal("expired entry not dropped on read")
	}

	// Zero and negative TTLs store nothing visible.
	_ = c.Set(ctx, "app", "cache-z", ev, 0)
	_ = c.Set(ctx, "app", "cache-n", ev, -time.Second)
	for _, ch := range []string{"cache-z", "cache-n"} {
		if _, _, ok, _ := c.Get(ctx, "app", ch); ok {
			t.Fatalf("%s with ttl <= 0 is served", ch)
		}
	}
}

// Expired entries that are never read are swept by later Sets.
func TestCacheSweep(t *testing.T) {
	c := NewMemoryCache()
	now := time.Unix(1_700_000_000, 0)
	c.now = func() time.Time { return now }
	for i := 0; i < 100; i++ {
		_ = c.Set(ctx, "app", fmt.Sprint("cache-old-", i), CachedEvent{Event: "e"}, time.Second)
	}
	now = now.Add(time.Hour)
	for i := 0; i < 2048; i++ {
		_ = c.Set(ctx, "app", "cache-hot", CachedEvent{Event: "e"}, time.Hour)
	}
	c.mu.Lock()
	n := len(c.entries)
	c.mu.Unlock()
	if n != 1 {
		t.Fatalf("%d entries after the sweep, want 1 (expired ones dropped)", n)
	}
}
