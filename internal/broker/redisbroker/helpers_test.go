package redisbroker

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldrt/herald/internal/broker"
	"github.com/heraldrt/herald/internal/redisx"
)

// sink collects delivered messages in a bounded channel; a full channel is
// counted as an overflow that fails the test.
type sink struct {
	ch       chan *broker.Message
	overflow atomic.Int64
}

func newSink() *sink { return &sink{ch: make(chan *broker.Message, 4096)} }

func (s *sink) handle(m *broker.Message) {
	select {
	case s.ch <- m:
	default:
		s.overflow.Add(1)
	}
}

// next waits up to d for a message.
func (s *sink) next(t testing.TB, d time.Duration) *broker.Message {
	t.Helper()
	select {
	case m := <-s.ch:
		return m
	case <-time.After(d):
		t.Fatalf("no message within %v", d)
		return nil
	}
}

// expect waits for a message on topic tp with payload p, failing on any
// other message first.
func (s *sink) expect(t testing.TB, tp broker.Topic, p string) *broker.Message {
	t.Helper()
	m := s.next(t, 3*time.Second)
	if m.Topic != tp || string(m.Payload) != p {
		t.Fatalf("got %+v %q, want %+v %q", m.Topic, m.Payload, tp, p)
	}
	return m
}

// tryRecv reports whether a message on tp with payload p arrives within d,
// skipping other messages.
func (s *sink) tryRecv(tp broker.Topic, p string, d time.Duration) bool {
	deadline := time.After(d)
	for {
		select {
		case m := <-s.ch:
			if m.Topic == tp && string(m.Payload) == p {
				return true
			}
		case <-deadline:
			return false
		}
	}
}

// node is one broker with its own Redis connections, as a Herald process has.
type node struct {
	be   *redisx.Backend
	br   *Broker
	sink *sink
}

var dbgLog *slog.Logger

func newNode(t testing.TB, shards []string, cluster string, o Options) *node {
	t.Helper()
	if o.Log == nil {
		o.Log = dbgLog
	}
	be, err := redisx.Dial(shards, cluster, redisx.Options{})
	if err != nil {
		t.Fatal(err)
	}
	n := &node{be: be, sink: newSink()}
	if n.br, err = New(be, n.sink.handle, o); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		n.br.Close()
		be.Close()
		if o := n.sink.overflow.Load(); o > 0 {
			t.Errorf("sink overflowed %d times", o)
		}
	})
	return n
}

func (n *node) publish(t testing.TB, tp broker.Topic, payload string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := n.br.Publish(ctx, &broker.Message{Topic: tp, Kind: broker.KindEvent, Payload: []byte(payload)}); err != nil {
		t.Fatalf("publish %+v: %v", tp, err)
	}
}

func (n *node) subscribe(t testing.TB, tps ...broker.Topic) {
	t.Helper()
	for _, tp := range tps {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		err := n.br.Subscribe(ctx, tp)
		cancel()
		if err != nil {
			t.Fatalf("subscribe %+v: %v", tp, err)
		}
	}
}

// topicsOn returns n topics of app that the backend places on shard idx.
func topicsOn(be *redisx.Backend, app string, idx, n int) []broker.Topic {
	var out []broker.Topic
	for i := 0; len(out) < n; i++ {
		tp := broker.Topic{App: app, Channel: fmt.Sprintf("private-ch-%d", i)}
		if j, _ := be.For(tp.App, tp.Channel); j == idx {
			out = append(out, tp)
		}
	}
	return out
}

// eventually polls f every 20ms until it holds or d passes.
func eventually(t testing.TB, d time.Duration, what string, f func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !f() {
		if time.Since(start) > d {
			t.Fatalf("%s: not within %v", what, d)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return time.Since(start)
}

// freezeProxy forwards TCP to a Redis server and can make the connections
// that subscribed go silent: what the server sends them is swallowed while
// the connection stays open, the failure the liveness probe exists for.
type freezeProxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	conns  map[*proxyConn]struct{}
	wg     sync.WaitGroup
}

type proxyConn struct {
	client, server net.Conn
	subscriber     atomic.Bool
	frozen         atomic.Bool
}

func startProxy(t testing.TB, target string) *freezeProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &freezeProxy{ln: ln, target: target, conns: map[*proxyConn]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

func (p *freezeProxy) URL() string { return "redis://" + p.ln.Addr().String() }

func (p *freezeProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		s, err := net.DialTimeout("tcp", p.target, time.Second)
		if err != nil {
			c.Close()
			continue
		}
		pc := &proxyConn{client: c, server: s}
		p.mu.Lock()
		p.conns[pc] = struct{}{}
		p.mu.Unlock()
		p.wg.Add(2)
		go p.pipe(pc, c, s, true)
		go p.pipe(pc, s, c, false)
	}
}

func (p *freezeProxy) pipe(pc *proxyConn, from, to net.Conn, up bool) {
	defer p.wg.Done()
	defer func() {
		pc.client.Close()
		pc.server.Close()
		p.mu.Lock()
		delete(p.conns, pc)
		p.mu.Unlock()
	}()
	buf := make([]byte, 32<<10)
	for {
		n, err := from.Read(buf)
		if n > 0 {
			if up && bytes.Contains(buf[:n], []byte("SUBSCRIBE")) {
				pc.subscriber.Store(true)
			}
			if up || !pc.frozen.Load() {
				if _, werr := to.Write(buf[:n]); werr != nil {
					return
				}
			}
		}
		if err != nil {
			return // EOF or closed: tear the pair down
		}
	}
}

// freezeSubscribers silences every connection that has subscribed so far
// and reports how many.
func (p *freezeProxy) freezeSubscribers() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for pc := range p.conns {
		if pc.subscriber.Load() {
			pc.frozen.Store(true)
			n++
		}
	}
	return n
}

func (p *freezeProxy) close() {
	p.ln.Close()
	p.mu.Lock()
	for pc := range p.conns {
		pc.client.Close()
		pc.server.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}
