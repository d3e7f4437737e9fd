package session

import (
	"encoding/json"
	"strings"
	"sync"
	"testing"

	"github.com/heraldrt/herald/internal/history"
	"github.com/heraldrt/herald/internal/protocol"
)

// recordConn records what reaches a connection, in order.
type recordConn struct {
	mu   sync.Mutex
	got  []string
	shut bool
}

func (c *recordConn) SocketID() string { return "1.2" }
func (c *recordConn) Send(wire []byte) { c.add(string(wire)) }
func (c *recordConn) Terminate()       { c.add("terminate") }
func (c *recordConn) SendPayload(p []byte) {
	c.add(string(p))
}
func (c *recordConn) Close(protocol.Code, string) { c.mu.Lock(); c.shut = true; c.mu.Unlock() }
func (c *recordConn) add(s string) {
	c.mu.Lock()
	c.got = append(c.got, s)
	c.mu.Unlock()
}
func (c *recordConn) frames() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.got...)
}

func frame(serial uint64, data string) []byte {
	// A WebSocket text frame header, then the payload: what the hub hands over.
	p := history.AppendFrame(nil, "e", "chat", data, serial)
	return append([]byte{0x81, byte(len(p))}, p...)
}

// Held frames already sent from the history are dropped, the others (later
// serials and frames without one) pass in arrival order, and after the flush
// frames go straight through.
func TestRecoveringConnFlush(t *testing.T) {
	rc := &recordConn{}
	c := &recoveringConn{Conn: rc, limit: 1 << 20}
	c.Send(frame(10, "dup-10"))
	c.Send([]byte(`{"event":"pusher_internal:member_added","data":"{}","channel":"chat"}`))
	c.Send(frame(11, "dup-11"))
	c.Send(frame(12, "new-12"))
	c.Send(frame(13, "new-13"))
	if len(rc.frames()) != 0 {
		t.Fatalf("frames passed while recovering: %q", rc.frames())
	}
	called := false
	c.flush(11, func() { called = true })
	c.Send(frame(14, "live-14"))
	c.Send(frame(9, "live-old")) // after the flush nothing is filtered
	got := strings.Join(rc.frames(), "\n")
	for _, w := range []string{"dup-10", "dup-11"} {
		if strings.Contains(got, w) {
			t.Fatalf("%s delivered twice:\n%s", w, got)
		}
	}
	order := []string{"member_added", "new-12", "new-13", "live-14", "live-old"}
	pos := -1
	for _, w := range order {
		i := strings.Index(got, w)
		if i <= pos {
			t.Fatalf("%s missing or out of order:\n%s", w, got)
		}
		pos = i
	}
	if called {
		t.Fatal("overflow reported without overflow")
	}
	if c.SocketID() != "1.2" {
		t.Fatal("SocketID is not the connection's (exclude would break)")
	}
}

// An event the history read returned can reach the node through pub/sub
// only after the flush (found by the chaos churn test: the same serial
// delivered twice in a row): it is dropped, and frames pass unfiltered once
// a newer one went through.
func TestRecoveringConnLateDuplicate(t *testing.T) {
	rc := &recordConn{}
	c := &recoveringConn{Conn: rc, limit: 1 << 20}
	c.Send(frame(12, "held-12"))
	c.flush(13, func() { t.Fatal("overflow reported without overflow") })
	c.Send(frame(13, "late-13")) // sent from the history already
	c.Send([]byte(`{"event":"pusher_internal:member_added","data":"{}","channel":"chat"}`))
	c.Send(frame(14, "live-14"))
	c.Send(frame(13, "after-14")) // not a history duplicate any more: passes
	got := strings.Join(rc.frames(), "\n")
	for _, w := range []string{"held-12", "late-13"} {
		if strings.Contains(got, w) {
			t.Fatalf("%s delivered although the history sent it:\n%s", w, got)
		}
	}
	for _, w := range []string{"member_added", "live-14", "after-14"} {
		if !strings.Contains(got, w) {
			t.Fatalf("%s missing:\n%s", w, got)
		}
	}
}

// Past the limit the held frames are given up, and the overflow is reported
// before any live frame.
func TestRecoveringConnOverflow(t *testing.T) {
	rc := &recordConn{}
	f := frame(1, "x")
	c := &recoveringConn{Conn: rc, limit: 3 * len(f)}
	for i := uint64(1); i <= 5; i++ {
		c.Send(frame(i, "held"))
	}
	c.flush(0, func() { rc.add("OVERFLOW") })
	c.Send(frame(6, "live"))
	got := rc.frames()
	if len(got) != 2 || got[0] != "OVERFLOW" || !strings.Contains(got[1], "live") {
		t.Fatalf("got %q", got)
	}
}

func TestParseLastSerial(t *testing.T) {
	for _, tt := range []struct {
		raw  string
		want uint64
		ok   bool
	}{
		{`41`, 41, true},
		{`"41"`, 41, true},
		{`0`, 0, true},
		{`9007199254740991`, history.MaxSerial, true},
		{`9007199254740992`, 0, false},
		{`-1`, 0, false},
		{`1.5`, 0, false},
		{`1e3`, 0, false},
		{`""`, 0, false},
		{`"4 1"`, 0, false},
		{`true`, 0, false},
		{`{}`, 0, false},
		{`99999999999999999999999`, 0, false},
	} {
		got, ok := parseLastSerial(json.RawMessage(tt.raw))
		if got != tt.want || ok != tt.ok {
			t.Errorf("parseLastSerial(%s) = %d, %v; want %d, %v", tt.raw, got, ok, tt.want, tt.ok)
		}
	}
}
