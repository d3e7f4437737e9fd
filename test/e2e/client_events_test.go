package e2e

import (
	"strings"
	"testing"
	"time"
)

func TestClientEvents(t *testing.T) {
	e := start(t)
	a, b := e.connect("app-key"), e.connect("app-key")
	a.subscribePrivate("private-chat")
	b.subscribePrivate("private-chat")
	a.send(`{"event":"client-typing","channel":"private-chat","data":{"on":true}}`)
	f := b.expectOn("client-typing", "private-chat")
	if f.raw != `{"event":"client-typing","data":{"on":true},"channel":"private-chat"}` {
		t.Fatalf("relay: %s", f.raw)
	}
	a.expectNothing(150 * time.Millisecond) // never echoed

	// A forged user_id is not forwarded.
	a.send(`{"event":"client-x","channel":"private-chat","data":"s","user_id":"forged"}`)
	f = b.expectOn("client-x", "private-chat")
	if f.UserID != "" || f.dataString() != "s" {
		t.Fatalf("relay: %s", f.raw)
	}
}

func TestClientEventsOnPresenceCarryUserID(t *testing.T) {
	e := start(t)
	a, b := e.connect("app-key"), e.connect("app-key")
	a.subscribePresence("presence-chat", "ana", nil)
	b.subscribePresence("presence-chat", "bob", nil)
	a.expect("pusher_internal:member_added")
	a.send(`{"event":"client-hi","channel":"presence-chat","data":{}}`)
	f := b.expectOn("client-hi", "presence-chat")
	if f.UserID != "ana" {
		t.Fatalf("user_id: %s", f.raw)
	}
}

func TestClientEventRules(t *testing.T) {
	e := start(t)
	a := e.connect("app-key")
	a.subscribe("public")
	a.send(`{"event":"client-x","channel":"public","data":{}}`) // public channel
	a.expectError(4009)
	a.send(`{"event":"client-x","channel":"private-notjoined","data":{}}`) // not subscribed
	a.expectError(4009)
	a.subscribePrivate("private-ok")
	big := `{"event":"client-big","channel":"private-ok","data":"` + strings.Repeat("x", 10*1024) + `"}`
	a.send(big)
	a.expectError(4301)
	a.send(`{"event":"client-` + strings.Repeat("n", 200) + `","channel":"private-ok","data":{}}`)
	a.expectError(4301)

	// Disabled for the app.
	n := e.connect("noclient-key")
	n.send(map[string]any{"event": "pusher:subscribe", "data": map[string]any{
		"channel": "private-c", "auth": channelAuth("noclient-key", "noclient-secret", n.socketID, "private-c", "")}})
	n.expectOn("pusher_internal:subscription_succeeded", "private-c")
	n.send(`{"event":"client-x","channel":"private-c","data":{}}`)
	n.expectError(4301)
}

// 10 client events per second per connection; the 11th in a burst gets 4301.
func TestClientEventRateLimit(t *testing.T) {
	e := start(t)
	a, b := e.connect("app-key"), e.connect("app-key")
	a.subscribePrivate("private-rate")
	b.subscribePrivate("private-rate")
	for i := 0; i < 12; i++ {
		a.send(`{"event":"client-n","channel":"private-rate","data":{}}`)
	}
	got := 0
	deadline := time.After(2 * time.Second)
	for got < 10 {
		select {
		case f := <-b.msgs:
			if f.Event != "client-n" {
				t.Fatalf("unexpected %s", f.raw)
			}
			got++
		case <-deadline:
			t.Fatalf("received %d client events, want 10", got)
		}
	}
	a.expectError(4301)
	a.expectError(4301)
	b.expectNothing(100 * time.Millisecond)
	// Tokens come back.
	time.Sleep(250 * time.Millisecond)
	a.send(`{"event":"client-n","channel":"private-rate","data":{}}`)
	b.expectOn("client-n", "private-rate")
}

func TestMalformedFramesKeepConnection(t *testing.T) {
	e := start(t)
	c := e.connect("app-key")
	for _, m := range []string{`not json`, `[]`, `{}`, `{"event":""}`, `{"event":123}`, `"str"`, `{"event":"pusher:subscribe","data":5}`, `{"event":"pusher:unknown"}`} {
		c.send(m)
		c.expectError(0)
	}
	// Server-only and non-prefixed events from clients are ignored.
	c.send(`{"event":"pusher_internal:subscription_succeeded","channel":"x"}`)
	c.send(`{"event":"whatever","channel":"x"}`)
	c.send(`{"event":"pusher:ping"}`)
	c.expect("pusher:pong")
}

func TestFrameSizeLimit(t *testing.T) {
	e := start(t)
	c := e.connect("tiny-key") // max_frame_size 2048
	c.send(`{"event":"pusher:ping","data":"` + strings.Repeat("x", 2100) + `"}`)
	c.expectClose(1009)
	// Other connections are unaffected.
	d := e.connect("tiny-key")
	d.send(`{"event":"pusher:ping"}`)
	d.expect("pusher:pong")
}
