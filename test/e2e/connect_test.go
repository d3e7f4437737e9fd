package e2e

import (
	"testing"
)

func TestConnectionEstablished(t *testing.T) {
	e := start(t)
	c := e.dial("/app/app-key?protocol=7&client=js&version=8.4.0&flash=false")
	f := c.expect("pusher:connection_established")
	d := f.dataMap(t)
	if d["activity_timeout"] != float64(120) {
		t.Fatalf("activity_timeout: %s", f.raw)
	}
	if f.Channel != "" || f.raw[:40] != `{"event":"pusher:connection_established"` {
		t.Fatalf("frame shape: %s", f.raw)
	}
}

func TestPingPong(t *testing.T) {
	e := start(t)
	c := e.connect("app-key")
	c.send(`{"event":"pusher:ping","data":{}}`)
	f := c.expect("pusher:pong")
	if f.raw != `{"event":"pusher:pong","data":"{}"}` {
		t.Fatalf("pong: %s", f.raw)
	}
	c.send(`{"event":"pusher:ping"}`) // Java client: no data
	c.expect("pusher:pong")
}

func TestPublicChannelEvent(t *testing.T) {
	e := start(t)
	a, b := e.connect("app-key"), e.connect("app-key")
	a.subscribe("news")
	b.subscribe("news")
	e.trigger("news", "headline", `{"text":"hi"}`)
	for _, c := range []*client{a, b} {
		f := c.expectOn("headline", "news")
		if f.dataString() != `{"text":"hi"}` {
			t.Fatalf("data: %s", f.raw)
		}
	}
}
