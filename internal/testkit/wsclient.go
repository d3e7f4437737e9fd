// Package testkit holds helpers shared by Herald's black-box tests: a raw
// Pusher protocol WebSocket client and real-process management.
package testkit

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
)

// WSClient is a raw Pusher protocol client (protocol 7) over a real WebSocket,
// for tests that drive Herald with a server SDK and need to see exactly which
// frames reach a socket.
type WSClient struct {
	t        testing.TB
	conn     net.Conn
	r        io.Reader
	SocketID string

	wmu    sync.Mutex // serialises writes (test goroutine and pong replies)
	frames chan WSFrame
	closed chan WSClose
}

// WSFrame is one server → client message.
type WSFrame struct {
	Event   string          `json:"event"`
	Channel string          `json:"channel"`
	Data    json.RawMessage `json:"data"`
	UserID  string          `json:"user_id"`
	Raw     string          `json:"-"`
}

// WSClose is the close frame the server sent.
type WSClose struct {
	Code   int
	Reason string
}

// DataString returns data when it is a JSON string (the double-encoded form
// Herald uses for every event but pusher:error and pusher:signin_success),
// and fails the test otherwise.
func (f WSFrame) DataString(t testing.TB) string {
	t.Helper()
	var s string
	if len(f.Data) == 0 || f.Data[0] != '"' || json.Unmarshal(f.Data, &s) != nil {
		t.Fatalf("data of %s is not a JSON string: %s", f.Event, f.Raw)
	}
	return s
}

// Dial connects to app key on addr (host:port) and waits for
// pusher:connection_established.
func Dial(t testing.TB, addr, key string) *WSClient {
	t.Helper()
	return DialURL(t, "ws://"+addr+"/app/"+key+"?protocol=7&client=go-conformance&version=1.0&flash=false", ws.Dialer{})
}

// DialURL connects to a full ws:// or wss:// URL with dialer and waits for
// pusher:connection_established.
func DialURL(t testing.TB, url string, dialer ws.Dialer) *WSClient {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, br, _, err := dialer.Dial(ctx, url)
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	c := &WSClient{t: t, conn: conn, r: conn, frames: make(chan WSFrame, 1024), closed: make(chan WSClose, 1)}
	if br != nil {
		c.r = io.MultiReader(br, conn)
	}
	go c.readLoop()
	t.Cleanup(func() { conn.Close() })
	f := c.Expect("pusher:connection_established", "")
	var d struct {
		SocketID        string `json:"socket_id"`
		ActivityTimeout int    `json:"activity_timeout"`
	}
	if err := json.Unmarshal([]byte(f.DataString(t)), &d); err != nil || d.SocketID == "" || d.ActivityTimeout <= 0 {
		t.Fatalf("bad connection_established: %s", f.Raw)
	}
	c.SocketID = d.SocketID
	return c
}

func (c *WSClient) readLoop() {
	defer close(c.frames)
	for {
		h, err := ws.ReadHeader(c.r)
		if err != nil {
			return
		}
		payload := make([]byte, h.Length)
		if _, err := io.ReadFull(c.r, payload); err != nil {
			return
		}
		if h.Masked {
			ws.Cipher(payload, h.Mask, 0)
		}
		switch h.OpCode {
		case ws.OpClose:
			code, reason := ws.ParseCloseFrameData(payload)
			c.closed <- WSClose{int(code), reason}
			return
		case ws.OpPing:
			c.write(ws.OpPong, payload)
		case ws.OpText, ws.OpBinary:
			if !h.Fin {
				c.t.Errorf("server sent a fragmented message; this client does not reassemble")
				return
			}
			var f WSFrame
			if err := json.Unmarshal(payload, &f); err != nil {
				c.t.Errorf("server sent invalid JSON: %q", payload)
			}
			f.Raw = string(payload)
			c.frames <- f
		}
	}
}

func (c *WSClient) write(op ws.OpCode, b []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return wsutil.WriteClientMessage(c.conn, op, b)
}

// Send writes v (a string, []byte, or a value to marshal) as a text message.
func (c *WSClient) Send(v any) {
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
	if err := c.write(ws.OpText, b); err != nil {
		c.t.Fatalf("send: %v", err)
	}
}

// Next waits up to 5 s for the next frame.
func (c *WSClient) Next() WSFrame {
	c.t.Helper()
	select {
	case f, ok := <-c.frames:
		if !ok {
			c.t.Fatalf("socket %s: connection closed while waiting for a frame", c.SocketID)
		}
		return f
	case <-time.After(5 * time.Second):
		c.t.Fatalf("socket %s: timeout waiting for a frame", c.SocketID)
	}
	return WSFrame{}
}

// NextWithin returns the next frame, or false when none arrives within d or
// the connection closed.
func (c *WSClient) NextWithin(d time.Duration) (WSFrame, bool) {
	select {
	case f, ok := <-c.frames:
		return f, ok
	case <-time.After(d):
		return WSFrame{}, false
	}
}

// Expect waits for the next frame and checks its event and channel ("" = no
// channel field).
func (c *WSClient) Expect(event, channel string) WSFrame {
	c.t.Helper()
	f := c.Next()
	if f.Event != event || f.Channel != channel {
		c.t.Fatalf("socket %s: expected %s on %q, got %s", c.SocketID, event, channel, f.Raw)
	}
	return f
}

// ExpectEvent waits for an HTTP-API event and checks name, channel and that
// data is exactly the string the publisher sent.
func (c *WSClient) ExpectEvent(event, channel, data string) WSFrame {
	c.t.Helper()
	f := c.Expect(event, channel)
	if got := f.DataString(c.t); got != data {
		c.t.Fatalf("socket %s: %s on %s: data %q, want %q", c.SocketID, event, channel, got, data)
	}
	if f.UserID != "" {
		c.t.Fatalf("socket %s: API event carries user_id: %s", c.SocketID, f.Raw)
	}
	return f
}

// ExpectError waits for pusher:error and checks its code (0 = null).
func (c *WSClient) ExpectError(code int) string {
	c.t.Helper()
	f := c.Expect("pusher:error", "")
	var d struct {
		Code    *int   `json:"code"`
		Message string `json:"message"`
	}
	if err := json.Unmarshal(f.Data, &d); err != nil {
		c.t.Fatalf("pusher:error data is not an object: %s", f.Raw)
	}
	got := 0
	if d.Code != nil {
		got = *d.Code
	}
	if got != code || d.Message == "" {
		c.t.Fatalf("socket %s: expected pusher:error %d with a message, got %s", c.SocketID, code, f.Raw)
	}
	return d.Message
}

// ExpectClose waits for the server's close frame with code.
func (c *WSClient) ExpectClose(code int) {
	c.t.Helper()
	select {
	case ci := <-c.closed:
		if ci.Code != code {
			c.t.Fatalf("socket %s: expected close %d, got %d %q", c.SocketID, code, ci.Code, ci.Reason)
		}
	case f, ok := <-c.frames:
		if ok {
			c.t.Fatalf("socket %s: expected close %d, got frame %s", c.SocketID, code, f.Raw)
		}
		select {
		case ci := <-c.closed:
			if ci.Code != code {
				c.t.Fatalf("socket %s: expected close %d, got %d %q", c.SocketID, code, ci.Code, ci.Reason)
			}
		default:
			c.t.Fatalf("socket %s: connection dropped without a close frame, expected close %d", c.SocketID, code)
		}
	case <-time.After(5 * time.Second):
		c.t.Fatalf("socket %s: timeout waiting for close %d", c.SocketID, code)
	}
}

// Subscribe subscribes to a public channel and waits for success.
func (c *WSClient) Subscribe(channel string) {
	c.t.Helper()
	c.SendSubscribe(channel, "", "")
	f := c.Expect("pusher_internal:subscription_succeeded", channel)
	if f.DataString(c.t) != "{}" {
		c.t.Fatalf("subscription_succeeded data: %s", f.Raw)
	}
}

// SendSubscribe sends pusher:subscribe (channel_data only when non-empty).
func (c *WSClient) SendSubscribe(channel, auth, channelData string) {
	c.t.Helper()
	d := map[string]any{"channel": channel, "auth": auth}
	if channelData != "" {
		d["channel_data"] = channelData
	}
	c.Send(map[string]any{"event": "pusher:subscribe", "data": d})
}

// Unsubscribe sends pusher:unsubscribe (which has no reply).
func (c *WSClient) Unsubscribe(channel string) {
	c.t.Helper()
	c.Send(map[string]any{"event": "pusher:unsubscribe", "data": map[string]any{"channel": channel}})
}

// Ping sends pusher:ping and waits for pusher:pong: a barrier proving that
// everything sent before it has been processed.
func (c *WSClient) Ping() {
	c.t.Helper()
	c.Send(`{"event":"pusher:ping","data":{}}`)
	c.Expect("pusher:pong", "")
}

// Close sends a normal close frame and drops the connection.
func (c *WSClient) Close() {
	_ = c.write(ws.OpClose, ws.NewCloseFrameBody(ws.StatusNormalClosure, ""))
	c.conn.Close()
}

// ExpectQuiet waits d once and then checks that none of clients received a
// frame in the meantime.
func ExpectQuiet(t testing.TB, d time.Duration, clients ...*WSClient) {
	t.Helper()
	time.Sleep(d)
	for _, c := range clients {
		select {
		case f, ok := <-c.frames:
			if ok {
				t.Fatalf("socket %s: expected nothing, got %s", c.SocketID, f.Raw)
			}
			t.Fatalf("socket %s: connection closed, expected it to stay open and quiet", c.SocketID)
		default:
		}
	}
}
