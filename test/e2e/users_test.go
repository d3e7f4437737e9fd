package e2e

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/heraldrt/herald/internal/auth"
)

func TestSigninAndSendToUser(t *testing.T) {
	e := start(t)
	a, a2, other := e.connect("app-key"), e.connect("app-key"), e.connect("app-key")
	a.signin(`{"id":"u1","user_info":{"name":"A"}}`)
	a2.signin(`{"id":"u1"}`)
	other.signin(`{"id":"u2"}`)
	// pusher-js subscribes to its user channel after signin.
	a.send(`{"event":"pusher:subscribe","data":{"channel":"#server-to-user-u1","auth":""}}`)
	a.expectOn("pusher_internal:subscription_succeeded", "#server-to-user-u1")
	// Delivery reaches every socket signed in as u1, subscribed or not.
	e.trigger("#server-to-user-u1", "hello", `{"x":1}`)
	for _, c := range []*client{a, a2} {
		if f := c.expectOn("hello", "#server-to-user-u1"); f.dataString() != `{"x":1}` {
			t.Fatalf("user event: %s", f.raw)
		}
	}
	other.expectNothing(150 * time.Millisecond)
	// Subscribing to another user's channel is refused.
	other.send(`{"event":"pusher:subscribe","data":{"channel":"#server-to-user-u1","auth":""}}`)
	other.expectError(4009)
	other.expectOn("pusher:subscription_error", "#server-to-user-u1")
	// User channels are not listed.
	st, body := e.api("GET", "/channels", nil, nil)
	if st != 200 || strings.Contains(body, "#") {
		t.Fatalf("channels: %d %s", st, body)
	}
}

func TestSigninFailures(t *testing.T) {
	e := start(t)
	c := e.connect("app-key")
	send := func(authStr, userData string) {
		c.send(map[string]any{"event": "pusher:signin", "data": map[string]any{"auth": authStr, "user_data": userData}})
	}
	good := func(ud string) string { return "app-key:" + auth.Sign("app-secret", auth.UserString(c.socketID, ud)) }
	send("app-key:"+strings.Repeat("0", 64), `{"id":"u"}`)
	c.expectError(4009)
	send(good(`{"name":"no id"}`), `{"name":"no id"}`)
	c.expectError(4009)
	send(good(`{"id":5}`), `{"id":5}`)
	c.expectError(4009)
	send(good(`{"id":"bad id"}`), `{"id":"bad id"}`)
	c.expectError(4009)
	// Still usable; then one user per socket.
	c.signin(`{"id":"u"}`)
	send(good(`{"id":"v"}`), `{"id":"v"}`)
	c.expectError(4009)
	c.signin(`{"id":"u"}`) // same user again is fine
}

// Presence authorized by the signed-in user (no channel_data, pusher-js ≥ 7.4).
func TestPresenceWithSignedInUser(t *testing.T) {
	e := start(t)
	c := e.connect("app-key")
	c.send(map[string]any{"event": "pusher:subscribe", "data": map[string]any{
		"channel": "presence-su", "auth": channelAuth("app-key", "app-secret", c.socketID, "presence-su", "")}})
	c.expectError(4009) // not signed in yet
	c.expect("pusher:subscription_error")
	c.signin(`{"id":"me","user_info":{"n":1}}`)
	c.send(map[string]any{"event": "pusher:subscribe", "data": map[string]any{
		"channel": "presence-su", "auth": channelAuth("app-key", "app-secret", c.socketID, "presence-su", "")}})
	f := c.expectOn("pusher_internal:subscription_succeeded", "presence-su")
	if f.dataString() != `{"presence":{"ids":["me"],"hash":{"me":{"n":1}},"count":1}}` {
		t.Fatalf("presence: %s", f.raw)
	}
}

func TestWatchlist(t *testing.T) {
	e := start(t)
	bob := e.connect("app-key")
	bob.signin(`{"id":"bob"}`)
	ana := e.connect("app-key")
	ana.signin(`{"id":"ana","watchlist":["bob","carl"]}`)
	f := ana.expect("pusher_internal:watchlist_events")
	if f.Channel != "" || f.dataString() != `{"events":[{"name":"online","user_ids":["bob"]},{"name":"offline","user_ids":["carl"]}]}` {
		t.Fatalf("initial watchlist: %s", f.raw)
	}
	carl := e.connect("app-key")
	carl.signin(`{"id":"carl"}`)
	if f := ana.expect("pusher_internal:watchlist_events"); f.dataString() != `{"events":[{"name":"online","user_ids":["carl"]}]}` {
		t.Fatalf("carl online: %s", f.raw)
	}
	// A second socket of carl changes nothing; the last one leaving sends offline.
	carl2 := e.connect("app-key")
	carl2.signin(`{"id":"carl"}`)
	ana.expectNothing(100 * time.Millisecond)
	carl.conn.Close()
	ana.expectNothing(150 * time.Millisecond)
	carl2.conn.Close()
	if f := ana.expect("pusher_internal:watchlist_events"); f.dataString() != `{"events":[{"name":"offline","user_ids":["carl"]}]}` {
		t.Fatalf("carl offline: %s", f.raw)
	}
}

func TestWatchlistLimit(t *testing.T) {
	e := start(t)
	c := e.connect("tiny-key") // max_watchlist 2
	ud := `{"id":"w","watchlist":["a","b","c"]}`
	sig := auth.Sign("tiny-secret", auth.UserString(c.socketID, ud))
	c.send(map[string]any{"event": "pusher:signin", "data": map[string]any{"auth": "tiny-key:" + sig, "user_data": ud}})
	c.expect("pusher:signin_success")
	c.expectError(4302)
	f := c.expect("pusher_internal:watchlist_events")
	var d struct {
		Events []struct {
			Name    string   `json:"name"`
			UserIDs []string `json:"user_ids"`
		} `json:"events"`
	}
	if err := json.Unmarshal([]byte(f.dataString()), &d); err != nil || len(d.Events) != 1 || len(d.Events[0].UserIDs) != 2 {
		t.Fatalf("watchlist: %s", f.raw)
	}
}

func TestTerminateConnections(t *testing.T) {
	e := start(t)
	a, a2, presenceOnly, other := e.connect("app-key"), e.connect("app-key"), e.connect("app-key"), e.connect("app-key")
	a.signin(`{"id":"u1"}`)
	a2.signin(`{"id":"u1"}`)
	presenceOnly.subscribePresence("presence-t", "u1", nil) // not signed in: untouched
	other.signin(`{"id":"u2"}`)
	st, body := e.api("POST", "/users/u1/terminate_connections", nil, map[string]any{})
	if st != 200 || body != "{}" {
		t.Fatalf("terminate: %d %s", st, body)
	}
	for _, c := range []*client{a, a2} {
		c.expectError(4009)
		c.expectClose(4009)
	}
	presenceOnly.send(`{"event":"pusher:ping"}`)
	presenceOnly.expect("pusher:pong")
	other.send(`{"event":"pusher:ping"}`)
	other.expect("pusher:pong")
	// Another app cannot terminate this app's users.
	b := e.connect("app-key")
	b.signin(`{"id":"u3"}`)
	st, _ = e.apiCall("other", "other-key", "other-secret", "POST", "/users/u3/terminate_connections", nil, map[string]any{})
	if st != 200 {
		t.Fatalf("terminate on other app: %d", st)
	}
	b.send(`{"event":"pusher:ping"}`)
	b.expect("pusher:pong")
}
