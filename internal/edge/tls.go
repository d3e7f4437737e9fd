package edge

import (
	"crypto/tls"
	"net"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// TLS connections. The epoll loop reads and writes raw sockets, which a
// *tls.Conn is not: its bytes must go through crypto/tls. Each TLS
// connection therefore gets a bridge: a socketpair whose one end the loop
// serves exactly like a TCP socket (same reader, same bounded write queue,
// same slow-consumer and close rules, same sweeper, drain and shutdown), and
// two goroutines that copy between the other end and the tls.Conn with
// blocking reads and writes. Plain TCP connections never touch this file.
//
// Cost per TLS connection, beyond crypto/tls's own state: two goroutines,
// two extra file descriptors, a 4 KiB read buffer, and a 16 KiB write buffer
// held only while bytes are being written. What is queued for a client that
// stops reading is bounded by the app's max_queued_bytes plus the pair's
// send buffer (pairBuffer) and one write buffer, as for TCP it is bounded by
// max_queued_bytes plus the kernel's socket buffer.

// pairBuffer is the socketpair's send buffer size in each direction.
const pairBuffer = 64 << 10

// tlsBridge copies between a TLS connection and its socketpair end.
type tlsBridge struct {
	tls  *tls.Conn
	pair *net.UnixConn
	once sync.Once
}

var writeBufPool = sync.Pool{New: func() any { b := make([]byte, 16<<10); return &b }}

// bridgeTLS starts the bridge of tc and returns the loop's end of the pair,
// non-blocking, like detach does for a TCP socket. The TLS handshake is
// done (net/http completed it before the upgrade).
func (s *Server) bridgeTLS(tc *tls.Conn) (int, *tlsBridge, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		tc.Close()
		return -1, nil, err
	}
	loopFd, bridgeFd := fds[0], fds[1]
	for _, fd := range fds {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, pairBuffer)
	}
	if err := unix.SetNonblock(loopFd, true); err != nil {
		unix.Close(loopFd)
		unix.Close(bridgeFd)
		tc.Close()
		return -1, nil, err
	}
	f := os.NewFile(uintptr(bridgeFd), "tls-bridge")
	nc, err := net.FileConn(f) // a duplicate on Go's poller
	f.Close()
	if err != nil {
		unix.Close(loopFd)
		tc.Close()
		return -1, nil, err
	}
	// net/http's read and write timeouts stay on a hijacked connection.
	_ = tc.SetDeadline(time.Time{})
	b := &tlsBridge{tls: tc, pair: nc.(*net.UnixConn)}
	s.wg.Add(2)
	s.peers.bridges.Add(2)
	go func() { defer s.wg.Done(); defer s.peers.bridges.Add(-1); b.fromClient() }()
	go func() { defer s.wg.Done(); defer s.peers.bridges.Add(-1); b.toClient() }()
	return loopFd, b, nil
}

// TLSBridgeGoroutines returns how many goroutines of TLS bridges are
// running: two per open TLS connection, and none once every one has closed.
func (s *Server) TLSBridgeGoroutines() int64 { return s.peers.bridges.Load() }

// fromClient copies what the client sends to the loop; when the client
// closes or fails, the loop sees end of file and tears the connection down.
func (b *tlsBridge) fromClient() {
	buf := make([]byte, 4<<10)
	for {
		n, err := b.tls.Read(buf)
		if n > 0 {
			if _, werr := b.pair.Write(buf[:n]); werr != nil {
				break
			}
		}
		if err != nil {
			break
		}
	}
	_ = b.pair.CloseWrite()
}

// toClient copies what the loop writes to the client, then closes the TLS
// connection once the loop has closed its end (after its close frame). A
// write buffer is taken only when bytes are waiting.
func (b *tlsBridge) toClient() {
	graceful := false
	defer func() { b.close(graceful) }()
	rc, err := b.pair.SyscallConn()
	if err != nil {
		return
	}
	for {
		var bp *[]byte
		n := 0
		var rerr error
		err := rc.Read(func(fd uintptr) bool {
			bp = writeBufPool.Get().(*[]byte)
			for {
				n, rerr = unix.Read(int(fd), *bp)
				if rerr != unix.EINTR {
					break
				}
			}
			if rerr == unix.EAGAIN {
				writeBufPool.Put(bp)
				bp = nil
				return false // wait until readable, holding no buffer
			}
			return true
		})
		if err == nil && rerr == nil && n > 0 {
			_, err = b.tls.Write((*bp)[:n])
		}
		if bp != nil {
			writeBufPool.Put(bp)
		}
		if err != nil || rerr != nil || n <= 0 {
			// End of file: the loop closed after its last frame.
			graceful = err == nil && rerr == nil && n == 0
			return
		}
	}
}

// finish is called when the loop tears the connection down: toClient still
// forwards what was queued before (the close frame) and then closes; grace
// bounds how long a client that does not read can keep the bridge alive.
func (b *tlsBridge) finish(grace time.Duration) {
	_ = b.tls.SetDeadline(time.Now().Add(grace))
}

// close ends the TLS connection and the bridge's end of the pair. After the
// loop's last frame went out it sends close_notify first (crypto/tls bounds
// that write by 5 s); after a failed write it resets the socket.
func (b *tlsBridge) close(graceful bool) {
	b.once.Do(func() {
		if graceful {
			_ = b.tls.Close()
		} else {
			// A write failed, typically timed out on a client that stopped
			// reading: reset, so the kernel frees what it still holds for
			// the peer now rather than after minutes of zero-window probes
			// (as the loop does for a TCP slow consumer).
			if tcp, ok := b.tls.NetConn().(*net.TCPConn); ok {
				_ = tcp.SetLinger(0)
			}
			_ = b.tls.NetConn().Close()
		}
		_ = b.pair.Close()
	})
}
