package e2e

import (
	"encoding/json"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/heraldrt/herald/internal/auth"
)

// Tenant isolation on one node: app B ("other") holds the same channel
// names, user ids and knows app A's socket ids, and with its own key and
// secret (or with A's key or signatures) it can never read, publish to,
// list or terminate app A's channels or users, over WebSocket or the HTTP
// API. A's traffic and state are checked unchanged at the end.
func TestTenantIsolation(t *testing.T) {
	e := start(t)
	const (
		aID, aKey, aSecret = "app-id", "app-key", "app-secret"
		bID, bKey, bSecret = "other", "other-key", "other-secret"
	)
	sub := func(c *client, key, secret, ch, cd string) {
		t.Helper()
		d := map[string]any{"channel": ch, "auth": channelAuth(key, secret, c.socketID, ch, cd)}
		if cd != "" {
			d["channel_data"] = cd
		}
		c.send(map[string]any{"event": "pusher:subscribe", "data": d})
	}
	signin := func(c *client, key, secret, ud string) {
		t.Helper()
		c.send(map[string]any{"event": "pusher:signin", "data": map[string]any{
			"auth": key + ":" + auth.Sign(secret, auth.UserString(c.socketID, ud)), "user_data": ud}})
	}
	// App A: two sockets on every kind of channel, one signed in as u1.
	a1, a2 := e.connect(aKey), e.connect(aKey)
	a1.subscribe("shared")
	for _, c := range []*client{a1, a2} {
		sub(c, aKey, aSecret, "private-shared", "")
		c.expectOn("pusher_internal:subscription_succeeded", "private-shared")
	}
	sub(a1, aKey, aSecret, "presence-shared", `{"user_id":"u1","user_info":{"app":"A"}}`)
	a1.expectOn("pusher_internal:subscription_succeeded", "presence-shared")
	signin(a1, aKey, aSecret, `{"id":"u1"}`)
	a1.expect("pusher:signin_success")
	e.trigger("cache-shared", "cached", "A's cached data")

	// App B's socket.
	b1, b2 := e.connect(bKey), e.connect(bKey)

	// WebSocket: A's signatures or A's key never authorize on B's socket.
	sub(b1, aKey, aSecret, "private-shared", "")
	b1.expectError(4009)
	b1.expect("pusher:subscription_error")
	b1.send(map[string]any{"event": "pusher:subscribe", "data": map[string]any{"channel": "private-shared",
		"auth": bKey + ":" + auth.Sign(aSecret, auth.ChannelString(b1.socketID, "private-shared", ""))}})
	b1.expectError(4009)
	b1.expect("pusher:subscription_error")
	// A signature A's auth endpoint made for A's socket, replayed by B.
	b1.send(map[string]any{"event": "pusher:subscribe", "data": map[string]any{"channel": "private-shared",
		"auth": channelAuth(aKey, aSecret, a1.socketID, "private-shared", "")}})
	b1.expectError(4009)
	b1.expect("pusher:subscription_error")
	signin(b1, aKey, aSecret, `{"id":"u1"}`)
	b1.expectError(4009)
	b1.send(map[string]any{"event": "pusher:subscribe", "data": map[string]any{"channel": "#server-to-user-u1"}})
	b1.expectError(4009)
	b1.expect("pusher:subscription_error")

	// With B's own credentials B gets B's channels of the same names: empty.
	b1.subscribe("shared")
	for _, c := range []*client{b1, b2} {
		sub(c, bKey, bSecret, "private-shared", "")
		c.expectOn("pusher_internal:subscription_succeeded", "private-shared")
	}
	sub(b1, bKey, bSecret, "presence-shared", `{"user_id":"u1","user_info":{"app":"B"}}`)
	f := b1.expectOn("pusher_internal:subscription_succeeded", "presence-shared")
	if d := f.dataString(); !strings.Contains(d, `"count":1`) || strings.Contains(d, `"A"`) {
		t.Fatalf("B's presence-shared shows A's members: %s", d)
	}
	b1.send(`{"event":"pusher:subscribe","data":{"channel":"cache-shared"}}`)
	b1.expectOn("pusher_internal:subscription_succeeded", "cache-shared")
	b1.expectOn("pusher:cache_miss", "cache-shared")
	// A's u1 is online in A; in B's watchlist it is offline until B's u1 signs in.
	signin(b2, bKey, bSecret, `{"id":"watcher","watchlist":["u1"]}`)
	b2.expect("pusher:signin_success")
	if w := b2.expect("pusher_internal:watchlist_events"); !strings.Contains(w.dataString(), `"offline","user_ids":["u1"]`) {
		t.Fatalf("B's watchlist sees A's online user: %s", w.raw)
	}
	signin(b1, bKey, bSecret, `{"id":"u1"}`)
	b1.expect("pusher:signin_success")
	if w := b2.expect("pusher_internal:watchlist_events"); !strings.Contains(w.dataString(), `"online","user_ids":["u1"]`) {
		t.Fatalf("B's watcher: %s", w.raw)
	}

	// Traffic in each direction stays in its app.
	b1.send(`{"event":"client-b","channel":"private-shared","data":{"from":"B"}}`)
	b2.expectOn("client-b", "private-shared")
	a1.send(`{"event":"client-a","channel":"private-shared","data":{"from":"A"}}`)
	a2.expectOn("client-a", "private-shared")
	e.trigger("shared", "from-a", "A only")
	a1.expectOn("from-a", "shared")
	e.trigger("#server-to-user-u1", "to-u1", "A's user")
	a1.expectOn("to-u1", "#server-to-user-u1")

	// HTTP API: B's credentials on A's endpoints are refused, whatever the
	// route; A's key with B's secret too.
	aPaths := []struct{ method, path string }{
		{"POST", "/events"}, {"POST", "/batch_events"}, {"GET", "/channels"}, {"GET", "/channels/presence-shared"},
		{"GET", "/channels/presence-shared/users"}, {"GET", "/channels/cache-shared"}, {"POST", "/users/u1/terminate_connections"},
	}
	body := map[string]any{"name": "x", "channel": "shared", "data": "B"}
	for _, p := range aPaths {
		var b any
		if p.method == "POST" && strings.HasSuffix(p.path, "events") {
			b = body
			if p.path == "/batch_events" {
				b = map[string]any{"batch": []any{body}}
			}
		}
		for _, cred := range [][2]string{{bKey, bSecret}, {aKey, bSecret}, {bKey, aSecret}} {
			if st, rb := e.apiCall(aID, cred[0], cred[1], p.method, p.path, nil, b); st != 401 {
				t.Errorf("%s /apps/%s%s with key %s: %d %s, want 401", p.method, aID, p.path, cred[0], st, rb)
			}
		}
	}
	// B's own endpoints answer about B only, even with A's names and ids.
	st, rb := e.apiCall(bID, bKey, bSecret, "GET", "/channels", url.Values{"info": {"subscription_count"}}, nil)
	var list struct {
		Channels map[string]map[string]int `json:"channels"`
	}
	if st != 200 || json.Unmarshal([]byte(rb), &list) != nil {
		t.Fatalf("B's channels: %d %s", st, rb)
	}
	for name, info := range list.Channels {
		if info["subscription_count"] > 2 {
			t.Errorf("B's %s counts A's subscribers: %v", name, info)
		}
	}
	if st, rb := e.apiCall(bID, bKey, bSecret, "GET", "/channels/presence-shared/users", nil, nil); st != 200 || rb != `{"users":[{"id":"u1"}]}` {
		t.Errorf("B's presence users: %d %s", st, rb)
	}
	if st, rb := e.apiCall(bID, bKey, bSecret, "GET", "/channels/presence-shared", url.Values{"info": {"user_count"}}, nil); st != 200 || !strings.Contains(rb, `"user_count":1`) {
		t.Errorf("B's presence count: %d %s", st, rb)
	}
	if st, rb := e.apiCall(bID, bKey, bSecret, "GET", "/channels/cache-shared", url.Values{"info": {"cache"}}, nil); st != 200 || strings.Contains(rb, "A's cached") {
		t.Errorf("B's cache channel shows A's event: %d %s", st, rb)
	}
	// B publishes on the shared names, excluding A's socket id, and
	// terminates u1: only B's sockets see it.
	if st, rb := e.apiCall(bID, bKey, bSecret, "POST", "/events", nil, map[string]any{"name": "from-b", "channels": []string{"shared", "private-shared", "presence-shared", "#server-to-user-u1"}, "data": "B", "socket_id": a1.socketID}); st != 200 {
		t.Fatalf("B's publish: %d %s", st, rb)
	}
	for _, ch := range []string{"shared", "private-shared", "presence-shared", "#server-to-user-u1"} {
		b1.expectOn("from-b", ch)
	}
	b2.expectOn("from-b", "private-shared")
	if st, rb := e.apiCall(bID, bKey, bSecret, "POST", "/users/u1/terminate_connections", nil, nil); st != 200 {
		t.Fatalf("B's terminate: %d %s", st, rb)
	}
	b1.expectError(4009)
	b1.expectClose(4009)
	if w := b2.expect("pusher_internal:watchlist_events"); !strings.Contains(w.dataString(), `"offline","user_ids":["u1"]`) {
		t.Fatalf("B's watcher after B's u1 was terminated: %s", w.raw)
	}

	// A saw none of it, and A's state is intact.
	a1.expectNothing(100 * time.Millisecond)
	a2.expectNothing(0)
	a1.send(`{"event":"pusher:ping"}`)
	a1.expect("pusher:pong")
	if st, rb := e.api("GET", "/channels/presence-shared/users", nil, nil); st != 200 || rb != `{"users":[{"id":"u1"}]}` {
		t.Errorf("A's presence users: %d %s", st, rb)
	}
	if st, rb := e.api("GET", "/channels/cache-shared", url.Values{"info": {"cache"}}, nil); st != 200 || !strings.Contains(rb, "A's cached") {
		t.Errorf("A's cache: %d %s", st, rb)
	}
	if st, rb := e.api("GET", "/channels/private-shared", url.Values{"info": {"subscription_count"}}, nil); st != 200 || !strings.Contains(rb, `"subscription_count":2`) {
		t.Errorf("A's private-shared: %d %s", st, rb)
	}
	// And B still cannot reach A after its own socket was terminated.
	a1.expectNothing(50 * time.Millisecond)
	b2.expectNothing(0)
}
