package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"

	"github.com/heraldrt/herald/internal/protocol"
)

// RawServer is the reference the benchmarks compare against: it accepts the
// same WebSocket connections and API calls as a Pusher server with the least
// protocol logic the tool needs (connection_established, subscribe with
// subscription_succeeded, presence member events, client events, ping) and
// writes every message to every subscriber with one plain write per socket,
// from the goroutine that handles the publish: a goroutine per connection,
// no queue, no coalescing. Signatures are not checked.
type RawServer struct {
	srv *http.Server
	ln  net.Listener

	mu       sync.RWMutex
	channels map[string]map[*rawConn]string // channel → subscribers → user id (presence)
	nextID   atomic.Uint64
	conns    sync.WaitGroup
}

type rawConn struct {
	nc  net.Conn
	id  string
	wmu sync.Mutex
	// subs is only touched by the connection's own goroutine.
	subs map[string]string
}

// NewRawServer returns a raw reference server; Serve runs it.
func NewRawServer() *RawServer {
	s := &RawServer{channels: make(map[string]map[*rawConn]string)}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /app/{key}", s.ws)
	mux.HandleFunc("POST /apps/{app}/events", s.events)
	mux.HandleFunc("POST /apps/{app}/batch_events", s.batch)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte(`{"status":"ok"}`)) })
	s.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	return s
}

// Listen binds addr.
func (s *RawServer) Listen(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	s.ln = ln
	return nil
}

// Addr returns the listening address.
func (s *RawServer) Addr() string { return s.ln.Addr().String() }

// Serve serves until Shutdown.
func (s *RawServer) Serve() error {
	err := s.srv.Serve(s.ln)
	if err == http.ErrServerClosed {
		return nil
	}
	return err
}

// Shutdown stops the server and closes every connection.
func (s *RawServer) Shutdown(ctx context.Context) error {
	err := s.srv.Shutdown(ctx)
	s.mu.Lock()
	seen := map[*rawConn]bool{}
	for _, subs := range s.channels {
		for c := range subs {
			if !seen[c] {
				seen[c] = true
				c.nc.Close()
			}
		}
	}
	s.mu.Unlock()
	return err
}

func (c *rawConn) write(frame []byte) {
	c.wmu.Lock()
	_, _ = c.nc.Write(frame)
	c.wmu.Unlock()
}

func (c *rawConn) send(payload []byte) { c.write(encodeRaw(payload)) }

func encodeRaw(payload []byte) []byte {
	h := ws.Header{Fin: true, OpCode: ws.OpText, Length: int64(len(payload))}
	b := make([]byte, 0, ws.HeaderSize(h)+len(payload))
	w := bytesWriter{&b}
	_ = ws.WriteHeader(w, h)
	return append(b, payload...)
}

type bytesWriter struct{ b *[]byte }

func (w bytesWriter) Write(p []byte) (int, error) { *w.b = append(*w.b, p...); return len(p), nil }

func (s *RawServer) ws(w http.ResponseWriter, r *http.Request) {
	nc, rw, _, err := ws.UpgradeHTTP(r, w)
	if err != nil {
		return
	}
	_ = nc.SetDeadline(time.Time{})
	id := s.nextID.Add(1)
	c := &rawConn{nc: nc, id: strconv.FormatUint(id, 10) + "." + strconv.FormatUint(id*7919%1000003, 10), subs: map[string]string{}}
	c.send(protocol.ConnectionEstablished(c.id, 120))
	s.conns.Add(1)
	defer s.conns.Done()
	s.read(c, rw.Reader)
}

func (s *RawServer) read(c *rawConn, br *bufio.Reader) {
	defer func() {
		for ch := range c.subs {
			s.leave(c, ch)
		}
		c.nc.Close()
	}()
	var payload []byte
	for {
		h, err := ws.ReadHeader(br)
		if err != nil || h.Length > 1<<20 {
			return
		}
		if int64(cap(payload)) < h.Length {
			payload = make([]byte, h.Length)
		}
		p := payload[:h.Length]
		if _, err := io.ReadFull(br, p); err != nil {
			return
		}
		if h.Masked {
			ws.Cipher(p, h.Mask, 0)
		}
		switch h.OpCode {
		case ws.OpClose:
			return
		case ws.OpPing:
			c.write(encodeFrameRaw(ws.OpPong, p))
			continue
		case ws.OpText:
			s.message(c, p)
		}
	}
}

func encodeFrameRaw(op ws.OpCode, p []byte) []byte {
	h := ws.Header{Fin: true, OpCode: op, Length: int64(len(p))}
	b := make([]byte, 0, ws.HeaderSize(h)+len(p))
	_ = ws.WriteHeader(bytesWriter{&b}, h)
	return append(b, p...)
}

type rawFrame struct {
	Event   string          `json:"event"`
	Channel string          `json:"channel"`
	Data    json.RawMessage `json:"data"`
}

func (s *RawServer) message(c *rawConn, p []byte) {
	var f rawFrame
	if json.Unmarshal(p, &f) != nil {
		return
	}
	switch {
	case f.Event == "pusher:ping":
		c.send(protocol.Pong)
	case f.Event == "pusher:subscribe":
		var d struct {
			Channel     string `json:"channel"`
			ChannelData string `json:"channel_data"`
		}
		if json.Unmarshal(dataObject(f.Data), &d) != nil || d.Channel == "" {
			return
		}
		s.join(c, d.Channel, d.ChannelData)
	case f.Event == "pusher:unsubscribe":
		var d struct {
			Channel string `json:"channel"`
		}
		if json.Unmarshal(dataObject(f.Data), &d) == nil {
			if _, ok := c.subs[d.Channel]; ok {
				s.leave(c, d.Channel)
			}
		}
	case strings.HasPrefix(f.Event, "client-"):
		if _, ok := c.subs[f.Channel]; !ok {
			return
		}
		out := protocol.AppendEventRaw(nil, f.Event, f.Channel, f.Data, "")
		s.broadcast(f.Channel, encodeRaw(out), c)
	}
}

func dataObject(d json.RawMessage) []byte {
	if len(d) > 0 && d[0] == '"' {
		var s string
		if json.Unmarshal(d, &s) == nil {
			return []byte(s)
		}
	}
	return d
}

type rawMember struct {
	UserID   json.RawMessage `json:"user_id"`
	UserInfo json.RawMessage `json:"user_info"`
}

func (s *RawServer) join(c *rawConn, channel, channelData string) {
	userID := ""
	var info json.RawMessage
	presence := strings.HasPrefix(channel, "presence-")
	if presence {
		var m rawMember
		_ = json.Unmarshal([]byte(channelData), &m)
		var id string
		if json.Unmarshal(m.UserID, &id) != nil {
			id = string(m.UserID)
		}
		userID, info = id, m.UserInfo
		if userID == "" {
			userID = c.id
		}
	}
	s.mu.Lock()
	subs := s.channels[channel]
	if subs == nil {
		subs = map[*rawConn]string{}
		s.channels[channel] = subs
	}
	newMember := true
	for _, u := range subs {
		if presence && u == userID {
			newMember = false
		}
	}
	subs[c] = userID
	var members []string
	if presence {
		seen := map[string]bool{}
		for _, u := range subs {
			if !seen[u] {
				seen[u] = true
				members = append(members, u)
			}
		}
	}
	s.mu.Unlock()
	c.subs[channel] = userID
	data := "{}"
	if presence {
		var b strings.Builder
		b.WriteString(`{"presence":{"ids":[`)
		for i, m := range members {
			if i > 0 {
				b.WriteByte(',')
			}
			b.Write(protocol.AppendString(nil, m))
		}
		b.WriteString(`],"hash":{},"count":` + strconv.Itoa(len(members)) + `}}`)
		data = b.String()
	}
	c.send(protocol.Event("pusher_internal:subscription_succeeded", channel, data))
	if presence && newMember {
		if len(info) == 0 {
			info = json.RawMessage("null")
		}
		d := `{"user_id":` + string(protocol.AppendString(nil, userID)) + `,"user_info":` + string(info) + `}`
		s.broadcast(channel, encodeRaw(protocol.Event("pusher_internal:member_added", channel, d)), c)
	}
}

func (s *RawServer) leave(c *rawConn, channel string) {
	userID := c.subs[channel]
	delete(c.subs, channel)
	s.mu.Lock()
	subs := s.channels[channel]
	delete(subs, c)
	gone := strings.HasPrefix(channel, "presence-")
	for _, u := range subs {
		if u == userID {
			gone = false
		}
	}
	if len(subs) == 0 {
		delete(s.channels, channel)
	}
	s.mu.Unlock()
	if gone {
		d := `{"user_id":` + string(protocol.AppendString(nil, userID)) + `}`
		s.broadcast(channel, encodeRaw(protocol.Event("pusher_internal:member_removed", channel, d)), c)
	}
}

// broadcast writes frame to every subscriber of channel but except, one
// plain write each, from the calling goroutine.
func (s *RawServer) broadcast(channel string, frame []byte, except *rawConn) int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	n := 0
	for c := range s.channels[channel] {
		if c != except {
			c.write(frame)
			n++
		}
	}
	return n
}

type rawEvent struct {
	Name     string          `json:"name"`
	Data     json.RawMessage `json:"data"`
	Channel  string          `json:"channel"`
	Channels []string        `json:"channels"`
}

func (e *rawEvent) publish(s *RawServer) {
	var data string
	if json.Unmarshal(e.Data, &data) != nil {
		data = string(e.Data)
	}
	chs := e.Channels
	if e.Channel != "" {
		chs = append(chs, e.Channel)
	}
	for _, ch := range chs {
		s.broadcast(ch, encodeRaw(protocol.Event(e.Name, ch, data)), nil)
	}
}

func (s *RawServer) events(w http.ResponseWriter, r *http.Request) {
	var e rawEvent
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&e); err != nil {
		http.Error(w, `{"error":"bad body"}`, http.StatusBadRequest)
		return
	}
	e.publish(s)
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write([]byte("{}"))
}

func (s *RawServer) batch(w http.ResponseWriter, r *http.Request) {
	var b struct {
		Batch []rawEvent `json:"batch"`
	}
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&b); err != nil {
		http.Error(w, `{"error":"bad body"}`, http.StatusBadRequest)
		return
	}
	for i := range b.Batch {
		b.Batch[i].publish(s)
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write([]byte("{}"))
}
