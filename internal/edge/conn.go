package edge

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/gobwas/ws"
	"golang.org/x/sys/unix"

	"github.com/heraldrt/herald/internal/apps"
	"github.com/heraldrt/herald/internal/protocol"
	"github.com/heraldrt/herald/internal/session"
)

// conn is one WebSocket connection on a raw non-blocking socket. An idle conn
// has no goroutine: the poller starts a reader when bytes arrive and the
// flushers write what is queued.
//
// Lock order: c.wmu may be taken while holding a hub shard lock (Send); the
// session lock may be held while taking c.wmu (SendPayload). teardown takes
// neither while calling into the session.
//
// Every open connection carries one of these, so its layout is kept to 160
// bytes (a size class): the fields are ordered to avoid padding, the frame
// parser exists only while a frame is incomplete, and the socket id lives in
// the session.
type conn struct {
	srv  *Server
	app  *apps.App
	sess *session.Session

	fdMu sync.RWMutex // write-locked only to close fd
	fd   int          // -1 once closed

	// Read side: one reader goroutine at a time (readState).
	parser    *frameParser  // nil unless a frame or fragmented message is incomplete
	lastRead  atomic.Int64  // unix nanos of the last bytes received
	pingedAt  atomic.Int64  // unix nanos of our ping, 0 when none outstanding
	readState atomic.Int32  // 0 idle, 1 reading, 2 reading and more arrived
	why       atomic.Uint32 // CloseReason, set by the first close
	closeCode atomic.Int32  // close code of the first close frame, 0 if none
	rflags    atomic.Uint32 // flagStopRead, flagDead

	// Write side, guarded by wmu.
	scheduled  bool // in the flush queue or being flushed
	blocked    bool // the socket is full; waiting for EPOLLOUT
	writable   bool // EPOLLOUT seen since the flusher last started writing
	closing    bool // a close frame is queued; nothing more is accepted
	closeAfter bool // tear down once the queue is written
	wmu        sync.Mutex
	queue      [][]byte // frames waiting to be written (shared, immutable)
	queued     int      // bytes in queue
	closingAt  int64    // unix nanos when closing started
	closeText  *string  // reason of the close frame, for the close log line
}

const (
	flagStopRead = 1 << iota // a close is under way: input is discarded
	flagDead                 // torn down (set once, by teardown)
)

func (c *conn) stopReading()      { c.rflags.Or(flagStopRead) }
func (c *conn) readStopped() bool { return c.rflags.Load()&flagStopRead != 0 }
func (c *conn) isDead() bool      { return c.rflags.Load()&flagDead != 0 }

// socketID returns the connection's socket_id ("" before the session starts).
func (c *conn) socketID() string {
	if c.sess == nil {
		return ""
	}
	return c.sess.SocketID()
}

// feed parses bytes read from the socket. The parser's state outlives the
// call only when a frame is incomplete; otherwise it is dropped, so an idle
// connection holds none.
func (c *conn) feed(data []byte) error {
	if c.parser != nil {
		err := c.parser.feed(data, c.app.MaxFrameSize, c)
		if c.parser.idle() {
			c.parser = nil
		}
		return err
	}
	var p frameParser
	err := p.feed(data, c.app.MaxFrameSize, c)
	if !p.idle() {
		kept := p
		c.parser = &kept
	}
	return err
}

var errClosed = errors.New("connection closed")

// slowConsumerReason is the teardown reason of a connection whose queue
// passed max_queued_bytes.
const slowConsumerReason = "slow consumer"

// SocketID implements hub.Conn.
func (c *conn) SocketID() string { return c.socketID() }

// Send implements hub.Conn: it queues a shared, pre-encoded frame.
func (c *conn) Send(wire []byte) {
	c.enqueue(wire, false)
}

// SendPayload implements session.Conn.
func (c *conn) SendPayload(payload []byte) {
	c.enqueue(EncodeText(payload), false)
}

// Terminate implements hub.Conn: the app terminated this user's connections.
func (c *conn) Terminate() {
	c.SendPayload(protocol.ErrorFrame(protocol.CodeUnauthorized, "You got disconnected by the app.", ""))
	c.Close(protocol.CodeUnauthorized, "You got disconnected by the app")
}

// Close implements session.Conn: the close frame follows what is queued.
func (c *conn) Close(code protocol.Code, reason string) {
	c.closeWith(int(code), reason)
}

func (c *conn) closeWith(code int, reason string) {
	c.wmu.Lock()
	if c.closing {
		c.wmu.Unlock()
		return
	}
	c.why.CompareAndSwap(uint32(reasonUnset), uint32(closeCategory(code, reason)))
	c.closeCode.CompareAndSwap(0, int32(code))
	c.closeText = &reason
	c.srv.log.Debug("closing connection", "socket_id", c.socketID(), "app", c.app.ID, "code", code, "reason", reason)
	c.queue = append(c.queue, closeFrame(code, reason))
	c.closing = true
	c.closingAt = time.Now().UnixNano()
	c.closeAfter = true
	sched := !c.scheduled && !c.blocked
	if sched {
		c.scheduled = true
	}
	c.wmu.Unlock()
	if sched {
		c.srv.flushq.push(c)
	}
}

// enqueue adds b to the write queue and reports whether it did. A connection
// whose queue would pass the app's MaxQueuedBytes is a slow consumer and is
// closed; a closing connection accepts nothing.
func (c *conn) enqueue(b []byte, _ bool) bool {
	c.wmu.Lock()
	if c.closing {
		c.wmu.Unlock()
		return false
	}
	if c.queued+len(b) > c.app.MaxQueuedBytes {
		c.closing = true
		c.queue, c.queued = nil, 0
		c.wmu.Unlock()
		c.srv.stats.slowConsumers.Add(1)
		c.srv.log.Info("closing slow consumer", "socket_id", c.socketID(), "app", c.app.ID,
			"limit_bytes", c.app.MaxQueuedBytes)
		// Not inline: the caller may hold a hub lock that teardown needs.
		c.teardownAsync(slowConsumerReason)
		return false
	}
	if c.queue == nil {
		c.queue = newQueue()
	}
	c.queue = append(c.queue, b)
	c.queued += len(b)
	sched := !c.scheduled && !c.blocked
	if sched {
		c.scheduled = true
	}
	c.wmu.Unlock()
	if sched {
		c.srv.flushq.push(c)
	}
	return true
}

// queueCap is the capacity of a pooled write queue: a burst of frames that
// one writev sends. Queues are taken from the pool when a frame is queued to
// an idle connection and given back once written, so an idle connection
// holds none and a busy one does not allocate per flush.
const queueCap = 16

var queuePool = sync.Pool{New: func() any { return new([queueCap][]byte) }}

func newQueue() [][]byte { return queuePool.Get().(*[queueCap][]byte)[:0] }

// recycleQueue returns a written queue (writev cleared its entries) to the
// pool; queues that grew past queueCap are left to the GC.
func recycleQueue(q [][]byte) {
	if cap(q) != queueCap {
		return
	}
	queuePool.Put((*[queueCap][]byte)(q[:queueCap]))
}

// flush writes the queue with as few writev calls as the socket accepts. It
// runs on a flusher goroutine and never blocks: on EAGAIN it leaves the rest
// queued and waits for EPOLLOUT.
func (c *conn) flush() {
	for {
		c.wmu.Lock()
		q := c.queue
		if len(q) == 0 {
			c.scheduled = false
			done := c.closeAfter
			c.wmu.Unlock()
			if done {
				// Not inline: session cleanup may wait on the broker; flushers must not.
				c.teardownAsync("closed by server")
			}
			return
		}
		c.queue = nil
		c.queued = 0
		c.writable = false
		c.wmu.Unlock()

		rest, n, err := c.writev(q)
		c.srv.stats.bytesOut.Add(int64(n))
		if err != nil && err != unix.EAGAIN {
			c.teardownAsync("write error: " + err.Error())
			return
		}
		if len(rest) == 0 {
			recycleQueue(q)
		}
		c.wmu.Lock()
		if len(rest) > 0 {
			size := 0
			for _, b := range rest {
				size += len(b)
			}
			c.queue = append(rest, c.queue...)
			c.queued += size
			if !c.writable {
				c.blocked = true
				c.scheduled = false
				c.wmu.Unlock()
				return
			}
		}
		c.wmu.Unlock()
	}
}

// onWritable is called by the poller on EPOLLOUT.
func (c *conn) onWritable() {
	c.wmu.Lock()
	c.writable = true
	sched := c.blocked && !c.scheduled
	if sched {
		c.blocked = false
		c.scheduled = true
	}
	c.wmu.Unlock()
	if sched {
		c.srv.flushq.push(c)
	}
}

// maxIovecs is the most frames one writev sends (the rest go in the next).
const maxIovecs = 64

// writev is writev(2) with the iovecs on the stack (unix.Writev allocates
// them past eight buffers). len(bufs) is at most maxIovecs.
func writev(fd int, bufs [][]byte) (int, error) {
	var iov [maxIovecs]unix.Iovec
	n := 0
	for _, b := range bufs {
		if len(b) == 0 {
			continue
		}
		iov[n].Base = &b[0]
		iov[n].SetLen(len(b))
		n++
	}
	if n == 0 {
		return 0, nil
	}
	r, _, e := unix.Syscall(unix.SYS_WRITEV, uintptr(fd), uintptr(unsafe.Pointer(&iov[0])), uintptr(n))
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}

// writev writes bufs until done or EAGAIN; it returns what is left unwritten.
func (c *conn) writev(bufs [][]byte) (rest [][]byte, written int, err error) {
	c.fdMu.RLock()
	defer c.fdMu.RUnlock()
	if c.fd < 0 {
		return nil, 0, errClosed
	}
	for len(bufs) > 0 {
		batch := bufs
		if len(batch) > maxIovecs {
			batch = batch[:maxIovecs]
		}
		var n int
		if len(batch) == 1 {
			n, err = unix.Write(c.fd, batch[0])
		} else {
			n, err = writev(c.fd, batch)
		}
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return bufs, written, err
		}
		written += n
		// Drop what was written (and empty buffers), keep the unwritten tail.
		for len(bufs) > 0 && n >= len(bufs[0]) {
			n -= len(bufs[0])
			bufs[0] = nil
			bufs = bufs[1:]
		}
		if n > 0 {
			bufs[0] = bufs[0][n:]
		}
	}
	return nil, written, nil
}

// onReadable is called by the poller when bytes (or EOF) arrive. It starts a
// reader goroutine unless one runs, in which case that one reads again.
func (c *conn) onReadable() {
	for {
		switch c.readState.Load() {
		case 0:
			if c.readState.CompareAndSwap(0, 1) {
				c.srv.wg.Add(1)
				go c.readLoop()
				return
			}
		case 1:
			if c.readState.CompareAndSwap(1, 2) {
				return
			}
		default:
			return
		}
	}
}

func (c *conn) readLoop() {
	defer c.srv.wg.Done()
	bp := readBufPool.Get().(*[]byte)
	defer readBufPool.Put(bp)
	buf := *bp
	for !c.isDead() {
		n, err := c.read(buf)
		if n > 0 {
			now := time.Now().UnixNano()
			c.lastRead.Store(now)
			c.pingedAt.Store(0)
			c.srv.stats.bytesIn.Add(int64(n))
			if c.readStopped() {
				continue
			}
			if perr := c.feed(buf[:n]); perr != nil {
				c.srv.log.Debug("bad frame", "socket_id", c.socketID(), "err", perr)
				c.stopReading()
				c.closeWith(int(closeStatus(perr)), perr.Error())
			}
			continue
		}
		switch err {
		case unix.EAGAIN:
			if c.readState.CompareAndSwap(1, 0) {
				return
			}
			c.readState.Store(1)
			continue
		case unix.EINTR:
			continue
		case nil:
			c.teardown("client went away")
		default:
			c.teardown("read error: " + err.Error())
		}
		return
	}
}

func (c *conn) read(buf []byte) (int, error) {
	c.fdMu.RLock()
	defer c.fdMu.RUnlock()
	if c.fd < 0 {
		return 0, errClosed
	}
	n, err := unix.Read(c.fd, buf)
	if n < 0 {
		n = 0
	}
	return n, err
}

// readBufPool holds the reader goroutines' buffers. Client messages are
// small (a subscribe is a few hundred bytes); 4 KiB keeps the memory of a
// connect or disconnect burst, when thousands of readers run at once, low.
var readBufPool = sync.Pool{New: func() any { b := make([]byte, 4*1024); return &b }}

// onMessage implements frameSink.
func (c *conn) onMessage(_ ws.OpCode, payload []byte) {
	if c.readStopped() {
		return
	}
	c.srv.stats.messagesIn.Add(1)
	c.sess.HandleMessage(payload)
}

// onControl implements frameSink.
func (c *conn) onControl(op ws.OpCode, payload []byte) {
	switch op {
	case ws.OpPing:
		c.enqueue(encodeFrame(ws.OpPong, payload), false)
	case ws.OpClose:
		code, _ := ws.ParseCloseFrameData(payload)
		if code == 0 || !code.IsProtocolDefined() && !code.IsApplicationSpec() && !code.IsPrivateSpec() {
			code = ws.StatusNormalClosure
		}
		c.stopReading()
		c.closeWith(int(code), "client closed")
	}
}

// teardownAsync runs teardown on its own goroutine, owned by the server's
// wait group, for callers that hold locks or must not wait on the broker.
func (c *conn) teardownAsync(reason string) {
	c.srv.wg.Add(1)
	go func() {
		defer c.srv.wg.Done()
		c.teardown(reason)
	}()
}

// teardown closes the socket at once and ends the session. Safe to call more
// than once and from any goroutine that holds no session or hub lock.
func (c *conn) teardown(reason string) {
	if c.rflags.Or(flagDead)&flagDead != 0 {
		return
	}
	c.wmu.Lock()
	c.closing = true
	c.queue, c.queued = nil, 0
	c.wmu.Unlock()
	c.fdMu.Lock()
	fd := c.fd
	c.fd = -1
	if fd >= 0 {
		c.srv.poller.remove(c, fd)
		if reason == slowConsumerReason {
			// What the kernel still holds for a peer that stopped reading
			// (up to tcp_wmem's 4 MiB) would otherwise stay, orphaned,
			// until the peer reads it or zero-window probing gives up,
			// minutes later: reset the connection and free it now.
			_ = unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
		}
		_ = unix.Close(fd)
	}
	c.fdMu.Unlock()
	c.srv.untrack(c)
	if c.sess != nil {
		c.sess.Closed()
	}
	c.srv.stats.closed.Add(1)
	c.why.CompareAndSwap(uint32(reasonUnset), uint32(closeCategory(0, reason)))
	c.srv.stats.reasons[c.why.Load()].Add(1)
	c.logClosed(reason)
}

// logClosed is the one debug line per closed connection: its category (the
// reason label of herald_connections_closed_total), the close code when a
// close frame was sent or received, and the free-text reason: the close
// frame's when there was one, else why the socket was torn down.
func (c *conn) logClosed(reason string) {
	if !c.srv.log.Enabled(context.Background(), slog.LevelDebug) {
		return
	}
	attrs := make([]slog.Attr, 0, 5)
	attrs = append(attrs, slog.String("socket_id", c.socketID()), slog.String("app", c.app.ID),
		slog.String("category", CloseReasonNames[c.why.Load()]))
	if code := c.closeCode.Load(); code != 0 {
		attrs = append(attrs, slog.Int("code", int(code)))
	}
	c.wmu.Lock()
	if c.closeText != nil && *c.closeText != "" {
		reason = *c.closeText
	}
	c.wmu.Unlock()
	attrs = append(attrs, slog.String("reason", reason))
	c.srv.log.LogAttrs(context.Background(), slog.LevelDebug, "connection closed", attrs...)
}
