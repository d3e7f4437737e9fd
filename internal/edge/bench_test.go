package edge

import (
	"io"
	"log/slog"
	"net"
	"strconv"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/heraldrt/herald/internal/apps"
	"github.com/heraldrt/herald/internal/protocol"
)

// BenchmarkEventFrame is the encode-once step of a fan-out: the Pusher JSON
// of a 100-byte event and its WebSocket frame, shared by every subscriber.
func BenchmarkEventFrame(b *testing.B) {
	data := string(make100())
	b.ReportAllocs()
	for b.Loop() {
		_ = EncodeText(protocol.Event("my-event", "private-orders", data))
	}
}

func make100() []byte {
	p := make([]byte, 100)
	for i := range p {
		p[i] = 'a' + byte(i%26)
	}
	return p
}

// loopbackConn returns a conn on the server side of a real TCP loopback
// connection whose client side is drained by a goroutine, and a stop func.
func loopbackConn(b *testing.B) (*conn, func()) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	server, err := ln.Accept()
	if err != nil {
		b.Fatal(err)
	}
	fd, err := detach(server)
	if err != nil {
		b.Fatal(err)
	}
	go func() { _, _ = io.Copy(io.Discard, client) }()
	srv := &Server{flushq: newFlushQueue(), log: slog.New(slog.DiscardHandler), poller: &poller{}}
	c := &conn{srv: srv, app: &apps.App{MaxQueuedBytes: 64 << 20}, fd: fd}
	return c, func() { client.Close(); c.fdMu.Lock(); _ = unix.Close(c.fd); c.fd = -1; c.fdMu.Unlock() }
}

// BenchmarkWriteCoalescing writes 100-byte event frames to a real loopback
// TCP connection through the connection's queue: frames=1 is one syscall per
// frame (what a server without coalescing does), frames=10 queues ten frames
// and flushes them with one writev. ns/frame is the figure to compare.
func BenchmarkWriteCoalescing(b *testing.B) {
	frame := EncodeText(protocol.Event("my-event", "private-orders", string(make100())))
	for _, k := range []int{1, 10, 100} {
		b.Run("frames="+strconv.Itoa(k), func(b *testing.B) {
			c, stop := loopbackConn(b)
			defer stop()
			q := c.srv.flushq
			b.ReportAllocs()
			for b.Loop() {
				for range k {
					c.enqueue(frame, false)
				}
				c.flush()
				for c.blocked { // the socket is full: wait as the poller would
					fds := []unix.PollFd{{Fd: int32(c.fd), Events: unix.POLLOUT}}
					_, _ = unix.Poll(fds, -1)
					c.onWritable()
					c.flush()
				}
				q.items, q.head = q.items[:0], 0 // no flusher runs: drop the entries
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*k), "ns/frame")
		})
	}
}
