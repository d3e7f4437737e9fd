package conformance

import (
	"encoding/json"
	"net/url"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	pusher "github.com/pusher/pusher-http-go/v5"
)

// The official Go server SDK, github.com/pusher/pusher-http-go/v5 v5.1.1,
// against a real Herald process. Every case checks what reached the raw
// WebSocket subscribers (event, channel, exact data) and what must not have
// reached them within a quiet period.
//
// v5.1.1 has no TerminateUserConnections, so terminate is covered by the e2e
// suite and the pusher npm library (node/pusher-js.test.mjs) only. Webhook
// validation (client.Webhook) is in webhooks_test.go.

// quiet is how long a socket must stay silent to count as "received nothing".
const quiet = 300 * time.Millisecond

func sdkClient(h *Herald, id, key, secret string) *pusher.Client {
	return &pusher.Client{AppID: id, Key: key, Secret: secret, Host: h.Addr, Secure: false}
}

func appClient(h *Herald) *pusher.Client { return sdkClient(h, AppID, AppKey, AppSecret) }

func ptr[T any](v T) *T { return &v }

// authorizePrivate has the SDK sign a private channel for c's socket_id, from
// the form body pusher-js posts to an auth endpoint, and returns "auth".
func authorizePrivate(t *testing.T, pc *pusher.Client, c *WSClient, channel string) string {
	t.Helper()
	body := url.Values{"socket_id": {c.SocketID}, "channel_name": {channel}}.Encode()
	resp, err := pc.AuthorizePrivateChannel([]byte(body))
	if err != nil {
		t.Fatalf("AuthorizePrivateChannel: %v", err)
	}
	var r map[string]string
	if err := json.Unmarshal(resp, &r); err != nil {
		t.Fatalf("AuthorizePrivateChannel response %s: %v", resp, err)
	}
	if _, ok := r["channel_data"]; ok || !strings.HasPrefix(r["auth"], pc.Key+":") {
		t.Fatalf("AuthorizePrivateChannel response: %s", resp)
	}
	return r["auth"]
}

// authorizePresence has the SDK sign a presence channel for c and returns
// auth and channel_data.
func authorizePresence(t *testing.T, pc *pusher.Client, c *WSClient, channel string, m pusher.MemberData) (string, string) {
	t.Helper()
	body := url.Values{"socket_id": {c.SocketID}, "channel_name": {channel}}.Encode()
	resp, err := pc.AuthorizePresenceChannel([]byte(body), m)
	if err != nil {
		t.Fatalf("AuthorizePresenceChannel: %v", err)
	}
	var r map[string]string
	if err := json.Unmarshal(resp, &r); err != nil {
		t.Fatalf("AuthorizePresenceChannel response %s: %v", resp, err)
	}
	if r["channel_data"] == "" || !strings.HasPrefix(r["auth"], pc.Key+":") {
		t.Fatalf("AuthorizePresenceChannel response: %s", resp)
	}
	return r["auth"], r["channel_data"]
}

// subscribePrivate subscribes c to a private channel with the SDK's auth.
func subscribePrivate(t *testing.T, pc *pusher.Client, c *WSClient, channel string) {
	t.Helper()
	c.SendSubscribe(channel, authorizePrivate(t, pc, c, channel), "")
	if f := c.Expect("pusher_internal:subscription_succeeded", channel); f.DataString(t) != "{}" {
		t.Fatalf("private subscription_succeeded: %s", f.Raw)
	}
}

// joinPresence subscribes c to a presence channel with the SDK's auth and
// checks the member list it gets back: want maps user id → user_info (nil for
// none).
func joinPresence(t *testing.T, pc *pusher.Client, c *WSClient, channel string, m pusher.MemberData, want map[string]any) {
	t.Helper()
	a, cd := authorizePresence(t, pc, c, channel, m)
	c.SendSubscribe(channel, a, cd)
	checkPresence(t, c.Expect("pusher_internal:subscription_succeeded", channel), want)
}

// checkPresence compares presence.ids (as a set), presence.hash and
// presence.count of a subscription_succeeded frame with want.
func checkPresence(t *testing.T, f WSFrame, want map[string]any) {
	t.Helper()
	var d struct {
		Presence *struct {
			IDs   []string       `json:"ids"`
			Hash  map[string]any `json:"hash"`
			Count *int           `json:"count"`
		} `json:"presence"`
	}
	if err := json.Unmarshal([]byte(f.DataString(t)), &d); err != nil || d.Presence == nil || d.Presence.Count == nil || d.Presence.Hash == nil {
		t.Fatalf("presence subscription_succeeded without ids/hash/count: %s", f.Raw)
	}
	var wantIDs []string
	for id := range want {
		wantIDs = append(wantIDs, id)
	}
	sort.Strings(wantIDs)
	ids := append([]string(nil), d.Presence.IDs...)
	sort.Strings(ids)
	if !reflect.DeepEqual(ids, wantIDs) || *d.Presence.Count != len(want) || !reflect.DeepEqual(d.Presence.Hash, want) {
		t.Fatalf("presence members: got %s, want ids %v hash %v count %d", f.Raw, wantIDs, want, len(want))
	}
}

// expectMember checks a member_added/member_removed frame's data.
func expectMember(t *testing.T, c *WSClient, event, channel string, want map[string]any) {
	t.Helper()
	f := c.Expect(event, channel)
	var got map[string]any
	if err := json.Unmarshal([]byte(f.DataString(t)), &got); err != nil {
		t.Fatalf("%s data is not an object: %s", event, f.Raw)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("%s: got %s, want data %v", event, f.Raw, want)
	}
}

// expectAuthRejected checks Herald's refusal of a bad subscription signature
// (PROTOCOL.md §2.3): pusher:error 4009 without a channel, then the
// soketi-style pusher:subscription_error for the channel with AuthError/401.
func expectAuthRejected(t *testing.T, c *WSClient, channel string) {
	t.Helper()
	if msg := c.ExpectError(4009); !strings.Contains(msg, "Invalid signature") {
		t.Fatalf("subscription error message %q", msg)
	}
	f := c.Expect("pusher:subscription_error", channel)
	raw := []byte(f.Data)
	if len(raw) > 0 && raw[0] == '"' {
		raw = []byte(f.DataString(t))
	}
	var d struct {
		Type   string `json:"type"`
		Error  string `json:"error"`
		Status int    `json:"status"`
	}
	if err := json.Unmarshal(raw, &d); err != nil || d.Type != "AuthError" || d.Status != 401 || d.Error == "" {
		t.Fatalf("subscription_error: %s", f.Raw)
	}
}

// tamper changes the last hex digit of an auth signature.
func tamper(auth string) string {
	last := auth[len(auth)-1]
	repl := byte('0')
	if last == '0' {
		repl = '1'
	}
	return auth[:len(auth)-1] + string(repl)
}

// expectStatus checks that err is the SDK's error for an HTTP status.
func expectStatus(t *testing.T, what string, err error, status string) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: no error, want HTTP %s", what, status)
	}
	if !strings.HasPrefix(err.Error(), "Status Code: "+status+" - ") {
		t.Fatalf("%s: error %q, want the SDK's HTTP %s error", what, err, status)
	}
}

// collect reads n frames from c and indexes them by channel, failing on a
// channel seen twice (each channel must get the event exactly once).
func collect(t *testing.T, c *WSClient, n int) map[string]WSFrame {
	t.Helper()
	out := map[string]WSFrame{}
	for i := 0; i < n; i++ {
		f := c.Next()
		if _, dup := out[f.Channel]; dup {
			t.Fatalf("socket %s: second frame on %s: %s", c.SocketID, f.Channel, f.Raw)
		}
		out[f.Channel] = f
	}
	return out
}

func TestPusherHTTPGoTrigger(t *testing.T) {
	h := StartHerald(t, "")
	pc := appClient(h)
	oc := sdkClient(h, OtherID, OtherKey, OtherSecret)

	news := DialWS(t, h, AppKey)
	news.Subscribe("news")
	sports := DialWS(t, h, AppKey)
	sports.Subscribe("sports")
	otherNews := DialWS(t, h, OtherKey) // same channel name, other app
	otherNews.Subscribe("news")

	// Non-string data is JSON-encoded by the SDK and arrives as that string.
	if err := pc.Trigger("news", "breaking", map[string]any{"headline": "Herald speaks Pusher", "n": 1}); err != nil {
		t.Fatalf("Trigger: %v", err)
	}
	news.ExpectEvent("breaking", "news", `{"headline":"Herald speaks Pusher","n":1}`)
	// Strings and []byte are sent verbatim, whatever they contain.
	text := `not JSON: "quoted" \ ünïcödé ✓ <b>&amp;</b>`
	if err := pc.Trigger("news", "plain", text); err != nil {
		t.Fatalf("Trigger string: %v", err)
	}
	news.ExpectEvent("plain", "news", text)
	if err := pc.Trigger("news", "bytes", []byte(`{"list":[1,2,3],"nested":{"ok":true}}`)); err != nil {
		t.Fatalf("Trigger []byte: %v", err)
	}
	news.ExpectEvent("bytes", "news", `{"list":[1,2,3],"nested":{"ok":true}}`)
	ExpectQuiet(t, quiet, news, sports, otherNews)

	// The other app's SDK client reaches only the other app's subscriber.
	if err := oc.Trigger("news", "from-other", "B"); err != nil {
		t.Fatalf("Trigger other app: %v", err)
	}
	otherNews.ExpectEvent("from-other", "news", "B")
	ExpectQuiet(t, quiet, news, sports, otherNews)
}

func TestPusherHTTPGoTriggerMulti(t *testing.T) {
	h := StartHerald(t, "")
	pc := appClient(h)

	a := DialWS(t, h, AppKey)
	a.Subscribe("multi-a")
	b := DialWS(t, h, AppKey)
	b.Subscribe("multi-b")
	p := DialWS(t, h, AppKey)
	subscribePrivate(t, pc, p, "private-multi-c")
	all := DialWS(t, h, AppKey) // on every target channel: one frame per channel
	all.Subscribe("multi-a")
	all.Subscribe("multi-b")
	subscribePrivate(t, pc, all, "private-multi-c")
	bystander := DialWS(t, h, AppKey)
	bystander.Subscribe("multi-d")
	other := DialWS(t, h, OtherKey)
	other.Subscribe("multi-a")

	targets := []string{"multi-a", "multi-b", "private-multi-c"}
	if err := pc.TriggerMulti(targets, "fanout", map[string]string{"k": "v"}); err != nil {
		t.Fatalf("TriggerMulti: %v", err)
	}
	const data = `{"k":"v"}`
	a.ExpectEvent("fanout", "multi-a", data)
	b.ExpectEvent("fanout", "multi-b", data)
	p.ExpectEvent("fanout", "private-multi-c", data)
	got := collect(t, all, 3)
	for _, ch := range targets {
		f, ok := got[ch]
		if !ok || f.Event != "fanout" || f.DataString(t) != data {
			t.Fatalf("subscriber of all channels: %s missing or wrong: %v", ch, got)
		}
	}
	ExpectQuiet(t, quiet, a, b, p, all, bystander, other)

	// Info on a multi-channel trigger: subscription_count for non-presence
	// channels (0 for an empty one), user_count for presence.
	pres := DialWS(t, h, AppKey)
	joinPresence(t, pc, pres, "presence-multi", pusher.MemberData{UserID: "u1"}, map[string]any{"u1": nil})
	res, err := pc.TriggerMultiWithParams([]string{"multi-a", "multi-empty", "presence-multi"}, "counted", "c",
		pusher.TriggerParams{Info: ptr("user_count,subscription_count")})
	if err != nil {
		t.Fatalf("TriggerMultiWithParams info: %v", err)
	}
	a.ExpectEvent("counted", "multi-a", "c")
	all.ExpectEvent("counted", "multi-a", "c")
	pres.ExpectEvent("counted", "presence-multi", "c")
	if res == nil || len(res.Channels) != 3 {
		t.Fatalf("info response: %+v", res)
	}
	checkCounts := func(ch string, user, sub *int) {
		t.Helper()
		it, ok := res.Channels[ch]
		if !ok || !reflect.DeepEqual(it.UserCount, user) || !reflect.DeepEqual(it.SubscriptionCount, sub) {
			t.Fatalf("info for %s: %+v (user_count %v, subscription_count %v), want %v %v",
				ch, it, deref(it.UserCount), deref(it.SubscriptionCount), deref(user), deref(sub))
		}
	}
	checkCounts("multi-a", nil, ptr(2))
	checkCounts("multi-empty", nil, ptr(0))
	checkCounts("presence-multi", ptr(1), nil)
	ExpectQuiet(t, quiet, a, b, p, all, bystander, other, pres)
}

func deref(p *int) any {
	if p == nil {
		return nil
	}
	return *p
}

func TestPusherHTTPGoSocketExclusion(t *testing.T) {
	h := StartHerald(t, "")
	pc := appClient(h)

	sender := DialWS(t, h, AppKey)
	peer := DialWS(t, h, AppKey)
	for _, c := range []*WSClient{sender, peer} {
		c.Subscribe("room")
		c.Subscribe("room-2")
	}

	// TriggerWithParams: the excluded socket gets nothing, the other gets it.
	res, err := pc.TriggerWithParams("room", "said", map[string]string{"text": "hi"}, pusher.TriggerParams{SocketID: &sender.SocketID})
	if err != nil {
		t.Fatalf("TriggerWithParams: %v", err)
	}
	if res == nil || len(res.Channels) != 0 {
		t.Fatalf("TriggerWithParams without info: %+v", res)
	}
	peer.ExpectEvent("said", "room", `{"text":"hi"}`)
	ExpectQuiet(t, quiet, sender, peer)

	// TriggerMultiWithParams: excluded on every channel.
	if _, err := pc.TriggerMultiWithParams([]string{"room", "room-2"}, "said-multi", "m", pusher.TriggerParams{SocketID: &peer.SocketID}); err != nil {
		t.Fatalf("TriggerMultiWithParams: %v", err)
	}
	got := collect(t, sender, 2)
	for _, ch := range []string{"room", "room-2"} {
		if f, ok := got[ch]; !ok || f.Event != "said-multi" || f.DataString(t) != "m" {
			t.Fatalf("sender missed said-multi on %s: %v", ch, got)
		}
	}
	ExpectQuiet(t, quiet, sender, peer)

	// A well-formed socket_id that matches no socket excludes nobody.
	if _, err := pc.TriggerWithParams("room", "to-all", "x", pusher.TriggerParams{SocketID: ptr("123.456")}); err != nil {
		t.Fatalf("TriggerWithParams unknown socket: %v", err)
	}
	sender.ExpectEvent("to-all", "room", "x")
	peer.ExpectEvent("to-all", "room", "x")
	ExpectQuiet(t, quiet, sender, peer)
}

func TestPusherHTTPGoTriggerBatch(t *testing.T) {
	h := StartHerald(t, "")
	pc := appClient(h)

	x := DialWS(t, h, AppKey)
	x.Subscribe("batch-1")
	w := DialWS(t, h, AppKey)
	w.Subscribe("batch-1")
	y := DialWS(t, h, AppKey)
	y.Subscribe("batch-2")
	z := DialWS(t, h, AppKey)
	joinPresence(t, pc, z, "presence-batch", pusher.MemberData{UserID: "uz", UserInfo: map[string]string{"name": "Zed"}},
		map[string]any{"uz": map[string]any{"name": "Zed"}})
	bystander := DialWS(t, h, AppKey)
	bystander.Subscribe("batch-3")

	res, err := pc.TriggerBatch([]pusher.Event{
		{Channel: "batch-1", Name: "first", Data: map[string]int{"i": 1}},
		{Channel: "batch-2", Name: "second", Data: "two", Info: ptr("subscription_count")},
		{Channel: "presence-batch", Name: "third", Data: []byte(`{"i":3}`), Info: ptr("user_count")},
		{Channel: "batch-1", Name: "fourth", Data: "4", SocketID: &x.SocketID},
	})
	if err != nil {
		t.Fatalf("TriggerBatch: %v", err)
	}
	x.ExpectEvent("first", "batch-1", `{"i":1}`)
	w.ExpectEvent("first", "batch-1", `{"i":1}`)
	w.ExpectEvent("fourth", "batch-1", "4")
	y.ExpectEvent("second", "batch-2", "two")
	z.ExpectEvent("third", "presence-batch", `{"i":3}`)
	ExpectQuiet(t, quiet, x, w, y, z, bystander)

	// Info in a batch: index-aligned with the request, {} for items without.
	if res == nil || len(res.Batch) != 4 {
		t.Fatalf("batch info response: %+v", res)
	}
	want := []pusher.TriggerBatchChannelListItem{{}, {SubscriptionCount: ptr(1)}, {UserCount: ptr(1)}, {}}
	if !reflect.DeepEqual(res.Batch, want) {
		t.Fatalf("batch info: got %s, want %s", batchString(res.Batch), batchString(want))
	}

	// Without info the response carries no batch attributes.
	res, err = pc.TriggerBatch([]pusher.Event{
		{Channel: "batch-2", Name: "again", Data: "a"},
		{Channel: "batch-3", Name: "again", Data: "b"},
	})
	if err != nil {
		t.Fatalf("TriggerBatch without info: %v", err)
	}
	if res == nil || len(res.Batch) != 0 {
		t.Fatalf("TriggerBatch without info: %s", batchString(res.Batch))
	}
	y.ExpectEvent("again", "batch-2", "a")
	bystander.ExpectEvent("again", "batch-3", "b")
	ExpectQuiet(t, quiet, x, w, y, z, bystander)
}

func batchString(items []pusher.TriggerBatchChannelListItem) string {
	var parts []string
	for _, it := range items {
		b, _ := json.Marshal(it)
		parts = append(parts, string(b))
	}
	return "[" + strings.Join(parts, ",") + "]"
}

func TestPusherHTTPGoChannelQueries(t *testing.T) {
	h := StartHerald(t, "")
	pc := appClient(h)

	pubA1, pubA2 := DialWS(t, h, AppKey), DialWS(t, h, AppKey)
	pubA1.Subscribe("ch-a")
	pubA2.Subscribe("ch-a")
	pubB := DialWS(t, h, AppKey)
	pubB.Subscribe("ch-b")
	priv := DialWS(t, h, AppKey)
	subscribePrivate(t, pc, priv, "private-ch")
	// presence-room: u1 on two sockets, u2 on one.
	ana := pusher.MemberData{UserID: "u1", UserInfo: map[string]string{"name": "Ana"}}
	u1a, u1b, u2 := DialWS(t, h, AppKey), DialWS(t, h, AppKey), DialWS(t, h, AppKey)
	joinPresence(t, pc, u1a, "presence-room", ana, map[string]any{"u1": map[string]any{"name": "Ana"}})
	joinPresence(t, pc, u1b, "presence-room", ana, map[string]any{"u1": map[string]any{"name": "Ana"}})
	joinPresence(t, pc, u2, "presence-room", pusher.MemberData{UserID: "u2"},
		map[string]any{"u1": map[string]any{"name": "Ana"}, "u2": nil})
	for _, c := range []*WSClient{u1a, u1b} {
		expectMember(t, c, "pusher_internal:member_added", "presence-room", map[string]any{"user_id": "u2", "user_info": nil})
	}
	// Another app's channels never show up.
	other := DialWS(t, h, OtherKey)
	other.Subscribe("ch-other")

	channels := func(p pusher.ChannelsParams) map[string]pusher.ChannelListItem {
		t.Helper()
		l, err := pc.Channels(p)
		if err != nil {
			t.Fatalf("Channels(%v): %v", p, err)
		}
		return l.Channels
	}
	channel := func(name, info string) *pusher.Channel {
		t.Helper()
		var p pusher.ChannelParams
		if info != "" {
			p.Info = &info
		}
		c, err := pc.Channel(name, p)
		if err != nil {
			t.Fatalf("Channel(%s, %q): %v", name, info, err)
		}
		return c
	}
	users := func(name string) []string {
		t.Helper()
		u, err := pc.GetChannelUsers(name)
		if err != nil {
			t.Fatalf("GetChannelUsers(%s): %v", name, err)
		}
		ids := []string{}
		for _, x := range u.List {
			ids = append(ids, x.ID)
		}
		sort.Strings(ids)
		return ids
	}
	eq := func(what string, got, want any) {
		t.Helper()
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("%s: got %+v, want %+v", what, got, want)
		}
	}
	type item = pusher.ChannelListItem
	type ch = pusher.Channel

	eq("Channels()", channels(pusher.ChannelsParams{}),
		map[string]item{"ch-a": {}, "ch-b": {}, "private-ch": {}, "presence-room": {}})
	eq("Channels(ch-)", channels(pusher.ChannelsParams{FilterByPrefix: ptr("ch-")}),
		map[string]item{"ch-a": {}, "ch-b": {}})
	eq("Channels(presence-, user_count)", channels(pusher.ChannelsParams{FilterByPrefix: ptr("presence-"), Info: ptr("user_count")}),
		map[string]item{"presence-room": {UserCount: 2}})
	eq("Channels(nothing-)", channels(pusher.ChannelsParams{FilterByPrefix: ptr("nothing-")}), map[string]item{})

	eq("Channel(ch-a)", *channel("ch-a", ""), ch{Name: "ch-a", Occupied: true})
	eq("Channel(ch-a, subscription_count)", *channel("ch-a", "subscription_count"), ch{Name: "ch-a", Occupied: true, SubscriptionCount: 2})
	eq("Channel(private-ch, subscription_count)", *channel("private-ch", "subscription_count"), ch{Name: "private-ch", Occupied: true, SubscriptionCount: 1})
	eq("Channel(presence-room, user_count)", *channel("presence-room", "user_count"), ch{Name: "presence-room", Occupied: true, UserCount: 2})
	eq("Channel(unused)", *channel("unused", ""), ch{Name: "unused", Occupied: false})
	eq("GetChannelUsers", users("presence-room"), []string{"u1", "u2"})

	// u1 leaving one of two sockets changes neither the users nor the count;
	// leaving the last one removes u1.
	u1a.Unsubscribe("presence-room")
	u1a.Ping()
	ExpectQuiet(t, quiet, u1b, u2)
	eq("users after u1 left one socket", users("presence-room"), []string{"u1", "u2"})
	eq("user_count after u1 left one socket", *channel("presence-room", "user_count"), ch{Name: "presence-room", Occupied: true, UserCount: 2})
	u1b.Close()
	expectMember(t, u2, "pusher_internal:member_removed", "presence-room", map[string]any{"user_id": "u1"})
	waitUntil(t, "u1 gone from presence-room", func() bool { return reflect.DeepEqual(users("presence-room"), []string{"u2"}) })
	eq("user_count after u1 left", *channel("presence-room", "user_count"), ch{Name: "presence-room", Occupied: true, UserCount: 1})
	eq("Channels(presence-, user_count) after u1 left", channels(pusher.ChannelsParams{FilterByPrefix: ptr("presence-"), Info: ptr("user_count")}),
		map[string]item{"presence-room": {UserCount: 1}})
	pubA1.Unsubscribe("ch-a")
	pubA1.Ping()
	eq("Channel(ch-a) after one left", *channel("ch-a", "subscription_count"), ch{Name: "ch-a", Occupied: true, SubscriptionCount: 1})

	// Everybody leaves: nothing is listed and every channel reads as empty.
	for _, c := range []*WSClient{pubA2, pubB, priv, u2, u1a} {
		c.Close()
	}
	waitUntil(t, "all channels vacated", func() bool { return len(channels(pusher.ChannelsParams{})) == 0 })
	eq("Channel(ch-a) vacated", *channel("ch-a", "subscription_count"), ch{Name: "ch-a", Occupied: false, SubscriptionCount: 0})
	eq("Channel(presence-room) vacated", *channel("presence-room", "user_count"), ch{Name: "presence-room", Occupied: false, UserCount: 0})
	eq("GetChannelUsers vacated", users("presence-room"), []string{})
	eq("Channels(presence-, user_count) vacated", channels(pusher.ChannelsParams{FilterByPrefix: ptr("presence-"), Info: ptr("user_count")}), map[string]item{})

	// The other app still sees exactly its own channel.
	ol, err := sdkClient(h, OtherID, OtherKey, OtherSecret).Channels(pusher.ChannelsParams{})
	if err != nil {
		t.Fatalf("other app Channels: %v", err)
	}
	eq("other app Channels()", ol.Channels, map[string]item{"ch-other": {}})
}

// waitUntil polls cond every 20 ms for up to 5 s.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestPusherHTTPGoAuthorizePrivateChannel(t *testing.T) {
	h := StartHerald(t, "")
	pc := appClient(h)

	c := DialWS(t, h, AppKey)
	subscribePrivate(t, pc, c, "private-orders")

	// Tampered signature: refused, and the socket is not subscribed.
	bad := DialWS(t, h, AppKey)
	bad.SendSubscribe("private-orders", tamper(authorizePrivate(t, pc, bad, "private-orders")), "")
	expectAuthRejected(t, bad, "private-orders")
	// A signature made for another socket_id.
	thief := DialWS(t, h, AppKey)
	thief.SendSubscribe("private-orders", authorizePrivate(t, pc, c, "private-orders"), "")
	expectAuthRejected(t, thief, "private-orders")
	// A signature made for another channel.
	wrongCh := DialWS(t, h, AppKey)
	wrongCh.SendSubscribe("private-orders", authorizePrivate(t, pc, wrongCh, "private-other"), "")
	expectAuthRejected(t, wrongCh, "private-orders")
	// A signature from another app's SDK client (other key and secret).
	foreign := DialWS(t, h, AppKey)
	foreign.SendSubscribe("private-orders", authorizePrivate(t, sdkClient(h, OtherID, OtherKey, OtherSecret), foreign, "private-orders"), "")
	expectAuthRejected(t, foreign, "private-orders")

	if err := pc.Trigger("private-orders", "order-placed", map[string]any{"id": 7}); err != nil {
		t.Fatalf("Trigger: %v", err)
	}
	c.ExpectEvent("order-placed", "private-orders", `{"id":7}`)
	ExpectQuiet(t, quiet, c, bad, thief, wrongCh, foreign)
	ch, err := pc.Channel("private-orders", pusher.ChannelParams{Info: ptr("subscription_count")})
	if err != nil || !ch.Occupied || ch.SubscriptionCount != 1 {
		t.Fatalf("private-orders after refused subscriptions: %+v %v", ch, err)
	}
}

func TestPusherHTTPGoAuthorizePresenceChannel(t *testing.T) {
	h := StartHerald(t, "")
	pc := appClient(h)
	const room = "presence-lobby"

	ana := DialWS(t, h, AppKey)
	joinPresence(t, pc, ana, room, pusher.MemberData{UserID: "ana", UserInfo: map[string]string{"name": "Ana", "role": "admin"}},
		map[string]any{"ana": map[string]any{"name": "Ana", "role": "admin"}})

	bob := DialWS(t, h, AppKey)
	joinPresence(t, pc, bob, room, pusher.MemberData{UserID: "bob", UserInfo: map[string]string{"name": "Bob"}},
		map[string]any{"ana": map[string]any{"name": "Ana", "role": "admin"}, "bob": map[string]any{"name": "Bob"}})
	expectMember(t, ana, "pusher_internal:member_added", room, map[string]any{"user_id": "bob", "user_info": map[string]any{"name": "Bob"}})

	// Tampered channel_data (a different user_id under bob's signature) and a
	// tampered signature: both refused, nobody sees a member_added.
	mallory := DialWS(t, h, AppKey)
	a, cd := authorizePresence(t, pc, mallory, room, pusher.MemberData{UserID: "mallory"})
	mallory.SendSubscribe(room, a, strings.Replace(cd, `"mallory"`, `"ana"`, 1))
	expectAuthRejected(t, mallory, room)
	mallory.SendSubscribe(room, tamper(a), cd)
	expectAuthRejected(t, mallory, room)
	ExpectQuiet(t, quiet, ana, bob, mallory)

	// A user without user_info; then leaving sends member_removed to the others.
	carl := DialWS(t, h, AppKey)
	joinPresence(t, pc, carl, room, pusher.MemberData{UserID: "carl"}, map[string]any{
		"ana": map[string]any{"name": "Ana", "role": "admin"}, "bob": map[string]any{"name": "Bob"}, "carl": nil})
	for _, c := range []*WSClient{ana, bob} {
		expectMember(t, c, "pusher_internal:member_added", room, map[string]any{"user_id": "carl", "user_info": nil})
	}
	bob.Unsubscribe(room)
	for _, c := range []*WSClient{ana, carl} {
		expectMember(t, c, "pusher_internal:member_removed", room, map[string]any{"user_id": "bob"})
	}
	if err := pc.Trigger(room, "hello", "all"); err != nil {
		t.Fatalf("Trigger: %v", err)
	}
	ana.ExpectEvent("hello", room, "all")
	carl.ExpectEvent("hello", room, "all")
	ExpectQuiet(t, quiet, ana, bob, carl, mallory)
}

func TestPusherHTTPGoAuthenticateUserAndSendToUser(t *testing.T) {
	h := StartHerald(t, "")
	pc := appClient(h)

	signin := func(c *WSClient, userData map[string]any) (auth, ud string) {
		t.Helper()
		resp, err := pc.AuthenticateUser([]byte(url.Values{"socket_id": {c.SocketID}}.Encode()), userData)
		if err != nil {
			t.Fatalf("AuthenticateUser: %v", err)
		}
		var r map[string]string
		if err := json.Unmarshal(resp, &r); err != nil || !strings.HasPrefix(r["auth"], AppKey+":") || r["user_data"] == "" {
			t.Fatalf("AuthenticateUser response: %s", resp)
		}
		return r["auth"], r["user_data"]
	}
	send := func(c *WSClient, auth, ud string) {
		t.Helper()
		c.Send(map[string]any{"event": "pusher:signin", "data": map[string]any{"auth": auth, "user_data": ud}})
	}
	expectSignedIn := func(c *WSClient, ud string) {
		t.Helper()
		f := c.Expect("pusher:signin_success", "")
		var d struct {
			UserData string `json:"user_data"`
		}
		if err := json.Unmarshal(f.Data, &d); err != nil || d.UserData != ud {
			t.Fatalf("signin_success does not echo user_data %s: %s", ud, f.Raw)
		}
	}

	// Two sockets of u1 (one subscribed to its user channel, as pusher-js does
	// after signin; one not) and one socket of u2.
	u1a, u1b, u2 := DialWS(t, h, AppKey), DialWS(t, h, AppKey), DialWS(t, h, AppKey)
	a, ud := signin(u1a, map[string]any{"id": "u1", "user_info": map[string]any{"name": "Ana"}})
	send(u1a, a, ud)
	expectSignedIn(u1a, ud)
	u1a.Subscribe("#server-to-user-u1")
	a, ud = signin(u1b, map[string]any{"id": "u1"})
	send(u1b, a, ud)
	expectSignedIn(u1b, ud)
	a, ud = signin(u2, map[string]any{"id": "u2"})
	send(u2, a, ud)
	expectSignedIn(u2, ud)

	// Tampered user_data (claims u1 under u3's signature): refused.
	mallory := DialWS(t, h, AppKey)
	a, ud = signin(mallory, map[string]any{"id": "u3"})
	send(mallory, a, strings.Replace(ud, `"u3"`, `"u1"`, 1))
	mallory.ExpectError(4009)
	send(mallory, tamper(a), ud)
	mallory.ExpectError(4009)

	if err := pc.SendToUser("u1", "notice", map[string]string{"msg": "for u1"}); err != nil {
		t.Fatalf("SendToUser: %v", err)
	}
	u1a.ExpectEvent("notice", "#server-to-user-u1", `{"msg":"for u1"}`)
	u1b.ExpectEvent("notice", "#server-to-user-u1", `{"msg":"for u1"}`)
	ExpectQuiet(t, quiet, u1a, u1b, u2, mallory)

	if err := pc.SendToUser("u2", "notice", "for u2"); err != nil {
		t.Fatalf("SendToUser u2: %v", err)
	}
	u2.ExpectEvent("notice", "#server-to-user-u2", "for u2")
	// Nobody is signed in as u3 (mallory's signin failed).
	if err := pc.SendToUser("u3", "notice", "for u3"); err != nil {
		t.Fatalf("SendToUser u3: %v", err)
	}
	ExpectQuiet(t, quiet, u1a, u1b, u2, mallory)

	// User channels are never listed.
	l, err := pc.Channels(pusher.ChannelsParams{})
	if err != nil || len(l.Channels) != 0 {
		t.Fatalf("Channels with only user channels: %+v %v", l, err)
	}
}

func TestPusherHTTPGoErrors(t *testing.T) {
	h := StartHerald(t, "")
	pc := appClient(h)
	sub := DialWS(t, h, AppKey)
	sub.Subscribe("errors")

	// Wrong secret: 401 on writes and reads, nothing delivered.
	wrong := sdkClient(h, AppID, AppKey, "not-the-secret")
	expectStatus(t, "Trigger with wrong secret", wrong.Trigger("errors", "ev", "x"), "401")
	_, err := wrong.TriggerBatch([]pusher.Event{{Channel: "errors", Name: "ev", Data: "x"}})
	expectStatus(t, "TriggerBatch with wrong secret", err, "401")
	_, err = wrong.Channels(pusher.ChannelsParams{})
	expectStatus(t, "Channels with wrong secret", err, "401")
	_, err = wrong.Channel("errors", pusher.ChannelParams{})
	expectStatus(t, "Channel with wrong secret", err, "401")
	_, err = wrong.GetChannelUsers("presence-x")
	expectStatus(t, "GetChannelUsers with wrong secret", err, "401")
	// The other app's credentials for this app's id.
	expectStatus(t, "Trigger with other app's key", sdkClient(h, AppID, OtherKey, OtherSecret).Trigger("errors", "ev", "x"), "401")
	ExpectQuiet(t, quiet, sub)

	// Data over 10 KB: 413. The SDK refuses over 10 KB itself, so the
	// client is told the limit is higher to let the request reach Herald.
	big := sdkClient(h, AppID, AppKey, AppSecret)
	big.OverrideMaxMessagePayloadKB = 20
	expectStatus(t, "Trigger 10241 bytes", big.Trigger("errors", "big", strings.Repeat("x", 10*1024+1)), "413")
	_, err = big.TriggerBatch([]pusher.Event{
		{Channel: "errors", Name: "small", Data: "fits"},
		{Channel: "errors", Name: "big", Data: strings.Repeat("x", 10*1024+1)},
	})
	expectStatus(t, "TriggerBatch with a 10241-byte item", err, "413")
	ExpectQuiet(t, quiet, sub) // nothing of the refused batch was published
	// Exactly 10 KB is accepted and delivered intact.
	limit := strings.Repeat("y", 10*1024)
	if err := pc.Trigger("errors", "max", limit); err != nil {
		t.Fatalf("Trigger 10240 bytes: %v", err)
	}
	sub.ExpectEvent("max", "errors", limit)

	// Requests Herald refuses as invalid: 400.
	_, err = pc.Channels(pusher.ChannelsParams{Info: ptr("user_count")})
	expectStatus(t, "Channels user_count without presence- prefix", err, "400")
	_, err = pc.Channel("errors", pusher.ChannelParams{Info: ptr("user_count")})
	expectStatus(t, "Channel user_count on a public channel", err, "400")
	_, err = pc.GetChannelUsers("errors")
	expectStatus(t, "GetChannelUsers on a public channel", err, "400")
	eleven := make([]pusher.Event, 11)
	for i := range eleven {
		eleven[i] = pusher.Event{Channel: "errors", Name: "ev", Data: "x"}
	}
	_, err = pc.TriggerBatch(eleven)
	expectStatus(t, "TriggerBatch with 11 events", err, "400")
	ExpectQuiet(t, quiet, sub)
}
