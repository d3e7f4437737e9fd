package main

import (
	"errors"
	"log"
	"net"
	"net/http"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/gobwas/ws"
	"golang.org/x/sys/unix"

	"herald/tools/wscandidates/internal/wsframe"
)

// epollImpl: github.com/gobwas/ws for the handshake (ws.UpgradeHTTP hijacks
// the net/http connection, so /app/test shares the port with the REST mux),
// then the socket fd is registered in our own level-triggered epoll instance.
// An idle connection has no goroutine and no read buffer: each loop owns one
// read buffer, and bytes of an incomplete frame are copied into a
// per-connection slice only while that frame is incomplete.
//
// Reads go through syscall.RawConn.Read with a callback that does one
// non-blocking read(2) and returns true, so the runtime poller never parks
// the loop goroutine. Writes use net.Conn.Write (the fd is non-blocking and
// also known to the Go netpoller, which handles EAGAIN by parking the writer).
type epollImpl struct {
	loops []*eloop
	next  atomic.Uint32
	conns *registry[*econn]
	hello []byte // pre-encoded connection_established frame
}

const (
	epollReadBuf  = 32 << 10
	epollMaxFrame = 64 << 10 // bounds what a partial frame may hold
)

type eloop struct {
	epfd int
	buf  []byte // shared by every connection of this loop
	mu   sync.Mutex
	fds  map[int]*econn
	impl *epollImpl
}

type econn struct {
	nc      net.Conn
	rc      syscall.RawConn
	fd      int
	wmu     sync.Mutex
	pending []byte // incomplete frame bytes; nil while idle
}

func newEpoll() impl {
	e := &epollImpl{
		conns: newRegistry[*econn](),
		hello: ws.MustCompileFrame(ws.NewTextFrame(greeting)),
	}
	for i := 0; i < runtime.NumCPU(); i++ {
		fd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
		if err != nil {
			log.Fatalf("epoll_create1: %v", err)
		}
		l := &eloop{epfd: fd, buf: make([]byte, epollReadBuf), fds: make(map[int]*econn), impl: e}
		e.loops = append(e.loops, l)
		go l.run()
	}
	return e
}

func (e *epollImpl) Serve(addr string, mux *http.ServeMux) error { return stdServe(addr, mux) }
func (e *epollImpl) Count() int                                  { return e.conns.count() }

func (e *epollImpl) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		nc, rw, _, err := ws.UpgradeHTTP(r, w)
		if err != nil {
			log.Printf("gobwas upgrade: %v", err)
			return
		}
		sc, ok := nc.(syscall.Conn)
		if !ok {
			log.Printf("hijacked %T has no fd", nc)
			nc.Close()
			return
		}
		rc, err := sc.SyscallConn()
		if err != nil {
			nc.Close()
			return
		}
		c := &econn{nc: nc, rc: rc, fd: -1}
		_ = rc.Control(func(fd uintptr) { c.fd = int(fd) })
		if _, err := nc.Write(e.hello); err != nil {
			nc.Close()
			return
		}
		// Bytes the client pipelined after its handshake sit in net/http's
		// bufio.Reader; feed them to the parser before handing over the fd.
		if n := rw.Reader.Buffered(); n > 0 {
			b, _ := rw.Reader.Peek(n)
			if !c.consume(b) {
				nc.Close()
				return
			}
		}
		l := e.loops[int(e.next.Add(1))%len(e.loops)]
		if err := l.add(c); err != nil {
			log.Printf("epoll add: %v", err)
			nc.Close()
			return
		}
		e.conns.add(c)
		// Handler returns: net/http's goroutine and bufio buffers are released.
	})
}

func (l *eloop) add(c *econn) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP, Fd: int32(c.fd)}
	if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, c.fd, &ev); err != nil {
		return err
	}
	l.fds[c.fd] = c
	return nil
}

// close runs on the loop goroutine only, so the fd cannot be reused while
// it is still registered.
func (l *eloop) close(c *econn) {
	l.mu.Lock()
	_ = unix.EpollCtl(l.epfd, unix.EPOLL_CTL_DEL, c.fd, nil)
	delete(l.fds, c.fd)
	l.mu.Unlock()
	l.impl.conns.remove(c)
	c.nc.Close()
}

func (l *eloop) run() {
	events := make([]unix.EpollEvent, 256)
	for {
		n, err := unix.EpollWait(l.epfd, events, -1)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			log.Fatalf("epoll_wait: %v", err)
		}
		for i := 0; i < n; i++ {
			l.mu.Lock()
			c := l.fds[int(events[i].Fd)]
			l.mu.Unlock()
			if c != nil {
				l.read(c)
			}
		}
	}
}

func (l *eloop) read(c *econn) {
	var n int
	var rerr error
	err := c.rc.Read(func(fd uintptr) bool {
		n, rerr = unix.Read(int(fd), l.buf)
		return true // never wait in the Go netpoller
	})
	switch {
	case err != nil:
		l.close(c)
	case rerr == unix.EAGAIN || rerr == unix.EINTR:
		// spurious wakeup; level-triggered epoll will report again
	case rerr != nil || n == 0:
		l.close(c)
	case !c.consume(l.buf[:n]):
		l.close(c)
	}
}

// consume parses whole frames out of data (prefixed by any pending partial
// frame) and keeps the tail of an incomplete frame. It returns false when the
// connection must be closed. Text/binary messages are ignored.
func (c *econn) consume(data []byte) bool {
	if len(c.pending) > 0 {
		c.pending = append(c.pending, data...)
		data = c.pending
	}
	for len(data) > 0 {
		h, ok, err := wsframe.Parse(data, epollMaxFrame)
		if err != nil || (ok && !h.Masked) { // clients must mask (RFC 6455 5.1)
			return false
		}
		if !ok || len(data) < h.Size+h.Len {
			break
		}
		payload := data[h.Size : h.Size+h.Len]
		ws.Cipher(payload, h.Mask, 0)
		switch h.Op {
		case wsframe.OpPing:
			c.write(ws.MustCompileFrame(ws.NewPongFrame(payload)))
		case wsframe.OpClose:
			c.write(ws.MustCompileFrame(ws.NewCloseFrame(payload)))
			return false
		}
		data = data[h.Size+h.Len:]
	}
	if len(data) == 0 {
		c.pending = nil
	} else {
		c.pending = append([]byte(nil), data...) // never alias the shared buffer
	}
	return true
}

func (c *econn) write(b []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_, err := c.nc.Write(b)
	return err
}

func (e *epollImpl) Broadcast(mode string, payload, frame []byte) (sent, errs int, err error) {
	var write func(c *econn) error
	switch mode {
	case "raw":
		write = func(c *econn) error { return c.write(frame) }
	case "lib":
		// gobwas' own writer: header and payload are two write(2) calls.
		f := ws.NewTextFrame(payload)
		write = func(c *econn) error {
			c.wmu.Lock()
			defer c.wmu.Unlock()
			return ws.WriteFrame(c.nc, f)
		}
	default:
		return 0, 0, errUnsupported("mode " + mode)
	}
	for _, c := range e.conns.snapshot() {
		if write(c) != nil {
			errs++ // the loop notices the dead socket via EPOLLRDHUP/ERR
		} else {
			sent++
		}
	}
	return sent, errs, nil
}
