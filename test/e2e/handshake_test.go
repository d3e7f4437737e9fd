package e2e

import (
	"net/http"
	"testing"
	"time"
)

// Each failed handshake check completes the upgrade, sends pusher:error with
// the code and closes with the same code (PROTOCOL.md §1.2).
func TestHandshakeRejections(t *testing.T) {
	e := start(t)
	cases := []struct {
		name, path string
		code       int
	}{
		{"path", "/app/app-key/extra", 4005},
		{"unknown app", "/app/nope?protocol=7", 4001},
		{"protocol too old", "/app/app-key?protocol=4", 4007},
		{"protocol not a number", "/app/app-key?protocol=x", 4007},
		{"disabled", "/app/off-key?protocol=7", 4003},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := e.dial(tc.path)
			c.t = t
			c.expectError(tc.code)
			c.expectClose(tc.code)
		})
	}
}

func TestMissingProtocolDefaultsTo7(t *testing.T) {
	e := start(t)
	c := e.dial("/app/app-key")
	c.expect("pusher:connection_established")
}

func TestConnectionQuota(t *testing.T) {
	e := start(t)
	e.connect("tiny-key")
	e.connect("tiny-key")
	c := e.dial("/app/tiny-key?protocol=7")
	c.expectError(4004)
	c.expectClose(4004)
	// Another app is not affected.
	e.connect("app-key")
}

func TestNonUpgradeRequests(t *testing.T) {
	e := start(t)
	resp, err := http.Get("http://" + e.addr + "/app/app-key")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 400 {
		t.Fatalf("plain GET of the websocket path: %d", resp.StatusCode)
	}
	for path, want := range map[string]int{"/healthz": 200, "/readyz": 200, "/nope": 404} {
		resp, err := http.Get("http://" + e.addr + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Fatalf("%s: %d, want %d", path, resp.StatusCode, want)
		}
	}
}

func TestSocketIDsAreUniqueAndWellFormed(t *testing.T) {
	e := start(t)
	seen := map[string]bool{}
	for i := 0; i < 20; i++ {
		c := e.connect("app-key")
		if !socketIDRe.MatchString(c.socketID) {
			t.Fatalf("socket_id %q", c.socketID)
		}
		if seen[c.socketID] {
			t.Fatalf("duplicate socket_id %q", c.socketID)
		}
		seen[c.socketID] = true
	}
}

// A silent peer is pinged after activity_timeout and closed with 4201 when it
// stays silent (tiny app: activity_timeout 1 s; test pong timeout 1.5 s).
func TestDeadPeerDetection(t *testing.T) {
	e := start(t)
	c := e.dial("/app/tiny-key?protocol=7")
	c.expect("pusher:connection_established")
	c.noPong.Store(true)
	f := c.expect("pusher:ping")
	_ = f
	c.expectError(4201)
	c.expectClose(4201)
}

// A peer that answers is never closed.
func TestLivePeerStays(t *testing.T) {
	e := start(t)
	c := e.dial("/app/tiny-key?protocol=7")
	c.expect("pusher:connection_established")
	deadline := time.Now().Add(4 * time.Second)
	for time.Now().Before(deadline) {
		f := c.expect("pusher:ping")
		_ = f
		c.send(`{"event":"pusher:pong","data":{}}`)
	}
	c.send(`{"event":"pusher:ping"}`)
	for {
		f := c.next()
		if f.Event == "pusher:pong" {
			break
		}
		if f.Event != "pusher:ping" {
			t.Fatalf("unexpected %s", f.raw)
		}
	}
}
