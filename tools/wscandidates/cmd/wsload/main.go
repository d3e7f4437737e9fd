// Command wsload opens and holds idle WebSocket connections against wsserver.
// It is driven over stdin, one command per line, and answers one line each:
//
//	add N       open N more connections; reply "ok total=T failed=F ms=D"
//	expect B    note the time at which the received byte count reaches B;
//	            reply "ok"
//	stats       reply "stats total=T rxbytes=B reached=U" (U: unix nanos at
//	            which the last expect was met, 0 if not yet)
//	quit        close everything and exit
//
// Connections are spread over the source addresses given by -src so that
// large counts do not exhaust one address's ephemeral ports. Each connection
// reads its first frame (pusher:connection_established); with -subscribe it
// then subscribes to one channel and waits for
// pusher_internal:subscription_succeeded. After that a goroutine with a
// 256-byte buffer drains it and counts bytes. Nothing answers pings, so a
// Herald run must finish within the app's activity_timeout (120 s default)
// plus 30 s.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gobwas/ws"
)

func main() {
	url := flag.String("url", "ws://127.0.0.1:18080/app/test", "server URL")
	srcs := flag.String("src", "127.0.0.1,127.0.0.2,127.0.0.3,127.0.0.4", "comma-separated source IPs")
	par := flag.Int("c", 64, "parallel dials")
	timeout := flag.Duration("timeout", 10*time.Second, "per-connection dial+handshake+first-frame timeout")
	subscribe := flag.String("subscribe", "", `after connecting, subscribe to this channel; "%d" in it is replaced by the connection's number (e.g. "c-%d")`)
	flag.Parse()
	raiseNofile()

	var ips []net.IP
	for _, s := range strings.Split(*srcs, ",") {
		ips = append(ips, net.ParseIP(strings.TrimSpace(s)))
	}
	l := &loader{url: *url, ips: ips, par: *par, timeout: *timeout, subscribe: *subscribe}

	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		f := strings.Fields(in.Text())
		if len(f) == 0 {
			continue
		}
		switch f[0] {
		case "add":
			if len(f) < 2 {
				fmt.Println("err add needs a count")
				continue
			}
			n, _ := strconv.Atoi(f[1])
			t0 := time.Now()
			failed := l.add(n)
			fmt.Printf("ok total=%d failed=%d ms=%d\n", l.total.Load(), failed, time.Since(t0).Milliseconds())
		case "expect":
			if len(f) < 2 {
				fmt.Println("err expect needs a byte count")
				continue
			}
			b, _ := strconv.ParseInt(f[1], 10, 64)
			l.expect(b)
			fmt.Println("ok")
		case "stats":
			fmt.Printf("stats total=%d rxbytes=%d reached=%d\n", l.total.Load(), l.rx.Load(), l.reached.Load())
		case "quit":
			l.closeAll()
			fmt.Println("bye")
			return
		default:
			fmt.Printf("err unknown command %q\n", f[0])
		}
	}
	l.closeAll()
}

type loader struct {
	url     string
	ips     []net.IP
	par     int
	timeout time.Duration
	// subscribe is the channel name template ("" for none).
	subscribe string
	seq       atomic.Uint64
	total     atomic.Int64
	rx        atomic.Int64 // bytes received after the first frame (and subscription)
	target    atomic.Int64 // rx value the last expect waits for; 0 for none
	reached   atomic.Int64 // unix nanos when rx reached target

	mu    sync.Mutex
	conns []net.Conn
}

func (l *loader) add(n int) (failed int) {
	var wg sync.WaitGroup
	var fails atomic.Int64
	jobs := make(chan struct{})
	for w := 0; w < l.par; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range jobs {
				if err := l.open(); err != nil {
					if fails.Add(1) <= 5 {
						log.Printf("dial: %v", err)
					}
				}
			}
		}()
	}
	for i := 0; i < n; i++ {
		jobs <- struct{}{}
	}
	close(jobs)
	wg.Wait()
	return int(fails.Load())
}

func (l *loader) open() error {
	seq := l.seq.Add(1)
	ip := l.ips[seq%uint64(len(l.ips))]
	ctx, cancel := context.WithTimeout(context.Background(), l.timeout)
	defer cancel()
	d := ws.Dialer{
		NetDial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			nd := net.Dialer{LocalAddr: &net.TCPAddr{IP: ip}}
			return nd.DialContext(ctx, network, addr)
		},
	}
	conn, br, _, err := d.Dial(ctx, l.url)
	if err != nil {
		return err
	}
	var r io.Reader = conn
	if br != nil {
		r = br
	}
	_ = conn.SetReadDeadline(time.Now().Add(l.timeout))
	f, err := ws.ReadFrame(r)
	if err != nil || f.Header.OpCode != ws.OpText || !strings.Contains(string(f.Payload), "connection_established") {
		conn.Close()
		return fmt.Errorf("first frame: op=%v err=%v", f.Header.OpCode, err)
	}
	if l.subscribe != "" {
		ch := l.subscribe
		if strings.Contains(ch, "%d") {
			ch = strings.ReplaceAll(ch, "%d", strconv.FormatUint(seq, 10))
		}
		msg, _ := json.Marshal(map[string]any{"event": "pusher:subscribe", "data": map[string]string{"channel": ch}})
		_ = conn.SetWriteDeadline(time.Now().Add(l.timeout))
		if err := ws.WriteFrame(conn, ws.MaskFrameInPlace(ws.NewTextFrame(msg))); err != nil {
			conn.Close()
			return fmt.Errorf("subscribe: %w", err)
		}
		_ = conn.SetWriteDeadline(time.Time{})
		for {
			f, err := ws.ReadFrame(r)
			if err != nil {
				conn.Close()
				return fmt.Errorf("subscribe %s: %w", ch, err)
			}
			if f.Header.OpCode == ws.OpText && strings.Contains(string(f.Payload), "subscription_succeeded") {
				break
			}
			if f.Header.OpCode == ws.OpClose || strings.Contains(string(f.Payload), "pusher:error") {
				conn.Close()
				return fmt.Errorf("subscribe %s: %s", ch, f.Payload)
			}
		}
	}
	_ = conn.SetReadDeadline(time.Time{})
	if br != nil && br.Buffered() > 0 {
		l.count(int64(br.Buffered()))
	}
	if br != nil {
		ws.PutReader(br)
	}
	l.mu.Lock()
	l.conns = append(l.conns, conn)
	l.mu.Unlock()
	l.total.Add(1)
	go l.drain(conn)
	return nil
}

func (l *loader) drain(c net.Conn) {
	buf := make([]byte, 256)
	for {
		n, err := c.Read(buf)
		if n > 0 {
			l.count(int64(n))
		}
		if err != nil {
			return
		}
	}
}

// count adds n received bytes and records when the expected total is reached.
func (l *loader) count(n int64) {
	rx := l.rx.Add(n)
	if t := l.target.Load(); t > 0 && rx >= t && rx-n < t {
		l.reached.CompareAndSwap(0, time.Now().UnixNano())
	}
}

// expect arms the timestamp for the moment rx reaches b bytes.
func (l *loader) expect(b int64) {
	l.reached.Store(0)
	l.target.Store(b)
	if l.rx.Load() >= b {
		l.reached.CompareAndSwap(0, time.Now().UnixNano())
	}
}

func (l *loader) closeAll() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, c := range l.conns {
		c.Close()
	}
	l.conns = nil
}

func raiseNofile() {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err == nil && rl.Cur < rl.Max {
		rl.Cur = rl.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl)
	}
}
