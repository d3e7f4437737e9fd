// Package edge is Herald's WebSocket endpoint, and the only package that uses
// the WebSocket library (github.com/gobwas/ws, for the handshake and framing).
//
// Connection model: after the HTTP upgrade the socket leaves the Go runtime's
// poller and is watched by one epoll instance of ours, edge-triggered. An idle
// connection owns no goroutine and no buffer: a reader goroutine starts only
// when bytes arrive, and a small pool of flusher goroutines writes queued
// frames with writev, coalescing whatever accumulated. Frames for many
// connections are encoded once and shared. See the README's design notes.
package edge

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"

	"github.com/heraldrt/herald/internal/apps"
	"github.com/heraldrt/herald/internal/protocol"
	"github.com/heraldrt/herald/internal/session"
	"github.com/heraldrt/herald/internal/sysfd"
)

// Config tunes the endpoint. Zero values mean the defaults given.
type Config struct {
	// PathPrefix is prepended to /app/{key}, e.g. "/ws". Default "".
	PathPrefix string
	// PongTimeout is how long a pinged, silent peer has to answer before it is
	// closed with 4201. Default 30 s.
	PongTimeout time.Duration
	// SweepInterval is how often idle connections are checked. Default 1 s.
	SweepInterval time.Duration
	// Flushers is the number of writer goroutines. Default GOMAXPROCS.
	Flushers int
	// CloseGrace bounds how long a closing connection may take to drain its
	// queue before it is cut. Default 5 s.
	CloseGrace time.Duration
	// MaxConnectionsPerIP caps the connections of one source address (an
	// IPv4 address, an IPv6 /64), across apps; past it the handshake is
	// refused with 4100. Default 0: unlimited.
	MaxConnectionsPerIP int
}

// Stats are the endpoint's counters.
type Stats struct {
	opened        atomic.Int64
	closed        atomic.Int64
	slowConsumers atomic.Int64
	bytesIn       atomic.Int64
	bytesOut      atomic.Int64
	messagesIn    atomic.Int64
	rejected      atomic.Int64
	reasons       [numCloseReasons]atomic.Int64
}

// CloseReason is the bounded category a connection's close is counted under.
type CloseReason uint8

// Close reasons. The free-text reasons of the log lines map onto these.
const (
	reasonUnset         CloseReason = iota
	ReasonClient                    // the client closed or went away
	ReasonShutdown                  // server shutting down (4200)
	ReasonPongTimeout               // silent peer (4201)
	ReasonTerminated                // the app terminated it, or it never authorized (4009)
	ReasonSlowConsumer              // its queue passed max_queued_bytes
	ReasonProtocolError             // bad frame, frame too big, bad UTF-8
	ReasonNetworkError              // read or write error
	ReasonError                     // another Pusher error close (4xxx)
	numCloseReasons
)

// CloseReasonNames are the label values, indexed by CloseReason.
var CloseReasonNames = [numCloseReasons]string{"", "client", "shutdown", "pong_timeout", "terminated",
	"slow_consumer", "protocol_error", "network_error", "error"}

// closeCategory maps a close code and its free-text reason to a CloseReason.
func closeCategory(code int, reason string) CloseReason {
	switch {
	case reason == "client closed" || reason == "client went away":
		return ReasonClient
	case code == int(protocol.CodeReconnect) || reason == "shutdown":
		return ReasonShutdown
	case code == int(protocol.CodePongTimeout):
		return ReasonPongTimeout
	case code == int(protocol.CodeUnauthorized):
		return ReasonTerminated
	case reason == slowConsumerReason:
		return ReasonSlowConsumer
	case code == 1002 || code == 1007 || code == 1009:
		return ReasonProtocolError
	case strings.HasPrefix(reason, "read error") || strings.HasPrefix(reason, "write error"):
		return ReasonNetworkError
	}
	return ReasonError
}

// StatsSnapshot is a copy of the counters.
type StatsSnapshot struct {
	Opened, Closed, SlowConsumers, BytesIn, BytesOut, MessagesIn, Rejected int64
	// ClosedBy counts closed connections by CloseReason (index 0 unused).
	ClosedBy [numCloseReasons]int64
}

// Server serves the WebSocket endpoint. Create it with New, mount it on an
// http.ServeMux at PathPrefix+"/app/", and Shutdown it when done.
type Server struct {
	cfg    Config
	node   *session.Node
	apps   *apps.Registry
	log    *slog.Logger
	poller *poller
	flushq *flushQueue
	stats  Stats
	wg     sync.WaitGroup // reader goroutines
	bg     sync.WaitGroup // poller, flushers, sweeper
	quit   chan struct{}
	stop   sync.Once
	drain  atomic.Bool
	peers  peers // per-address limit, TLS bridges (peers.go)
}

// New starts the poller, the flushers and the idle sweeper.
func New(cfg Config, node *session.Node, log *slog.Logger) (*Server, error) {
	if cfg.PongTimeout <= 0 {
		cfg.PongTimeout = apps.PongTimeout
	}
	if cfg.SweepInterval <= 0 {
		cfg.SweepInterval = time.Second
	}
	if cfg.Flushers <= 0 {
		cfg.Flushers = runtime.GOMAXPROCS(0)
	}
	if cfg.CloseGrace <= 0 {
		cfg.CloseGrace = 5 * time.Second
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	p, err := newPoller()
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, node: node, apps: node.Apps, log: log, poller: p, flushq: newFlushQueue(), quit: make(chan struct{})}
	s.peers.max = cfg.MaxConnectionsPerIP
	s.bg.Add(2 + cfg.Flushers)
	go func() { defer s.bg.Done(); p.run() }()
	for i := 0; i < cfg.Flushers; i++ {
		go func() { defer s.bg.Done(); s.flusher() }()
	}
	go func() { defer s.bg.Done(); s.sweeper() }()
	return s, nil
}

// Stats returns a snapshot of the endpoint's counters.
func (s *Server) Stats() StatsSnapshot {
	st := StatsSnapshot{
		Opened: s.stats.opened.Load(), Closed: s.stats.closed.Load(),
		SlowConsumers: s.stats.slowConsumers.Load(), BytesIn: s.stats.bytesIn.Load(),
		BytesOut: s.stats.bytesOut.Load(), MessagesIn: s.stats.messagesIn.Load(),
		Rejected: s.stats.rejected.Load(),
	}
	for i := range st.ClosedBy {
		st.ClosedBy[i] = s.stats.reasons[i].Load()
	}
	return st
}

// flusherSlice is how long a flusher writes before it yields its P. A
// flusher with a backlog would otherwise hold the P for the scheduler's whole
// 10 ms time slice while the goroutines that publish (HTTP handlers, broker
// readers) and read wait: with GOMAXPROCS flushers busy, publish→deliver
// latency grew by milliseconds under load.
const flusherSlice = 50 * time.Microsecond

func (s *Server) flusher() {
	batch := make([]*conn, 0, 64)
	for {
		batch = s.flushq.take(batch, 64)
		if batch == nil {
			return
		}
		start := time.Now()
		for i, c := range batch {
			c.flush()
			batch[i] = nil
			if time.Since(start) >= flusherSlice {
				runtime.Gosched()
				start = time.Now()
			}
		}
	}
}

// sweeper pings silent connections and closes those that do not answer, and
// cuts closing connections that do not drain in time.
func (s *Server) sweeper() {
	t := time.NewTicker(s.cfg.SweepInterval)
	defer t.Stop()
	var conns []*conn
	for {
		select {
		case <-s.quit:
			return
		case <-t.C:
		}
		now := time.Now().UnixNano()
		conns = s.poller.snapshot(conns[:0])
		for i, c := range conns {
			s.check(c, now)
			conns[i] = nil
		}
	}
}

var pingFrame = encodeFrame(ws.OpPing, nil)

func (s *Server) check(c *conn, now int64) {
	c.wmu.Lock()
	closing, since := c.closing, c.closingAt
	c.wmu.Unlock()
	if closing {
		if since > 0 && now-since > int64(s.cfg.CloseGrace) {
			c.teardownAsync("close timed out")
		}
		return
	}
	if pinged := c.pingedAt.Load(); pinged != 0 {
		if now-pinged >= int64(s.cfg.PongTimeout) {
			c.SendPayload(protocol.ErrorFrame(protocol.CodePongTimeout, protocol.CodePongTimeout.Message(), ""))
			c.Close(protocol.CodePongTimeout, protocol.CodePongTimeout.Message())
		}
		return
	}
	if now-c.lastRead.Load() >= int64(c.app.ActivityTimeoutDuration()) {
		c.pingedAt.Store(now)
		c.enqueue(pingFrame, false)
		c.SendPayload(protocol.Ping)
	}
}

// ServeHTTP upgrades /app/{key} requests and runs the handshake checks in the
// documented order: path (4005), app (4001), protocol (4007), disabled (4003),
// origin (4009), connections of the source address (4100), quota (4004). A
// failed check completes the upgrade, sends pusher:error and closes with the
// same code.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	key, pathOK := s.appKey(r.URL.Path)
	if !isUpgrade(r) {
		if !pathOK {
			http.NotFound(w, r)
			return
		}
		http.Error(w, "Herald: this endpoint expects a WebSocket upgrade (Pusher protocol 7)", http.StatusBadRequest)
		return
	}
	if s.drain.Load() {
		http.Error(w, "Herald: shutting down", http.StatusServiceUnavailable)
		return
	}
	nc, rw, _, err := ws.HTTPUpgrader{}.Upgrade(r, w)
	if err != nil {
		if nc != nil {
			nc.Close()
		}
		return
	}
	reject := func(code protocol.Code) {
		s.stats.rejected.Add(1)
		s.log.Debug("connection rejected", "code", int(code), "remote", r.RemoteAddr)
		_ = nc.SetWriteDeadline(time.Now().Add(2 * time.Second))
		_, _ = nc.Write(EncodeText(protocol.ErrorFrame(code, code.Message(), "")))
		_, _ = nc.Write(closeFrame(int(code), code.Message()))
		nc.Close()
	}
	if !pathOK {
		reject(protocol.CodePathNotFound)
		return
	}
	app := s.apps.ByKey(key)
	if app == nil {
		reject(protocol.CodeAppNotFound)
		return
	}
	if p := r.URL.Query().Get("protocol"); p != "" {
		v, err := strconv.Atoi(p)
		if err != nil || v < protocol.MinProtocol || v > protocol.MaxProtocol {
			reject(protocol.CodeUnsupportedProto)
			return
		}
	}
	if !app.IsEnabled() {
		reject(protocol.CodeAppDisabled)
		return
	}
	addr, code, msg := s.admit(r, app) // origin 4009, per-address 4100 (peers.go)
	if code != 0 {
		s.refuse(nc, code, msg, r.RemoteAddr)
		return
	}
	c := &conn{srv: s, app: app, fd: -1}
	sess, err := s.node.Start(app, c)
	if err != nil {
		s.peers.release(addr)
		reject(protocol.CodeOverQuota)
		return
	}
	c.sess = sess
	fd, err := s.takeOver(nc, c, addr) // the socket, or a TLS bridge (tls.go)
	if err != nil {
		s.log.Error("cannot take over socket", "err", err)
		sess.Closed()
		nc.Close()
		return
	}
	c.fdMu.Lock()
	c.fd = fd
	c.fdMu.Unlock()
	c.lastRead.Store(time.Now().UnixNano())
	s.stats.opened.Add(1)
	c.SendPayload(sess.Established())
	if n := rw.Reader.Buffered(); n > 0 {
		b, _ := rw.Reader.Peek(n)
		if err := c.feed(append([]byte(nil), b...)); err != nil {
			c.stopReading()
			c.closeWith(int(closeStatus(err)), err.Error())
		}
	}
	if err := s.poller.add(c); err != nil {
		if err != errClosed {
			s.log.Error("epoll add failed", "err", err)
		}
		c.teardown("epoll add failed")
	}
}

// detach takes the socket away from the Go runtime (sysfd.Detach).
func detach(nc net.Conn) (int, error) {
	fd, err := sysfd.Detach(nc)
	if err != nil {
		return -1, fmt.Errorf("edge: %w", err)
	}
	return fd, nil
}

// appKey extracts {key} from PathPrefix/app/{key}.
func (s *Server) appKey(path string) (string, bool) {
	rest, ok := strings.CutPrefix(path, s.cfg.PathPrefix+"/app/")
	if !ok || rest == "" || strings.Contains(rest, "/") {
		return "", false
	}
	return rest, true
}

func isUpgrade(r *http.Request) bool {
	return strings.EqualFold(r.Header.Get("Upgrade"), "websocket")
}

// Connections returns the number of open WebSocket connections.
func (s *Server) Connections() int {
	s.poller.mu.RLock()
	defer s.poller.mu.RUnlock()
	return s.poller.n
}

// Shutdown stops accepting connections, closes every open one with code
// (4200 tells clients to reconnect at once), waits until they are gone or ctx
// ends, and stops the endpoint's goroutines.
func (s *Server) Shutdown(ctx context.Context, code protocol.Code) error {
	s.drain.Store(true)
	for _, c := range s.poller.snapshot(nil) {
		c.Close(code, "server shutting down")
	}
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	var err error
wait:
	for s.Connections() > 0 {
		select {
		case <-ctx.Done():
			err = ctx.Err()
			break wait
		case <-t.C:
		}
	}
	for _, c := range s.poller.snapshot(nil) {
		c.teardown("shutdown")
	}
	s.stop.Do(func() {
		close(s.quit)
		s.poller.stop()
		s.flushq.close()
	})
	s.bg.Wait()
	s.wg.Wait()
	s.poller.close()
	return err
}
