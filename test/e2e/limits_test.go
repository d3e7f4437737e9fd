package e2e

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/heraldrt/herald/internal/apps"
	"github.com/heraldrt/herald/internal/auth"
	"github.com/heraldrt/herald/internal/protocol"
	"github.com/heraldrt/herald/internal/server"
)

// Every limit a client or publisher controls, one subtest each: going past
// it gives the protocol's answer (an error code, a close code, an HTTP
// status), and afterwards the process still serves everyone: the offending
// connection when the limit keeps it open, and a fresh client of the same
// app, which subscribes and receives an API event. The defaults are in the
// README's "Limits and quotas" table and SECURITY.md.
func TestLimits(t *testing.T) {
	cfg := testConfig()
	lim := &apps.App{ID: "lim", Key: "lim-key", Secret: "lim-secret", MaxPresenceMembers: 2}
	lim.ApplyDefaults()
	cfg.Apps = append(cfg.Apps, lim)
	e := startWith(t, server.Options{Config: cfg})
	var n atomic.Int64
	// stillServing: a new connection subscribes and gets an API event, and
	// the clients given (kept open by the limit) still answer pings.
	stillServing := func(t *testing.T, open ...*client) {
		t.Helper()
		for _, c := range open {
			c.t = t
			c.send(`{"event":"pusher:ping"}`)
			c.expect("pusher:pong")
		}
		fresh := e.connect("app-key")
		fresh.t = t
		ch := "alive-" + strconv.FormatInt(n.Add(1), 10)
		fresh.subscribe(ch)
		e.trigger(ch, "ok", "still here")
		if f := fresh.expectOn("ok", ch); f.dataString() != "still here" {
			t.Fatalf("fresh client got %s", f.raw)
		}
	}
	conn := func(t *testing.T, key string) *client {
		t.Helper()
		if key == "tiny-key" && e.srv.Node().Connections("tiny") == 2 {
			// max_connections 2: wait for the previous subtest's to close.
			waitFor(t, "tiny's connections to close", func() bool { return e.srv.Node().Connections("tiny") == 0 })
		}
		c := e.connect(key)
		c.t = t
		return c
	}
	nest := func(n int) string { return strings.Repeat("[", n) + strings.Repeat("]", n) }

	t.Run("frame size (max_frame_size) closes 1009", func(t *testing.T) {
		c := conn(t, "tiny-key") // 2048
		c.send(`{"event":"pusher:ping","data":"` + strings.Repeat("x", 2100) + `"}`)
		c.expectClose(1009)
		stillServing(t)
	})
	t.Run("JSON depth of a frame gives pusher:error", func(t *testing.T) {
		c := conn(t, "app-key")
		c.send(`{"event":"pusher:subscribe","data":{"channel":"x","deep":` + nest(protocol.MaxJSONDepth) + `}}`)
		f := c.expectError(0)
		if !strings.Contains(f.raw, "nested deeper") {
			t.Fatalf("depth error: %s", f.raw)
		}
		c.send(`{"event":"pusher:subscribe","data":{"channel":"y","ok":` + nest(protocol.MaxJSONDepth-2) + `}}`)
		c.expectOn("pusher_internal:subscription_succeeded", "y")
		stillServing(t, c)
	})
	t.Run("JSON depth inside strings: data, channel_data, user_data, client events", func(t *testing.T) {
		c := conn(t, "app-key")
		deep := nest(protocol.MaxJSONDepth + 1)
		sub, _ := json.Marshal(map[string]any{"channel": "z", "deep": json.RawMessage(deep)})
		c.send(map[string]any{"event": "pusher:subscribe", "data": string(sub)})
		c.expectError(0) // data that is a string holding JSON too deep
		cd := `{"user_id":"u","user_info":` + deep + `}`
		c.send(map[string]any{"event": "pusher:subscribe", "data": map[string]any{"channel": "presence-deep",
			"auth": channelAuth("app-key", "app-secret", c.socketID, "presence-deep", cd), "channel_data": cd}})
		c.expectError(0)
		c.expectOn("pusher:subscription_error", "presence-deep")
		ud := `{"id":"u","user_info":` + deep + `}`
		c.send(map[string]any{"event": "pusher:signin", "data": map[string]any{
			"auth": "app-key:" + auth.Sign("app-secret", auth.UserString(c.socketID, ud)), "user_data": ud}})
		c.expectError(4009)
		c.subscribePrivate("private-deep")
		c.send(map[string]any{"event": "client-x", "channel": "private-deep", "data": deep})
		c.expectError(4301)
		stillServing(t, c)
	})
	t.Run("JSON depth of an API body gives 400", func(t *testing.T) {
		st, body := e.api("POST", "/events", nil, `{"name":"e","channel":"c","data":"d","x":`+nest(protocol.MaxJSONDepth)+`}`)
		if st != 400 || !strings.Contains(body, "nested deeper") {
			t.Fatalf("deep body: %d %s", st, body)
		}
		stillServing(t)
	})
	t.Run("channels per connection (max_channels_per_connection) gives 4301", func(t *testing.T) {
		c := conn(t, "tiny-key") // 3
		for _, ch := range []string{"a", "b", "c"} {
			c.subscribe(ch)
		}
		c.send(`{"event":"pusher:subscribe","data":{"channel":"d"}}`)
		c.expectError(4301)
		c.expectOn("pusher:subscription_error", "d")
		stillServing(t, c)
		c.conn.Close()
	})
	t.Run("connections per app (max_connections) closes 4004", func(t *testing.T) {
		waitFor(t, "tiny's connections to close", func() bool { return e.srv.Node().Connections("tiny") == 0 })
		a, b := conn(t, "tiny-key"), conn(t, "tiny-key") // 2
		c := e.dial("/app/tiny-key?protocol=7")
		c.t = t
		c.expectError(4004)
		c.expectClose(4004)
		stillServing(t, a, b)
		a.conn.Close()
		b.conn.Close()
	})
	t.Run("client event data (max_event_size) gives 4301", func(t *testing.T) {
		c := conn(t, "tiny-key") // 100 bytes
		c.send(map[string]any{"event": "pusher:subscribe", "data": map[string]any{
			"channel": "private-s", "auth": channelAuth("tiny-key", "tiny-secret", c.socketID, "private-s", "")}})
		c.expectOn("pusher_internal:subscription_succeeded", "private-s")
		c.send(map[string]any{"event": "client-big", "channel": "private-s", "data": strings.Repeat("x", 101)})
		c.expectError(4301)
		stillServing(t, c)
		c.conn.Close()
	})
	t.Run("API event data (max_event_size) gives 413", func(t *testing.T) {
		st, _ := e.api("POST", "/events", nil, map[string]any{"name": "e", "channel": "c", "data": strings.Repeat("x", apps.DefaultMaxEventSize+1)})
		if st != 413 {
			t.Fatalf("big event: %d", st)
		}
		stillServing(t)
	})
	t.Run("API body (1 MiB) gives 413", func(t *testing.T) {
		st, _ := e.api("POST", "/events", nil, `{"name":"e","channel":"c","data":"`+strings.Repeat("x", 1<<20)+`"}`)
		if st != 413 {
			t.Fatalf("huge body: %d", st)
		}
		stillServing(t)
	})
	t.Run("batch size (max_batch_size) gives 400", func(t *testing.T) {
		batch := make([]map[string]any, apps.DefaultMaxBatchSize+1)
		for i := range batch {
			batch[i] = map[string]any{"name": "e", "channel": "c", "data": "d"}
		}
		if st, body := e.api("POST", "/batch_events", nil, map[string]any{"batch": batch}); st != 400 {
			t.Fatalf("batch of 11: %d %s", st, body)
		}
		if st, body := e.api("POST", "/batch_events", nil, map[string]any{"batch": batch[1:]}); st != 200 {
			t.Fatalf("batch of 10: %d %s", st, body)
		}
		stillServing(t)
	})
	t.Run("channels per API event (max_channels_per_event) gives 400", func(t *testing.T) {
		chs := make([]string, apps.DefaultMaxChannelsPerEvent+1)
		for i := range chs {
			chs[i] = "c" + strconv.Itoa(i)
		}
		if st, _ := e.api("POST", "/events", nil, map[string]any{"name": "e", "channels": chs, "data": "d"}); st != 400 {
			t.Fatalf("101 channels: %d", st)
		}
		stillServing(t)
	})
	t.Run("names: channel (164) and event (200) lengths", func(t *testing.T) {
		c := conn(t, "app-key")
		c.send(map[string]any{"event": "pusher:subscribe", "data": map[string]any{"channel": strings.Repeat("c", 165)}})
		c.expectError(0)
		c.expect("pusher:subscription_error")
		c.subscribePrivate("private-names")
		c.send(map[string]any{"event": "client-" + strings.Repeat("e", 200), "channel": "private-names", "data": "{}"})
		c.expectError(4301)
		stillServing(t, c)
	})
	t.Run("presence data: members, user_info, user_id, signin user_info", func(t *testing.T) {
		c := conn(t, "app-key")
		big := `{"user_id":"x","user_info":{"b":"` + strings.Repeat("a", apps.DefaultMaxUserInfoSize) + `"}}`
		c.send(map[string]any{"event": "pusher:subscribe", "data": map[string]any{
			"channel": "presence-lim", "auth": channelAuth("app-key", "app-secret", c.socketID, "presence-lim", big), "channel_data": big}})
		c.expectError(4301)
		c.expectOn("pusher:subscription_error", "presence-lim")
		long := `{"user_id":"` + strings.Repeat("u", apps.DefaultMaxUserIDLength+1) + `"}`
		c.send(map[string]any{"event": "pusher:subscribe", "data": map[string]any{
			"channel": "presence-lim", "auth": channelAuth("app-key", "app-secret", c.socketID, "presence-lim", long), "channel_data": long}})
		c.expectError(4301)
		c.expect("pusher:subscription_error")
		ud := `{"id":"u1","user_info":{"b":"` + strings.Repeat("a", apps.DefaultMaxUserInfoSize) + `"}}`
		c.send(map[string]any{"event": "pusher:signin", "data": map[string]any{
			"auth": "app-key:" + auth.Sign("app-secret", auth.UserString(c.socketID, ud)), "user_data": ud}})
		c.expectError(4301)
		// Presence joined through signin carries the bounded user_info.
		c.signin(`{"id":"u1","user_info":{"name":"ok"}}`)
		stillServing(t, c)

		// max_presence_members ("lim": 2): a third distinct user gets 4100;
		// another socket of a member is still admitted.
		join := func(c *client, uid string) {
			cd := `{"user_id":"` + uid + `"}`
			c.send(map[string]any{"event": "pusher:subscribe", "data": map[string]any{
				"channel": "presence-full", "auth": channelAuth("lim-key", "lim-secret", c.socketID, "presence-full", cd), "channel_data": cd}})
		}
		m := []*client{conn(t, "lim-key"), conn(t, "lim-key"), conn(t, "lim-key"), conn(t, "lim-key")}
		join(m[0], "m0")
		m[0].expectOn("pusher_internal:subscription_succeeded", "presence-full")
		join(m[1], "m1")
		m[1].expectOn("pusher_internal:subscription_succeeded", "presence-full")
		m[0].expectOn("pusher_internal:member_added", "presence-full")
		join(m[2], "m2")
		m[2].expectError(4100)
		m[2].expectOn("pusher:subscription_error", "presence-full")
		join(m[3], "m1")
		m[3].expectOn("pusher_internal:subscription_succeeded", "presence-full")
		stillServing(t, m...)
	})
	t.Run("watchlist (max_watchlist) gives 4302", func(t *testing.T) {
		c := conn(t, "tiny-key") // 2
		ud := `{"id":"w","watchlist":["a","b","c"]}`
		c.send(map[string]any{"event": "pusher:signin", "data": map[string]any{
			"auth": "tiny-key:" + auth.Sign("tiny-secret", auth.UserString(c.socketID, ud)), "user_data": ud}})
		c.expect("pusher:signin_success")
		c.expectError(4302)
		c.expect("pusher_internal:watchlist_events")
		stillServing(t, c)
		c.conn.Close()
	})
	t.Run("bytes queued to a slow connection (max_queued_bytes) close it", func(t *testing.T) {
		slowStillServing(t, e, stillServing)
	})
}

// slowStillServing: a connection that stops reading is closed as a slow
// consumer once max_queued_bytes (1 MiB) is queued; the others are served.
func slowStillServing(t *testing.T, e *env, stillServing func(*testing.T, ...*client)) {
	before := e.srv.Edge().Stats().SlowConsumers
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	d := ws.Dialer{NetDial: func(ctx context.Context, network, addr string) (net.Conn, error) {
		nd := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
			return rc.Control(func(fd uintptr) { _ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
		}}
		return nd.DialContext(ctx, network, addr)
	}}
	conn, br, _, err := d.Dial(ctx, "ws://"+e.addr+"/app/app-key?protocol=7")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if br != nil {
		_, _ = io.CopyN(io.Discard, br, int64(br.Buffered()))
	}
	stalled := &client{t: t, conn: conn}
	stalled.send(`{"event":"pusher:subscribe","data":{"channel":"flood"}}`)
	data := strings.Repeat("z", 10000)
	batch := make([]map[string]any, 10)
	for i := range batch {
		batch[i] = map[string]any{"name": "big", "channel": "flood", "data": data}
	}
	deadline := time.Now().Add(20 * time.Second)
	for e.srv.Edge().Stats().SlowConsumers == before {
		if time.Now().After(deadline) {
			t.Fatal("the stalled connection was never closed")
		}
		if st, body := e.api("POST", "/batch_events", nil, map[string]any{"batch": batch}); st != 200 {
			t.Fatalf("flood: %d %s", st, body)
		}
	}
	stillServing(t)
}

// max_connections_per_ip: past it a handshake from that address is refused
// with 4100 (back off and retry); other addresses are not affected, and a
// closed connection frees its slot.
func TestMaxConnectionsPerIP(t *testing.T) {
	cfg := testConfig()
	cfg.MaxConnectionsPerIP = 2
	e := startWith(t, server.Options{Config: cfg})
	from := func(ip string) ws.Dialer {
		return ws.Dialer{NetDial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			nd := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
			return nd.DialContext(ctx, network, addr)
		}}
	}
	dialFrom := func(ip, key string) *client {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		conn, br, _, err := from(ip).Dial(ctx, "ws://"+e.addr+"/app/"+key+"?protocol=7")
		if err != nil {
			t.Fatalf("dial from %s: %v", ip, err)
		}
		c := &client{t: t, conn: conn, r: conn, msgs: make(chan frame, 1024), closed: make(chan closeInfo, 1)}
		if br != nil {
			c.r = io.MultiReader(br, conn)
		}
		go c.readLoop()
		t.Cleanup(func() { conn.Close() })
		return c
	}
	a := dialFrom("127.0.0.1", "app-key")
	a.expect("pusher:connection_established")
	b := dialFrom("127.0.0.1", "other-key") // the limit is per address, across apps
	b.expect("pusher:connection_established")
	c := dialFrom("127.0.0.1", "app-key")
	c.expectError(4100)
	c.expectClose(4100)
	d := dialFrom("127.0.0.2", "app-key")
	d.expect("pusher:connection_established")
	a.send(`{"event":"pusher:ping"}`)
	a.expect("pusher:pong")
	d.subscribe("per-ip")
	e.trigger("per-ip", "e", "x")
	d.expectOn("e", "per-ip")
	if st := e.srv.Edge().Stats().Rejected; st < 1 {
		t.Fatalf("rejected count %d", st)
	}
	// Closing one frees its slot.
	a.conn.Close()
	waitFor(t, "the closed connection to be released", func() bool { return e.srv.Node().Connections("app-id") == 1 })
	f := dialFrom("127.0.0.1", "app-key")
	f.expect("pusher:connection_established")
}
