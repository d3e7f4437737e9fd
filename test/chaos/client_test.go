//go:build chaos || soak

package chaos

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gobwas/ws"

	"github.com/heraldrt/herald/internal/auth"
	"github.com/heraldrt/herald/internal/testkit"
)

// A lean Pusher client for load: one goroutine per connection at most, a
// single growing read buffer, and a frame parser that keeps partial frames
// across read deadlines (so a deadline is a safe way to wake a reader).
// Connections dial from 127.0.0.2–127.0.0.9 so thousands of them (and
// thousands of reconnects) never run out of ephemeral ports.

var srcIdx atomic.Uint32

func nextSource() net.IP {
	i := srcIdx.Add(1)
	return net.IPv4(127, 0, 0, byte(2+i%8))
}

type wsConn struct {
	nc       net.Conn
	buf      []byte // received, not yet parsed: buf[start:]
	start    int
	wmu      sync.Mutex
	SocketID string
}

// closeError is the server's close frame.
type closeError struct {
	Code   int
	Reason string
}

func (e *closeError) Error() string { return fmt.Sprintf("closed by server: %d %s", e.Code, e.Reason) }

var errProtocol = errors.New("websocket protocol error")

// dialWS connects to app's key on addr and waits for
// pusher:connection_established; rcvBuf > 0 sets SO_RCVBUF before connecting
// (slow consumers use a small one so they fill up quickly).
func dialWS(ctx context.Context, addr string, rcvBuf int) (*wsConn, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	nd := net.Dialer{LocalAddr: &net.TCPAddr{IP: nextSource()}, Timeout: 3 * time.Second}
	if rcvBuf > 0 {
		nd.Control = func(_, _ string, rc syscall.RawConn) error {
			var serr error
			err := rc.Control(func(fd uintptr) {
				serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, rcvBuf)
			})
			if err != nil {
				return err
			}
			return serr
		}
	}
	d := ws.Dialer{Timeout: 5 * time.Second, NetDial: nd.DialContext}
	u := "ws://" + addr + "/app/" + app.Key + "?protocol=7&client=herald-chaos&version=1.0"
	nc, br, _, err := d.Dial(ctx, u)
	if err != nil {
		return nil, err
	}
	c := &wsConn{nc: nc, buf: make([]byte, 0, 2048)}
	if br != nil && br.Buffered() > 0 {
		b, _ := br.Peek(br.Buffered())
		c.buf = append(c.buf, b...)
		ws.PutReader(br)
	}
	dl, _ := ctx.Deadline()
	m, err := c.next(dl)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("waiting for connection_established: %w", err)
	}
	if m.Event != "pusher:connection_established" {
		nc.Close()
		return nil, fmt.Errorf("expected connection_established, got %s", m.Event)
	}
	var d2 struct {
		SocketID string `json:"socket_id"`
	}
	if err := json.Unmarshal([]byte(m.dataString()), &d2); err != nil || d2.SocketID == "" {
		nc.Close()
		return nil, fmt.Errorf("bad connection_established %s", m.Data)
	}
	c.SocketID = d2.SocketID
	return c, nil
}

// msg is one Pusher message from the server.
type msg struct {
	Event   string          `json:"event"`
	Channel string          `json:"channel"`
	Data    json.RawMessage `json:"data"`
	Serial  uint64          `json:"serial"` // history channels
}

// dataString returns data unquoted when it is a JSON string.
func (m *msg) dataString() string {
	d := m.Data
	if len(d) >= 2 && d[0] == '"' {
		var s string
		if json.Unmarshal(d, &s) == nil {
			return s
		}
	}
	return string(d)
}

// readFrame returns the next complete data frame's payload (valid until the
// next call), answering pings. A read deadline leaves partial frames intact.
func (c *wsConn) readFrame(deadline time.Time) ([]byte, error) {
	for {
		if op, payload, n, ok, err := parseFrame(c.buf[c.start:]); err != nil {
			return nil, err
		} else if ok {
			c.start += n
			switch op {
			case byte(ws.OpText), byte(ws.OpBinary):
				return payload, nil
			case byte(ws.OpPing):
				_ = c.write(ws.OpPong, append([]byte(nil), payload...))
				continue
			case byte(ws.OpClose):
				ce := &closeError{Code: 1005}
				if len(payload) >= 2 {
					ce.Code = int(binary.BigEndian.Uint16(payload))
					ce.Reason = string(payload[2:])
				}
				return nil, ce
			default:
				continue
			}
		}
		// Compact, grow, read more.
		if c.start > 0 {
			n := copy(c.buf, c.buf[c.start:])
			c.buf = c.buf[:n]
			c.start = 0
		}
		if cap(c.buf)-len(c.buf) < 1024 {
			nb := make([]byte, len(c.buf), 2*cap(c.buf)+1024)
			copy(nb, c.buf)
			c.buf = nb
		}
		_ = c.nc.SetReadDeadline(deadline)
		n, err := c.nc.Read(c.buf[len(c.buf):cap(c.buf)])
		c.buf = c.buf[:len(c.buf)+n]
		if err != nil && n == 0 {
			return nil, err
		}
	}
}

// parseFrame parses one unmasked server frame from b. Fragmented messages
// are not expected from Herald and are reported as errors.
func parseFrame(b []byte) (op byte, payload []byte, n int, ok bool, err error) {
	if len(b) < 2 {
		return 0, nil, 0, false, nil
	}
	fin := b[0]&0x80 != 0
	op = b[0] & 0x0f
	if b[1]&0x80 != 0 {
		return 0, nil, 0, false, fmt.Errorf("%w: masked server frame", errProtocol)
	}
	l := int(b[1] & 0x7f)
	h := 2
	switch l {
	case 126:
		if len(b) < 4 {
			return 0, nil, 0, false, nil
		}
		l = int(binary.BigEndian.Uint16(b[2:4]))
		h = 4
	case 127:
		if len(b) < 10 {
			return 0, nil, 0, false, nil
		}
		l = int(binary.BigEndian.Uint64(b[2:10]))
		h = 10
	}
	if len(b) < h+l {
		return 0, nil, 0, false, nil
	}
	if !fin || op == 0 {
		return 0, nil, 0, false, fmt.Errorf("%w: fragmented message", errProtocol)
	}
	return op, b[h : h+l], h + l, true, nil
}

// next returns the next Pusher message.
func (c *wsConn) next(deadline time.Time) (msg, error) {
	p, err := c.readFrame(deadline)
	if err != nil {
		return msg{}, err
	}
	var m msg
	if err := json.Unmarshal(p, &m); err != nil {
		return msg{}, fmt.Errorf("%w: invalid JSON %q", errProtocol, p)
	}
	return m, nil
}

func (c *wsConn) write(op ws.OpCode, b []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_ = c.nc.SetWriteDeadline(time.Now().Add(5 * time.Second))
	return ws.WriteFrame(c.nc, ws.MaskFrameInPlace(ws.NewFrame(op, true, b)))
}

func (c *wsConn) sendJSON(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return c.write(ws.OpText, b)
}

// subscribe sends pusher:subscribe; for presence channels userID is the
// member's id (signed here, as an app's auth endpoint would).
func (c *wsConn) subscribe(channel, userID string, extra map[string]any) error {
	d := map[string]any{"channel": channel}
	for k, v := range extra {
		d[k] = v
	}
	switch {
	case len(channel) > 9 && channel[:9] == "presence-":
		cd := `{"user_id":"` + userID + `"}`
		d["auth"] = testkit.ChannelAuth(app, c.SocketID, channel, cd)
		d["channel_data"] = cd
	case len(channel) > 8 && channel[:8] == "private-":
		d["auth"] = testkit.ChannelAuth(app, c.SocketID, channel, "")
	}
	return c.sendJSON(map[string]any{"event": "pusher:subscribe", "data": d})
}

// subscribeWait subscribes and reads until the channel's
// subscription_succeeded (or subscription_error) arrives; other messages go
// to onMsg.
func (c *wsConn) subscribeWait(channel, userID string, deadline time.Time, onMsg func(*msg)) error {
	return c.subscribeWaitData(channel, userID, nil, deadline, onMsg)
}

// subscribeWaitData is subscribeWait with extra subscribe data fields (such
// as last_serial).
func (c *wsConn) subscribeWaitData(channel, userID string, extra map[string]any, deadline time.Time, onMsg func(*msg)) error {
	if err := c.subscribe(channel, userID, extra); err != nil {
		return err
	}
	for {
		m, err := c.next(deadline)
		if err != nil {
			return err
		}
		switch {
		case m.Event == "pusher_internal:subscription_succeeded" && m.Channel == channel:
			return nil
		case m.Event == "pusher:subscription_error" && m.Channel == channel:
			return fmt.Errorf("subscription_error on %s: %s", channel, m.Data)
		}
		if onMsg != nil {
			onMsg(&m)
		}
	}
}

// closeGracefully sends a close frame and waits (bounded) for the server's
// close frame and EOF, so the server closes the TCP connection first and
// the TIME_WAIT state stays on its side.
func (c *wsConn) closeGracefully(d time.Duration) {
	_ = c.write(ws.OpClose, ws.NewCloseFrameBody(ws.StatusNormalClosure, ""))
	deadline := time.Now().Add(d)
	for {
		if _, err := c.readFrame(deadline); err != nil {
			break
		}
	}
	c.nc.Close()
}

func (c *wsConn) Close() { c.nc.Close() }

// signRequest returns the signed query string of an API request.
func signRequest(method, path string, params url.Values, body []byte) string {
	return auth.SignRequest(method, path, params, body, app.Key, app.Secret, time.Now()).Encode()
}

// eventData is the data of a test event: a unique id and the publish time.
func eventData(id uint64, t time.Time, pad int) string {
	b := make([]byte, 0, 40+pad)
	b = strconv.AppendUint(b, id, 10)
	b = append(b, ':')
	b = strconv.AppendInt(b, t.UnixNano(), 10)
	if pad > 0 {
		b = append(b, ':')
		for i := 0; i < pad; i++ {
			b = append(b, 'x')
		}
	}
	return string(b)
}

// parseEventData reads what eventData wrote from the raw JSON data string.
func parseEventData(raw []byte) (id uint64, sent int64, ok bool) {
	if len(raw) < 2 || raw[0] != '"' {
		return 0, 0, false
	}
	s := raw[1:]
	i := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		id = id*10 + uint64(s[i]-'0')
		i++
	}
	if i == 0 || i >= len(s) || s[i] != ':' {
		return 0, 0, false
	}
	i++
	j := i
	for j < len(s) && s[j] >= '0' && s[j] <= '9' {
		sent = sent*10 + int64(s[j]-'0')
		j++
	}
	return id, sent, j > i
}

// isTimeout reports a read deadline.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
