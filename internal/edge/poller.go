package edge

import (
	"sync"

	"golang.org/x/sys/unix"

	"github.com/heraldrt/herald/internal/sysfd"
)

// poller is one epoll instance. It watches every connection's socket,
// edge-triggered for input and for writability, and dispatches: a reader
// goroutine when bytes arrive, a flush when a full socket drains.
type poller struct {
	epfd   int
	wakeFd int // eventfd used to stop the loop

	mu    sync.RWMutex
	conns []*conn // indexed by file descriptor (small, dense integers)
	n     int     // non-nil entries of conns
}

func newPoller() (*poller, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	wfd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		unix.Close(epfd)
		return nil, err
	}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wfd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(wfd)}); err != nil {
		unix.Close(epfd)
		unix.Close(wfd)
		return nil, err
	}
	return &poller{epfd: epfd, wakeFd: wfd}, nil
}

// add starts watching c. It holds c.fdMu so that it cannot interleave with
// teardown: a connection torn down before add is never registered.
func (p *poller) add(c *conn) error {
	c.fdMu.RLock()
	defer c.fdMu.RUnlock()
	if c.fd < 0 {
		return errClosed
	}
	p.mu.Lock()
	p.set(c.fd, c)
	p.mu.Unlock()
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP | unix.EPOLLET, Fd: int32(c.fd)}
	if err := unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, c.fd, &ev); err != nil {
		p.mu.Lock()
		p.set(c.fd, nil)
		p.mu.Unlock()
		return err
	}
	return nil
}

// remove stops watching fd, which belonged to c. The caller holds c.fdMu for
// writing and closes fd afterwards, so a new socket reusing the number is
// never mistaken for c.
func (p *poller) remove(c *conn, fd int) {
	_ = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_DEL, fd, nil)
	p.mu.Lock()
	if p.get(fd) == c {
		p.set(fd, nil)
	}
	p.mu.Unlock()
}

// run dispatches events until stop is called. It waits in Go's own
// netpoller: an epoll instance is itself pollable (readable while events are
// ready), so an idle loop holds no thread and no P, and waking it costs what
// waking any network goroutine costs. Each wake drains the ready list with
// non-blocking epoll_wait calls.
func (p *poller) run() {
	events := make([]unix.EpollEvent, 512)
	f, rc, err := sysfd.Pollable(p.epfd)
	if err != nil {
		p.runBlocking(events) // not expected on Linux
		return
	}
	defer f.Close()
	stopped := false
	for !stopped {
		err := rc.Read(func(uintptr) bool {
			for {
				n, err := unix.EpollWait(p.epfd, events, 0)
				if err == unix.EINTR {
					continue
				}
				if err != nil || p.dispatch(events[:n]) {
					stopped = true
					return true
				}
				if n < len(events) {
					return false // drained: wait for the next readiness
				}
			}
		})
		if err != nil {
			return
		}
	}
}

// runBlocking is run with a blocking epoll_wait.
func (p *poller) runBlocking(events []unix.EpollEvent) {
	for {
		n, err := unix.EpollWait(p.epfd, events, -1)
		if err != nil {
			if err == unix.EINTR {
				continue
			}
			return
		}
		if p.dispatch(events[:n]) {
			return
		}
	}
}

// dispatch hands events to their connections; it reports whether stop was
// called.
func (p *poller) dispatch(events []unix.EpollEvent) bool {
	p.mu.RLock()
	defer p.mu.RUnlock()
	for i := range events {
		ev := &events[i]
		fd := int(ev.Fd)
		if fd == p.wakeFd {
			return true
		}
		c := p.get(fd)
		if c == nil {
			continue
		}
		if ev.Events&unix.EPOLLOUT != 0 {
			c.onWritable()
		}
		if ev.Events&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
			c.onReadable()
		}
	}
	return false
}

// get returns the connection on fd, or nil. The caller holds mu.
func (p *poller) get(fd int) *conn {
	if fd < 0 || fd >= len(p.conns) {
		return nil
	}
	return p.conns[fd]
}

// set records c (nil: none) on fd. The caller holds mu for writing.
func (p *poller) set(fd int, c *conn) {
	if fd >= len(p.conns) {
		if c == nil {
			return
		}
		p.conns = append(p.conns, make([]*conn, fd+1-len(p.conns)+len(p.conns)/4)...)
	}
	switch old := p.conns[fd]; {
	case old == nil && c != nil:
		p.n++
	case old != nil && c == nil:
		p.n--
	}
	p.conns[fd] = c
}

// snapshot returns the connections being watched.
func (p *poller) snapshot(dst []*conn) []*conn {
	p.mu.RLock()
	defer p.mu.RUnlock()
	for _, c := range p.conns {
		if c != nil {
			dst = append(dst, c)
		}
	}
	return dst
}

// stop ends run and releases the epoll instance.
func (p *poller) stop() {
	var one = [8]byte{1}
	_, _ = unix.Write(p.wakeFd, one[:])
}

func (p *poller) close() {
	unix.Close(p.epfd)
	unix.Close(p.wakeFd)
}

// flushQueue hands connections with queued frames to the flusher goroutines.
// A connection is in it at most once (conn.scheduled), so its length is
// bounded by the number of connections.
type flushQueue struct {
	mu     sync.Mutex
	cond   *sync.Cond
	items  []*conn
	head   int
	closed bool
}

func newFlushQueue() *flushQueue {
	q := &flushQueue{}
	q.cond = sync.NewCond(&q.mu)
	return q
}

func (q *flushQueue) push(c *conn) {
	q.mu.Lock()
	if len(q.items) == cap(q.items) && q.head > 0 && q.head >= len(q.items)/2 {
		// Under steady load the queue may never drain: reuse the consumed
		// front instead of growing forever.
		n := copy(q.items, q.items[q.head:])
		clear(q.items[n:])
		q.items, q.head = q.items[:n], 0
	}
	q.items = append(q.items, c)
	q.mu.Unlock()
	q.cond.Signal()
}

// take waits for work and returns up to max connections; nil once closed.
func (q *flushQueue) take(dst []*conn, max int) []*conn {
	q.mu.Lock()
	defer q.mu.Unlock()
	for q.head == len(q.items) {
		if q.closed {
			return nil
		}
		q.cond.Wait()
	}
	n := min(len(q.items)-q.head, max)
	dst = append(dst[:0], q.items[q.head:q.head+n]...)
	clear(q.items[q.head : q.head+n])
	q.head += n
	if q.head == len(q.items) {
		q.head = 0
		if cap(q.items) > 1<<16 {
			q.items = nil
		} else {
			q.items = q.items[:0]
		}
	}
	return dst
}

func (q *flushQueue) close() {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
	q.cond.Broadcast()
}
