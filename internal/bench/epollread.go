package bench

import (
	"io"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/heraldrt/herald/internal/sysfd"
)

// reader is one epoll instance and the goroutine that reads every ready
// connection registered with it, into one shared buffer. It waits in Go's
// netpoller (an epoll descriptor is itself pollable), so an idle reader
// holds no thread. A worker runs GOMAXPROCS of them.
type reader struct {
	w     *worker
	epfd  int
	mu    sync.RWMutex
	conns map[int]*clientConn // by fd
	buf   []byte
	stop  chan struct{}
	done  chan struct{}
}

func newReader(w *worker) (*reader, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	r := &reader{w: w, epfd: epfd, conns: make(map[int]*clientConn), buf: make([]byte, 64<<10),
		stop: make(chan struct{}), done: make(chan struct{})}
	go r.run()
	return r, nil
}

// add registers c (detached, non-blocking) and reads what is already there.
func (r *reader) add(c *clientConn) error {
	c.rd = r
	r.mu.Lock()
	r.conns[c.fd] = c
	r.mu.Unlock()
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLET, Fd: int32(c.fd)}
	if err := unix.EpollCtl(r.epfd, unix.EPOLL_CTL_ADD, c.fd, &ev); err != nil {
		r.remove(c)
		return err
	}
	return nil
}

// remove forgets c; the caller closes its fd afterwards.
func (r *reader) remove(c *clientConn) {
	c.fdMu.RLock()
	fd := c.fd
	c.fdMu.RUnlock()
	if fd < 0 {
		return
	}
	_ = unix.EpollCtl(r.epfd, unix.EPOLL_CTL_DEL, fd, nil)
	r.mu.Lock()
	if r.conns[fd] == c {
		delete(r.conns, fd)
	}
	r.mu.Unlock()
}

func (r *reader) close() {
	close(r.stop)
	<-r.done
	unix.Close(r.epfd)
}

func (r *reader) run() {
	defer close(r.done)
	events := make([]unix.EpollEvent, 256)
	f, rc, err := sysfd.Pollable(r.epfd)
	if err != nil {
		return
	}
	defer f.Close()
	go func() { <-r.stop; _ = f.SetReadDeadline(time.Now()) }()
	for {
		err := rc.Read(func(uintptr) bool {
			for {
				n, err := unix.EpollWait(r.epfd, events, 0)
				if err == unix.EINTR {
					continue
				}
				if err != nil {
					return true
				}
				for i := range events[:n] {
					r.readConn(int(events[i].Fd))
				}
				if n < len(events) {
					return false
				}
			}
		})
		if err != nil {
			return // stopped (deadline) or closed
		}
		select {
		case <-r.stop:
			return
		default:
		}
	}
}

// readConn reads fd until EAGAIN and hands each read to its connection.
func (r *reader) readConn(fd int) {
	r.mu.RLock()
	c := r.conns[fd]
	r.mu.RUnlock()
	if c == nil {
		return
	}
	var got int64
	for !c.closed.Load() {
		c.fdMu.RLock()
		if c.fd < 0 {
			c.fdMu.RUnlock()
			return
		}
		n, err := unix.Read(c.fd, r.buf)
		c.fdMu.RUnlock()
		if n > 0 {
			got += int64(n)
			c.consume(r.buf[:n], time.Now().UnixNano())
			if n < len(r.buf) {
				// Drained: bytes arriving after this read raise a new
				// edge, so the EAGAIN read can be saved (half the
				// syscalls of a reader).
				break
			}
			continue
		}
		switch err {
		case unix.EAGAIN:
			r.w.bytes.Add(got)
			return
		case unix.EINTR:
			continue
		case nil:
			c.fail(io.EOF)
		default:
			c.fail(err)
		}
		c.close()
		break
	}
	r.w.bytes.Add(got)
}
