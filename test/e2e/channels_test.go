package e2e

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func TestSubscriptionSucceededShape(t *testing.T) {
	e := start(t)
	c := e.connect("app-key")
	c.send(`{"event":"pusher:subscribe","data":{"channel":"news","auth":""}}`)
	f := c.expect("pusher_internal:subscription_succeeded")
	if f.raw != `{"event":"pusher_internal:subscription_succeeded","data":"{}","channel":"news"}` {
		t.Fatalf("shape: %s", f.raw)
	}
	// Subscribe data sent as a JSON string is accepted too.
	c.send(`{"event":"pusher:subscribe","data":"{\"channel\":\"news2\"}"}`)
	c.expectOn("pusher_internal:subscription_succeeded", "news2")
	// A second subscribe succeeds again without side effects.
	c.subscribe("news")
	c.expectNothing(100 * time.Millisecond)
}

func TestUnsubscribeStopsDelivery(t *testing.T) {
	e := start(t)
	c := e.connect("app-key")
	c.subscribe("news")
	c.send(`{"event":"pusher:unsubscribe","data":{"channel":"news"}}`)
	c.expectNothing(100 * time.Millisecond) // no reply to unsubscribe
	e.trigger("news", "ev", "x")
	c.expectNothing(200 * time.Millisecond)
}

func TestPrivateChannelAuth(t *testing.T) {
	e := start(t)
	c := e.connect("app-key")
	c.subscribePrivate("private-orders")
	e.trigger("private-orders", "created", `{"id":1}`)
	if f := c.expectOn("created", "private-orders"); f.dataString() != `{"id":1}` {
		t.Fatalf("data %s", f.raw)
	}

	// Wrong signature: pusher:error 4009 (no channel) plus subscription_error with channel.
	c.send(map[string]any{"event": "pusher:subscribe", "data": map[string]any{
		"channel": "private-secret", "auth": "app-key:" + strings.Repeat("0", 64)}})
	f := c.expectError(4009)
	if !strings.Contains(f.raw, "Invalid signature") || f.Channel != "" {
		t.Fatalf("error: %s", f.raw)
	}
	se := c.expectOn("pusher:subscription_error", "private-secret")
	if se.dataMap(t)["status"] != float64(401) {
		t.Fatalf("subscription_error: %s", se.raw)
	}
	// Signature for another socket fails; a signature made with another app's secret fails.
	for _, a := range []string{
		channelAuth("app-key", "app-secret", "1.1", "private-secret", ""),
		channelAuth("app-key", "other-secret", c.socketID, "private-secret", ""),
		channelAuth("other-key", "app-secret", c.socketID, "private-secret", ""),
		"", "garbage",
	} {
		c.send(map[string]any{"event": "pusher:subscribe", "data": map[string]any{"channel": "private-secret", "auth": a}})
		c.expectError(4009)
		c.expectOn("pusher:subscription_error", "private-secret")
	}
	// The connection stays usable and was never subscribed.
	e.trigger("private-secret", "leak", "x")
	c.send(`{"event":"pusher:ping"}`)
	c.expect("pusher:pong")
}

// Private signatures include channel_data when the client sends it.
func TestPrivateChannelWithChannelData(t *testing.T) {
	e := start(t)
	c := e.connect("app-key")
	cd := `{"user_id":"7"}`
	c.send(map[string]any{"event": "pusher:subscribe", "data": map[string]any{
		"channel": "private-x", "auth": channelAuth("app-key", "app-secret", c.socketID, "private-x", cd), "channel_data": cd}})
	c.expectOn("pusher_internal:subscription_succeeded", "private-x")
}

func TestEncryptedChannelRelaysCiphertext(t *testing.T) {
	e := start(t)
	c := e.connect("app-key")
	c.subscribePrivate("private-encrypted-vault")
	payload := `{"nonce":"AAAA","ciphertext":"BBBB"}`
	e.trigger("private-encrypted-vault", "secret", payload)
	if f := c.expectOn("secret", "private-encrypted-vault"); f.dataString() != payload {
		t.Fatalf("data %s", f.raw)
	}
	// Publishing to several channels when one is encrypted is refused.
	st, body := e.api("POST", "/events", nil, map[string]any{"name": "x", "data": "y", "channels": []string{"private-encrypted-vault", "news"}})
	if st != 400 {
		t.Fatalf("multi-channel encrypted trigger: %d %s", st, body)
	}
}

func TestInvalidChannelNames(t *testing.T) {
	e := start(t)
	c := e.connect("app-key")
	for _, name := range []string{"bad name", "bad#name", strings.Repeat("a", 165), "ünïcode", "#server-to-user-", "#other"} {
		c.send(map[string]any{"event": "pusher:subscribe", "data": map[string]any{"channel": name}})
		c.expectError(0)
		c.expect("pusher:subscription_error")
	}
	c.subscribe(strings.Repeat("a", 164))
	c.send(`{"event":"pusher:subscribe","data":{}}`)
	c.expectError(0)
}

func TestMaxChannelsPerConnection(t *testing.T) {
	e := start(t)
	c := e.connect("tiny-key")
	for _, ch := range []string{"a", "b", "c"} {
		c.subscribe(ch)
	}
	c.send(`{"event":"pusher:subscribe","data":{"channel":"d"}}`)
	c.expectError(4301)
	c.expectOn("pusher:subscription_error", "d")
}

func TestPresence(t *testing.T) {
	e := start(t)
	a, b, b2 := e.connect("app-key"), e.connect("app-key"), e.connect("app-key")
	f := a.subscribePresence("presence-room", "ana", map[string]any{"name": "Ana"})
	var d struct {
		Presence struct {
			IDs   []string                   `json:"ids"`
			Hash  map[string]json.RawMessage `json:"hash"`
			Count int                        `json:"count"`
		} `json:"presence"`
	}
	if err := json.Unmarshal([]byte(f.dataString()), &d); err != nil {
		t.Fatal(err)
	}
	if d.Presence.Count != 1 || len(d.Presence.IDs) != 1 || d.Presence.IDs[0] != "ana" || string(d.Presence.Hash["ana"]) != `{"name":"Ana"}` {
		t.Fatalf("presence data: %s", f.raw)
	}
	// Bob joins with a numeric user id (normalised to a string) and no user_info.
	cd := `{"user_id":42}`
	b.send(map[string]any{"event": "pusher:subscribe", "data": map[string]any{
		"channel": "presence-room", "auth": channelAuth("app-key", "app-secret", b.socketID, "presence-room", cd), "channel_data": cd}})
	f = b.expectOn("pusher_internal:subscription_succeeded", "presence-room")
	if got := f.dataString(); got != `{"presence":{"ids":["42","ana"],"hash":{"42":null,"ana":{"name":"Ana"}},"count":2}}` {
		t.Fatalf("presence data: %s", got)
	}
	added := a.expectOn("pusher_internal:member_added", "presence-room")
	if added.dataString() != `{"user_id":"42","user_info":null}` {
		t.Fatalf("member_added: %s", added.raw)
	}
	b.expectNothing(100 * time.Millisecond) // never told about itself

	// Bob's second socket: no member_added for anyone, but b2 is told about... nothing.
	b2.send(map[string]any{"event": "pusher:subscribe", "data": map[string]any{
		"channel": "presence-room", "auth": channelAuth("app-key", "app-secret", b2.socketID, "presence-room", cd), "channel_data": cd}})
	b2.expectOn("pusher_internal:subscription_succeeded", "presence-room")
	a.expectNothing(100 * time.Millisecond)
	b.expectNothing(10 * time.Millisecond)

	// Users API lists distinct users.
	st, body := e.api("GET", "/channels/presence-room/users", nil, nil)
	if st != 200 || body != `{"users":[{"id":"42"},{"id":"ana"}]}` {
		t.Fatalf("users: %d %s", st, body)
	}
	// Bob's first socket leaves: still a member through b2.
	b.send(`{"event":"pusher:unsubscribe","data":{"channel":"presence-room"}}`)
	a.expectNothing(100 * time.Millisecond)
	// Bob's last socket disconnects: member_removed to the others.
	b2.conn.Close()
	rm := a.expectOn("pusher_internal:member_removed", "presence-room")
	if rm.dataString() != `{"user_id":"42"}` {
		t.Fatalf("member_removed: %s", rm.raw)
	}
	st, body = e.api("GET", "/channels/presence-room/users", nil, nil)
	if st != 200 || body != `{"users":[{"id":"ana"}]}` {
		t.Fatalf("users after leave: %d %s", st, body)
	}
}

func TestPresenceLimits(t *testing.T) {
	e := start(t)
	// Default app: 100 members max, user_info ≤ 1 KB, user_id ≤ 128.
	d := e.connect("app-key")
	big := `{"user_id":"x","user_info":{"b":"` + strings.Repeat("a", 1100) + `"}}`
	d.send(map[string]any{"event": "pusher:subscribe", "data": map[string]any{
		"channel": "presence-big", "auth": channelAuth("app-key", "app-secret", d.socketID, "presence-big", big), "channel_data": big}})
	d.expectError(4301)
	d.expectOn("pusher:subscription_error", "presence-big")
	long := `{"user_id":"` + strings.Repeat("u", 129) + `"}`
	d.send(map[string]any{"event": "pusher:subscribe", "data": map[string]any{
		"channel": "presence-big", "auth": channelAuth("app-key", "app-secret", d.socketID, "presence-big", long), "channel_data": long}})
	d.expectError(4301)
	d.expect("pusher:subscription_error")
	for _, bad := range []string{`not json`, `{"user_info":{}}`, `{"user_id":""}`, `{"user_id":{}}`} {
		d.send(map[string]any{"event": "pusher:subscribe", "data": map[string]any{
			"channel": "presence-big", "auth": channelAuth("app-key", "app-secret", d.socketID, "presence-big", bad), "channel_data": bad}})
		d.expectError(0)
		d.expect("pusher:subscription_error")
	}
}

func TestPresenceMemberLimit(t *testing.T) {
	e := start(t)
	var conns []*client
	for i := 0; i < 2; i++ {
		conns = append(conns, e.connect("tiny-key"))
	}
	join := func(c *client, uid string) {
		cd := `{"user_id":"` + uid + `"}`
		c.send(map[string]any{"event": "pusher:subscribe", "data": map[string]any{
			"channel": "presence-full", "auth": channelAuth("tiny-key", "tiny-secret", c.socketID, "presence-full", cd), "channel_data": cd}})
	}
	join(conns[0], "1")
	conns[0].expect("pusher_internal:subscription_succeeded")
	join(conns[1], "2")
	conns[1].expect("pusher_internal:subscription_succeeded")
	conns[0].expect("pusher_internal:member_added")
	// Third distinct user on a connection that already holds a slot: refused.
	join(conns[1], "3")
	// conns[1] is already subscribed, so this is an idempotent re-subscribe.
	conns[1].expect("pusher_internal:subscription_succeeded")
	conns[1].send(`{"event":"pusher:unsubscribe","data":{"channel":"presence-full"}}`)
	conns[0].expectOn("pusher_internal:member_removed", "presence-full")
	join(conns[1], "2")
	conns[1].expect("pusher_internal:subscription_succeeded")
	conns[0].expect("pusher_internal:member_added")
}

// presence-full on the dev app (100 members): the 101st distinct user is
// refused, a new socket of an existing member is admitted.
func TestPresenceHundredMembers(t *testing.T) {
	e := start(t)
	join := func(c *client, uid string) {
		cd := `{"user_id":"` + uid + `"}`
		c.send(map[string]any{"event": "pusher:subscribe", "data": map[string]any{
			"channel": "presence-crowd", "auth": channelAuth("app-key", "app-secret", c.socketID, "presence-crowd", cd), "channel_data": cd}})
	}
	for i := 0; i < 100; i++ {
		c := e.connect("app-key")
		join(c, strings.Repeat("u", 1)+string(rune('0'+i/10))+string(rune('0'+i%10)))
		c.expect("pusher_internal:subscription_succeeded")
	}
	late := e.connect("app-key")
	join(late, "newcomer")
	late.expectError(4100)
	se := late.expectOn("pusher:subscription_error", "presence-crowd")
	if se.dataMap(t)["type"] != "LimitReached" {
		t.Fatalf("subscription_error: %s", se.raw)
	}
	again := e.connect("app-key")
	join(again, "u00")
	again.expect("pusher_internal:subscription_succeeded")
}

func TestCacheChannels(t *testing.T) {
	e := start(t)
	c := e.connect("app-key")
	// Nothing cached yet: subscription_succeeded then cache_miss.
	c.subscribe("cache-prices")
	f := c.expectOn("pusher:cache_miss", "cache-prices")
	if f.raw != `{"event":"pusher:cache_miss","data":"{}","channel":"cache-prices"}` {
		t.Fatalf("cache_miss: %s", f.raw)
	}
	e.trigger("cache-prices", "price", `{"p":10}`)
	c.expectOn("price", "cache-prices")
	// A new subscriber gets the last event replayed after subscription_succeeded.
	d := e.connect("app-key")
	d.subscribe("cache-prices")
	if f := d.expectOn("price", "cache-prices"); f.dataString() != `{"p":10}` {
		t.Fatalf("replay: %s", f.raw)
	}
	st, body := e.api("GET", "/channels/cache-prices", map[string][]string{"info": {"cache"}}, nil)
	if st != 200 || !strings.Contains(body, `"cache":{"data":"{\"p\":10}","ttl":1800}`) {
		t.Fatalf("channel info cache: %d %s", st, body)
	}
	// Private and presence cache variants.
	c.subscribePrivate("private-cache-x")
	c.expectOn("pusher:cache_miss", "private-cache-x")
	c.subscribePrivate("private-encrypted-cache-x")
	c.expectOn("pusher:cache_miss", "private-encrypted-cache-x")
	c.subscribePresence("presence-cache-x", "u", nil)
	c.expectOn("pusher:cache_miss", "presence-cache-x")
	// Client events are never cached.
	c.send(`{"event":"client-x","channel":"private-cache-x","data":{}}`)
	d.subscribePrivate("private-cache-x")
	d.expectOn("pusher:cache_miss", "private-cache-x")
}
