// Package e2e starts Herald on a random port and speaks the raw Pusher
// protocol to it over real WebSockets, with send/expect helpers.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"github.com/heraldrt/herald/internal/apps"
	"github.com/heraldrt/herald/internal/auth"
	"github.com/heraldrt/herald/internal/edge"
	"github.com/heraldrt/herald/internal/server"
)

// testApps: "app-id" is the development app (client events on); "other" is a
// second tenant; "off" is disabled; "tiny" has tight limits.
func testConfig() *apps.Config {
	f := false
	cfg := &apps.Config{Apps: []*apps.App{
		apps.DefaultApp("app-id", "app-key", "app-secret"),
		{ID: "other", Key: "other-key", Secret: "other-secret", ClientEvents: true},
		{ID: "off", Key: "off-key", Secret: "off-secret", Enabled: &f},
		{ID: "noclient", Key: "noclient-key", Secret: "noclient-secret"},
		{ID: "tiny", Key: "tiny-key", Secret: "tiny-secret", ClientEvents: true, MaxConnections: 2,
			MaxPresenceMembers: 2, MaxFrameSize: 2048, MaxEventSize: 100, ActivityTimeout: 1,
			MaxChannelsPerConnection: 3, MaxWatchlist: 2, CacheTTL: 60},
		{ID: "limited", Key: "limited-key", Secret: "limited-secret", APIRequestsPerSecond: 3},
		{ID: "counted", Key: "counted-key", Secret: "counted-secret", SubscriptionCount: true, MaxConnections: 400},
	}}
	for _, a := range cfg.Apps {
		a.ApplyDefaults()
	}
	return cfg
}

type env struct {
	t    *testing.T
	srv  *server.Server
	addr string
}

func start(t *testing.T) *env {
	t.Helper()
	return startWith(t, server.Options{Config: testConfig()})
}

// startWith starts a server with opts on a random loopback port; the test
// timings (pong timeout, sweep) and logger are filled in when unset.
func startWith(t *testing.T, opts server.Options) *env {
	t.Helper()
	opts.Addr = "127.0.0.1:0"
	if opts.Log == nil {
		opts.Log = testLogger()
	}
	if opts.Edge == (edge.Config{}) {
		opts.Edge = edge.Config{PongTimeout: 1500 * time.Millisecond, SweepInterval: 100 * time.Millisecond}
	}
	srv, err := server.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, srv: srv, addr: srv.Addr().String()}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	return e
}

// client is one raw WebSocket connection.
type client struct {
	t        *testing.T
	conn     net.Conn
	r        io.Reader
	socketID string
	msgs     chan frame
	closed   chan closeInfo
	noPong   atomic.Bool // stop answering WebSocket pings
}

type frame struct {
	Event   string          `json:"event"`
	Channel string          `json:"channel"`
	Data    json.RawMessage `json:"data"`
	UserID  string          `json:"user_id"`
	raw     string
}

type closeInfo struct {
	code   ws.StatusCode
	reason string
}

// dataString decodes data that is a JSON string; for objects it returns the raw JSON.
func (f frame) dataString() string {
	var s string
	if json.Unmarshal(f.Data, &s) == nil {
		return s
	}
	return string(f.Data)
}

func (f frame) dataMap(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(f.dataString()), &m); err != nil {
		t.Fatalf("data of %s is not an object: %s", f.Event, f.raw)
	}
	return m
}

// dial connects to path (e.g. /app/app-key?protocol=7) without expecting anything.
func (e *env) dial(path string) *client {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, br, _, err := ws.Dial(ctx, "ws://"+e.addr+path)
	if err != nil {
		e.t.Fatalf("dial %s: %v", path, err)
	}
	c := &client{t: e.t, conn: conn, r: conn, msgs: make(chan frame, 1024), closed: make(chan closeInfo, 1)}
	if br != nil {
		c.r = io.MultiReader(br, conn)
	}
	go c.readLoop()
	e.t.Cleanup(func() { conn.Close() })
	return c
}

// connect opens a connection to app key and waits for connection_established.
func (e *env) connect(key string) *client {
	e.t.Helper()
	c := e.dial("/app/" + key + "?protocol=7&client=js&version=8.4.0&flash=false")
	f := c.expect("pusher:connection_established")
	d := f.dataMap(e.t)
	c.socketID, _ = d["socket_id"].(string)
	if c.socketID == "" {
		e.t.Fatalf("no socket_id in %s", f.raw)
	}
	return c
}

func (c *client) readLoop() {
	for {
		h, err := ws.ReadHeader(c.r)
		if err != nil {
			close(c.msgs)
			return
		}
		payload := make([]byte, h.Length)
		if _, err := io.ReadFull(c.r, payload); err != nil {
			close(c.msgs)
			return
		}
		switch h.OpCode {
		case ws.OpClose:
			code, reason := ws.ParseCloseFrameData(payload)
			c.closed <- closeInfo{code, reason}
			close(c.msgs)
			return
		case ws.OpPing:
			if !c.noPong.Load() {
				_ = wsutil.WriteClientMessage(c.conn, ws.OpPong, payload)
			}
			continue
		case ws.OpText, ws.OpBinary:
			var f frame
			if err := json.Unmarshal(payload, &f); err != nil {
				c.t.Errorf("server sent invalid JSON: %q", payload)
			}
			f.raw = string(payload)
			c.msgs <- f
		}
	}
}

// send writes a JSON text message.
func (c *client) send(v any) {
	c.t.Helper()
	var b []byte
	switch x := v.(type) {
	case string:
		b = []byte(x)
	case []byte:
		b = x
	default:
		var err error
		if b, err = json.Marshal(v); err != nil {
			c.t.Fatal(err)
		}
	}
	if err := wsutil.WriteClientMessage(c.conn, ws.OpText, b); err != nil {
		c.t.Fatalf("send: %v", err)
	}
}

// next waits for the next frame.
func (c *client) next() frame {
	c.t.Helper()
	select {
	case f, ok := <-c.msgs:
		if !ok {
			c.t.Fatalf("connection closed while waiting for a frame")
		}
		return f
	case <-time.After(5 * time.Second):
		c.t.Fatalf("timeout waiting for a frame")
	}
	return frame{}
}

// expect waits for the next frame and checks its event name.
func (c *client) expect(event string) frame {
	c.t.Helper()
	select {
	case f, ok := <-c.msgs:
		if !ok {
			c.t.Fatalf("connection closed while waiting for %s", event)
		}
		if f.Event != event {
			c.t.Fatalf("expected %s, got %s", event, f.raw)
		}
		return f
	case <-time.After(5 * time.Second):
		c.t.Fatalf("timeout waiting for %s", event)
	}
	return frame{}
}

// expectOn waits for event on channel.
func (c *client) expectOn(event, channel string) frame {
	c.t.Helper()
	f := c.expect(event)
	if f.Channel != channel {
		c.t.Fatalf("expected %s on %q, got %s", event, channel, f.raw)
	}
	return f
}

// expectError waits for pusher:error with the given code (0 = null).
func (c *client) expectError(code int) frame {
	c.t.Helper()
	f := c.expect("pusher:error")
	var d struct {
		Code    *int   `json:"code"`
		Message string `json:"message"`
	}
	if err := json.Unmarshal(f.Data, &d); err != nil {
		c.t.Fatalf("pusher:error data is not an object: %s", f.raw)
	}
	got := 0
	if d.Code != nil {
		got = *d.Code
	}
	if got != code {
		c.t.Fatalf("expected error code %d, got %s", code, f.raw)
	}
	if d.Message == "" {
		c.t.Fatalf("pusher:error without message: %s", f.raw)
	}
	return f
}

// expectNothing checks that no frame arrives for d.
func (c *client) expectNothing(d time.Duration) {
	c.t.Helper()
	select {
	case f, ok := <-c.msgs:
		if ok {
			c.t.Fatalf("expected nothing, got %s", f.raw)
		}
	case <-time.After(d):
	}
}

// expectClose waits for a close frame with code.
func (c *client) expectClose(code int) {
	c.t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		select {
		case ci := <-c.closed:
			if int(ci.code) != code {
				c.t.Fatalf("expected close %d, got %d %q", code, ci.code, ci.reason)
			}
			return
		case f, ok := <-c.msgs:
			if ok {
				c.t.Fatalf("expected close %d, got frame %s", code, f.raw)
			}
		case <-deadline:
			c.t.Fatalf("timeout waiting for close %d", code)
		}
	}
}

// subscribe subscribes to a public channel and waits for success.
func (c *client) subscribe(channel string) {
	c.t.Helper()
	c.send(map[string]any{"event": "pusher:subscribe", "data": map[string]any{"channel": channel, "auth": ""}})
	c.expectOn("pusher_internal:subscription_succeeded", channel)
}

// channelAuth returns the auth string for a private or presence channel.
func channelAuth(key, secret, socketID, channel, channelData string) string {
	return key + ":" + auth.Sign(secret, auth.ChannelString(socketID, channel, channelData))
}

// subscribePrivate subscribes with a valid signature for the dev app.
func (c *client) subscribePrivate(channel string) {
	c.t.Helper()
	c.send(map[string]any{"event": "pusher:subscribe", "data": map[string]any{
		"channel": channel, "auth": channelAuth("app-key", "app-secret", c.socketID, channel, "")}})
	c.expectOn("pusher_internal:subscription_succeeded", channel)
}

// subscribePresence joins a presence channel of the dev app and returns the
// subscription_succeeded frame.
func (c *client) subscribePresence(channel, userID string, info any) frame {
	c.t.Helper()
	cd, _ := json.Marshal(map[string]any{"user_id": userID, "user_info": info})
	c.send(map[string]any{"event": "pusher:subscribe", "data": map[string]any{
		"channel": channel, "auth": channelAuth("app-key", "app-secret", c.socketID, channel, string(cd)),
		"channel_data": string(cd)}})
	return c.expectOn("pusher_internal:subscription_succeeded", channel)
}

// signin signs the connection in as user data (JSON) for the dev app.
func (c *client) signin(userData string) {
	c.t.Helper()
	sig := auth.Sign("app-secret", auth.UserString(c.socketID, userData))
	c.send(map[string]any{"event": "pusher:signin", "data": map[string]any{"auth": "app-key:" + sig, "user_data": userData}})
	f := c.expect("pusher:signin_success")
	var d struct {
		UserData string `json:"user_data"`
	}
	if err := json.Unmarshal(f.Data, &d); err != nil || d.UserData != userData {
		c.t.Fatalf("signin_success does not echo user_data: %s", f.raw)
	}
}

// apiCall sends a signed HTTP API request for app (id, key, secret) and returns
// status and body.
func (e *env) apiCall(appID, key, secret, method, path string, params url.Values, body any) (int, string) {
	e.t.Helper()
	status, rb, _ := e.apiCallHeaders(appID, key, secret, method, path, params, body)
	return status, rb
}

// apiCallHeaders is apiCall that also returns the response headers.
func (e *env) apiCallHeaders(appID, key, secret, method, path string, params url.Values, body any) (int, string, http.Header) {
	e.t.Helper()
	var b []byte
	if body != nil {
		var err error
		if s, ok := body.(string); ok {
			b = []byte(s)
		} else if b, err = json.Marshal(body); err != nil {
			e.t.Fatal(err)
		}
	}
	full := "/apps/" + appID + path
	q := auth.SignRequest(method, full, params, b, key, secret, time.Now())
	req, err := http.NewRequest(method, "http://"+e.addr+full+"?"+q.Encode(), bytes.NewReader(b))
	if err != nil {
		e.t.Fatal(err)
	}
	if b != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	rb, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(rb), resp.Header
}

// api calls the dev app's API.
func (e *env) api(method, path string, params url.Values, body any) (int, string) {
	e.t.Helper()
	return e.apiCall("app-id", "app-key", "app-secret", method, path, params, body)
}

// trigger publishes one event through the API and checks the 200.
func (e *env) trigger(channel, event, data string) {
	e.t.Helper()
	st, body := e.api("POST", "/events", nil, map[string]any{"name": event, "channels": []string{channel}, "data": data})
	if st != 200 {
		e.t.Fatalf("trigger: %d %s", st, body)
	}
}

var socketIDRe = regexp.MustCompile(`^\d+\.\d+$`)

// waitFor polls cond until it holds or 5 s pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// testLogger logs to stderr at debug level when HERALD_TEST_LOG is set.
func testLogger() *slog.Logger {
	if os.Getenv("HERALD_TEST_LOG") == "" {
		return nil
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
}
