package bench

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/heraldrt/herald/internal/sysfd"
)

// Markers the tool embeds in event data (a plain string, so no JSON escaping
// changes them): "|t=<unix nanos>|s=<sequence>|".
var (
	markT = []byte("|t=")
	markS = []byte("|s=")
)

// clientConn is one Pusher WebSocket connection of a worker. After the HTTP
// upgrade its socket leaves the Go runtime and is read by one of the
// worker's epoll readers (no goroutine per connection: the tool shares the
// machine's cores with the server it measures); writes take wmu.
type clientConn struct {
	w        *worker
	nc       net.Conn // during the upgrade only
	fdMu     sync.RWMutex
	fd       int    // after the upgrade; -1 once closed
	partial  []byte // an incomplete frame carried to the next read
	rd       *reader
	idx      int // global connection number
	ch       *chanStat
	channel  string
	role     uint8 // roleSubscriber, roleChurner, roleIdle
	socketID string

	wmu  sync.Mutex
	wbuf []byte
	mask [4]byte

	// state of the handshake and of the pending (re)subscribe
	state   int
	pending int64        // bench events parsed from the current read, not yet in recv
	readAt  int64        // unix nanos when the current read returned (arrival of its frames)
	recv    atomic.Int64 // bench events received (summed per worker and channel by stats)
	ready   chan error   // connect result, sent once
	subDone chan error   // each subscription_succeeded / error, for churners
	closed  atomic.Bool
	started time.Time
}

const (
	roleSubscriber = iota // subscribes at connect and stays
	roleChurner           // connects unsubscribed; presence churn subscribes and leaves
	roleBare              // connects, subscribes nothing
)

const (
	stAwaitEstablished = iota
	stAwaitSubscribed
	stRunning
)

var errClosed = errors.New("connection closed")

// dial opens the TCP connection from src and performs the WebSocket upgrade.
// Bytes read past the HTTP response are returned.
func (c *clientConn) dial(addr, path string, src net.IP, timeout time.Duration) ([]byte, error) {
	d := net.Dialer{Timeout: timeout}
	if src != nil {
		d.LocalAddr = &net.TCPAddr{IP: src}
	}
	nc, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	c.nc = nc
	var key [16]byte
	_, _ = rand.Read(key[:])
	_, _ = rand.Read(c.mask[:])
	k := base64.StdEncoding.EncodeToString(key[:])
	req := "GET " + path + " HTTP/1.1\r\nHost: " + addr + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: " + k + "\r\nSec-WebSocket-Version: 13\r\n\r\n"
	_ = nc.SetDeadline(time.Now().Add(timeout))
	if _, err := nc.Write([]byte(req)); err != nil {
		nc.Close()
		return nil, err
	}
	buf := make([]byte, 0, 1024)
	tmp := make([]byte, 1024)
	for {
		n, err := nc.Read(tmp)
		buf = append(buf, tmp[:n]...)
		if i := bytes.Index(buf, []byte("\r\n\r\n")); i >= 0 {
			head, rest := buf[:i+4], buf[i+4:]
			if err := checkUpgrade(head, k); err != nil {
				nc.Close()
				return nil, err
			}
			_ = nc.SetDeadline(time.Time{})
			return append([]byte(nil), rest...), nil
		}
		if err != nil {
			nc.Close()
			return nil, fmt.Errorf("upgrade: %w", err)
		}
		if len(buf) > 16<<10 {
			nc.Close()
			return nil, errors.New("upgrade: response headers too long")
		}
	}
}

func checkUpgrade(head []byte, key string) error {
	r := bufio.NewReader(bytes.NewReader(head))
	status, _ := r.ReadString('\n')
	if len(status) < 12 || status[9:12] != "101" {
		return fmt.Errorf("upgrade refused: %q", bytes.TrimSpace([]byte(status)))
	}
	h := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	want := base64.StdEncoding.EncodeToString(h[:])
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			break
		}
		name, val, ok := bytes.Cut(bytes.TrimSpace([]byte(line)), []byte(":"))
		if ok && bytes.EqualFold(name, []byte("Sec-WebSocket-Accept")) {
			if string(bytes.TrimSpace(val)) != want {
				return errors.New("upgrade: bad Sec-WebSocket-Accept")
			}
			return nil
		}
	}
	return errors.New("upgrade: no Sec-WebSocket-Accept")
}

// send writes one masked text frame.
func (c *clientConn) send(payload []byte) error {
	return c.sendOp(0x1, payload)
}

func (c *clientConn) sendOp(op byte, payload []byte) error {
	if c.closed.Load() {
		return errClosed
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	b := c.wbuf[:0]
	b = append(b, 0x80|op)
	n := len(payload)
	switch {
	case n < 126:
		b = append(b, 0x80|byte(n))
	case n < 1<<16:
		b = append(b, 0x80|126, byte(n>>8), byte(n))
	default:
		b = append(b, 0x80|127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	b = append(b, c.mask[:]...)
	start := len(b)
	b = append(b, payload...)
	for i := range payload {
		b[start+i] ^= c.mask[i&3]
	}
	if cap(b) <= 4096 {
		c.wbuf = b
	}
	return c.write(b)
}

// write writes b to the non-blocking socket, waiting for room when full.
func (c *clientConn) write(b []byte) error {
	c.fdMu.RLock()
	defer c.fdMu.RUnlock()
	for len(b) > 0 {
		if c.fd < 0 {
			return errClosed
		}
		n, err := unix.Write(c.fd, b)
		switch {
		case err == unix.EAGAIN:
			fds := []unix.PollFd{{Fd: int32(c.fd), Events: unix.POLLOUT}}
			_, _ = unix.Poll(fds, 1000)
			continue
		case err == unix.EINTR:
			continue
		case err != nil:
			return err
		}
		b = b[n:]
	}
	return nil
}

func (c *clientConn) close() {
	if !c.closed.CompareAndSwap(false, true) {
		return
	}
	if c.nc != nil {
		c.nc.Close()
	}
	if c.rd != nil {
		c.rd.remove(c)
	}
	c.fdMu.Lock()
	if c.fd >= 0 {
		_ = unix.Close(c.fd)
		c.fd = -1
	}
	c.fdMu.Unlock()
}

// detach takes the upgraded socket out of the Go runtime: a non-blocking
// duplicate for the epoll reader, the original closed.
func (c *clientConn) detach() error {
	fd, err := sysfd.Detach(c.nc)
	if err != nil {
		return err
	}
	c.nc = nil
	c.fd = fd
	return nil
}

// consume parses what one read returned (data may be the reader's shared
// buffer) and keeps an incomplete frame for the next read.
func (c *clientConn) consume(data []byte, at int64) {
	c.readAt = at
	if len(c.partial) > 0 {
		c.partial = append(c.partial, data...)
		data = c.partial
	}
	off := 0
	for !c.closed.Load() {
		n, ok := c.frame(data[off:])
		if !ok {
			break
		}
		off += n
	}
	if c.pending > 0 {
		// One atomic add per read, not per frame: a burst of frames
		// arrives in one read.
		c.recv.Add(c.pending)
		c.pending = 0
	}
	switch rest := data[off:]; {
	case len(rest) == 0:
		c.partial = nil
	case len(c.partial) > 0:
		c.partial = append(c.partial[:0], rest...)
	default:
		c.partial = append([]byte(nil), rest...)
	}
}

// fail ends a connection that is still connecting or subscribing.
func (c *clientConn) fail(err error) {
	if c.closed.Load() {
		err = errClosed
	}
	if c.state != stRunning {
		c.signalReady(err)
	} else if !c.w.stopping.Load() && !c.closed.Load() {
		c.w.dropped.Add(1)
		c.w.noteError("connection lost: " + err.Error())
	}
	select {
	case c.subDone <- err:
	default:
	}
}

func (c *clientConn) signalReady(err error) {
	if c.ready != nil {
		c.ready <- err
		c.ready = nil
	}
}

// frame handles the first frame in b; ok is false when b holds no complete frame.
func (c *clientConn) frame(b []byte) (int, bool) {
	if len(b) < 2 {
		return 0, false
	}
	op := b[0] & 0x0f
	l := int(b[1] & 0x7f)
	h := 2
	switch l {
	case 126:
		if len(b) < 4 {
			return 0, false
		}
		l = int(binary.BigEndian.Uint16(b[2:]))
		h = 4
	case 127:
		if len(b) < 10 {
			return 0, false
		}
		l = int(binary.BigEndian.Uint64(b[2:]))
		h = 10
	}
	if b[1]&0x80 != 0 { // servers must not mask; tolerate it
		h += 4
	}
	if len(b) < h+l {
		return 0, false
	}
	p := b[h : h+l]
	switch op {
	case 0x1, 0x0:
		c.message(p)
	case 0x9: // ping
		_ = c.sendOp(0xA, append([]byte(nil), p...))
	case 0x8: // close
		code := 0
		if len(p) >= 2 {
			code = int(binary.BigEndian.Uint16(p))
		}
		c.fail(fmt.Errorf("server closed the connection (code %d: %s)", code, truncateBytes(p[min(2, len(p)):], 100)))
		c.close()
	}
	return h + l, true
}

func truncateBytes(b []byte, n int) string {
	if len(b) > n {
		b = b[:n]
	}
	return string(b)
}

var (
	keyEvent = []byte(`"event"`)
	pfxBench = []byte("bench")
	pfxCli   = []byte("client-bench")
)

// eventName returns the value of the "event" key of a Pusher frame.
func eventName(p []byte) []byte {
	i := bytes.Index(p, keyEvent)
	if i < 0 {
		return nil
	}
	p = p[i+len(keyEvent):]
	j := 0
	for j < len(p) && (p[j] == ' ' || p[j] == ':') {
		j++
	}
	if j >= len(p) || p[j] != '"' {
		return nil
	}
	p = p[j+1:]
	k := bytes.IndexByte(p, '"')
	if k < 0 {
		return nil
	}
	return p[:k]
}

// markerInt parses the digits after marker in p.
func markerInt(p, marker []byte) (int64, bool) {
	i := bytes.Index(p, marker)
	if i < 0 {
		return 0, false
	}
	p = p[i+len(marker):]
	var v int64
	n := 0
	for n < len(p) && p[n] >= '0' && p[n] <= '9' {
		v = v*10 + int64(p[n]-'0')
		n++
	}
	return v, n > 0
}

func (c *clientConn) message(p []byte) {
	ev := eventName(p)
	switch {
	case bytes.Equal(ev, pfxBench) || bytes.Equal(ev, pfxCli):
		now := c.readAt
		c.pending++
		if t, ok := markerInt(p, markT); ok {
			c.w.hist[c.idx&(histShards-1)].Record((now - t) / 1000)
		}
		if c.w.seqs != nil {
			if s, ok := markerInt(p, markS); ok {
				c.w.seqArrived(s, now)
			}
		}
	case string(ev) == "pusher:ping":
		_ = c.send([]byte(`{"event":"pusher:pong","data":{}}`))
	case string(ev) == "pusher_internal:member_added":
		if c.role != roleSubscriber {
			return // only observers count member events
		}
		c.ch.added.Add(1)
		if t, ok := markerInt(p, markT); ok {
			c.w.memberHist.Record((time.Now().UnixNano() - t) / 1000)
		}
	case string(ev) == "pusher_internal:member_removed":
		if c.role == roleSubscriber {
			c.ch.removed.Add(1)
		}
	case string(ev) == "pusher:connection_established":
		id, ok := socketIDOf(p)
		if !ok {
			c.signalReady(fmt.Errorf("no socket_id in %s", truncateBytes(p, 200)))
			c.close()
			return
		}
		c.socketID = id
		if c.state == stAwaitEstablished {
			if c.role != roleSubscriber {
				c.state = stRunning
				c.signalReady(nil)
				return
			}
			c.state = stAwaitSubscribed
			if err := c.send(c.w.subscribeFrame(c, c.channel, time.Now())); err != nil {
				c.signalReady(err)
				c.close()
			}
		}
	case string(ev) == "pusher_internal:subscription_succeeded":
		if c.state == stAwaitSubscribed {
			c.state = stRunning
			c.signalReady(nil)
			return
		}
		select {
		case c.subDone <- nil:
		default:
		}
	case string(ev) == "pusher:error" || string(ev) == "pusher:subscription_error":
		err := fmt.Errorf("%s", truncateBytes(p, 300))
		if c.state != stRunning {
			c.signalReady(err)
			c.close()
			return
		}
		c.w.noteError(err.Error())
		select {
		case c.subDone <- err:
		default:
		}
	}
}

// socketIDOf finds the socket_id in a connection_established frame, whose
// data is a JSON string holding JSON.
func socketIDOf(p []byte) (string, bool) {
	i := bytes.Index(p, []byte("socket_id"))
	if i < 0 {
		return "", false
	}
	p = p[i+len("socket_id"):]
	j := 0
	for j < len(p) && (p[j] < '0' || p[j] > '9') {
		if j > 8 {
			return "", false
		}
		j++
	}
	k := j
	for k < len(p) && (p[k] >= '0' && p[k] <= '9' || p[k] == '.') {
		k++
	}
	if k == j {
		return "", false
	}
	return string(p[j:k]), true
}

// benchData returns event data of about size bytes carrying the send time
// and a sequence number.
func benchData(t time.Time, seq int64, size int) string {
	b := make([]byte, 0, size+40)
	b = append(b, markT...)
	b = strconv.AppendInt(b, t.UnixNano(), 10)
	b = append(b, markS...)
	b = strconv.AppendInt(b, seq, 10)
	b = append(b, '|')
	for len(b) < size {
		b = append(b, 'x')
	}
	return string(b)
}
