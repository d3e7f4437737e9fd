// Package server is Herald's composition root: it builds the broker, state,
// hub, WebSocket endpoint and HTTP API from a configuration, serves them on one
// listener, and shuts them down in order.
package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/heraldrt/herald/internal/api"
	"github.com/heraldrt/herald/internal/apps"
	"github.com/heraldrt/herald/internal/broker"
	"github.com/heraldrt/herald/internal/broker/redisbroker"
	"github.com/heraldrt/herald/internal/edge"
	"github.com/heraldrt/herald/internal/history"
	"github.com/heraldrt/herald/internal/hub"
	"github.com/heraldrt/herald/internal/ops"
	"github.com/heraldrt/herald/internal/protocol"
	"github.com/heraldrt/herald/internal/push"
	"github.com/heraldrt/herald/internal/session"
	"github.com/heraldrt/herald/internal/state"
	"github.com/heraldrt/herald/internal/webhooks"
)

// Options configure a Server.
type Options struct {
	// Addr is the listen address for WebSocket and HTTP API. Default ":6001".
	Addr string
	// Config lists the apps and server settings. Required.
	Config *apps.Config
	// Log receives structured logs. Default: discard.
	Log *slog.Logger
	// Edge and API tune the endpoints (tests shorten timeouts).
	Edge edge.Config
	API  api.Config
	// Webhooks tunes webhook delivery (tests shorten the delays).
	Webhooks webhooks.Config
	// InternalAddr is the listen address of the internal listener (/metrics,
	// /debug/pprof/, /dashboard); "" or "off": none.
	InternalAddr string
	// InternalOptional: when the internal address cannot be bound (the
	// default port taken by another process), log a warning and go on.
	InternalOptional bool
}

// Server is one Herald process.
type Server struct {
	opts     Options
	log      *slog.Logger
	node     *session.Node
	broker   broker.Broker
	edge     *edge.Server
	webhooks *webhooks.Dispatcher
	http     *http.Server
	ln       net.Listener
	closers  []func() // Redis state and connections, closed last
	draining atomic.Bool
	served   chan error
	push     *push.Service // direct push (closed before the broker)
	dr       drainer

	tls      *tls.Config // public listener's TLS (tls.go); nil: plain TCP
	metrics  *ops.Metrics
	internal *ops.Internal
	ihttp    *http.Server
	iln      net.Listener
	iserved  chan error
}

// New builds a server; Start makes it listen.
func New(opts Options) (*Server, error) {
	if opts.Config == nil {
		return nil, errors.New("server: no config")
	}
	if opts.Addr == "" {
		opts.Addr = ":6001"
	}
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	reg, err := apps.NewRegistry(opts.Config.Apps)
	if err != nil {
		return nil, err
	}
	metrics := ops.NewMetrics()
	if opts.Webhooks.OnAttempt == nil {
		opts.Webhooks.OnAttempt = metrics.WebhookAttempt
	}
	if opts.API.Metrics == nil {
		opts.API.Metrics = metrics
	}
	node := &session.Node{Apps: reg, Log: log}
	clustered := len(opts.Config.Redis) > 0 || opts.Config.RedisCluster != ""
	if clustered && opts.Webhooks.StillTrue == nil {
		// A channel vacated here may be re-occupied through another node
		// within the hold: ask the shared state before sending.
		opts.Webhooks.StillTrue = func(app, channel, userID string) bool {
			return stillGone(node, app, channel, userID)
		}
	}
	wh := webhooks.New(opts.Webhooks, reg.All(), log)
	node.Observer = wh
	var redisBroker *redisbroker.Broker
	var pushSvc *push.Service
	var b broker.Broker
	var closers []func()
	if cfg := opts.Config; clustered {
		// A cluster: channels and state in Redis; the hub keeps a channel's
		// Redis subscription a second after its last local subscriber leaves,
		// so flapping subscribers do not churn Redis.
		h := hub.New(nil, edge.EncodeText, time.Second)
		rb, peers, ps, cl, err := dialRedis(cfg, h, node, log)
		if err != nil {
			_ = wh.Close(context.Background())
			return nil, err
		}
		h.SetBroker(rb)
		node.Hub, b, closers = h, rb, cl
		pushSvc = ps
		redisBroker = rb
		if opts.API.Nodes == nil {
			opts.API.Nodes = peers.count
		}
	} else {
		h := hub.New(nil, edge.EncodeText, 0)
		b = broker.NewMemory(h.Deliver)
		h.SetBroker(b)
		node.Hub = h
		node.Presence = state.NewMemoryPresence()
		node.Occupancy = state.NewMemoryOccupancy()
		node.Users = state.NewMemoryUsers()
		node.Cache = state.NewMemoryCache()
		node.History = history.NewMemory(b, history.MemoryOptions{})
	}
	node.Broker = b
	if pushSvc == nil {
		pushSvc = push.New(push.Options{Node: node, Log: log}) // one process: local delivery
	}
	if opts.API.Push == nil {
		opts.API.Push = pushSvc
	}
	ecfg := opts.Edge
	if ecfg.PathPrefix == "" {
		ecfg.PathPrefix = opts.Config.PathPrefix
	}
	if ecfg.MaxConnectionsPerIP == 0 {
		ecfg.MaxConnectionsPerIP = opts.Config.MaxConnectionsPerIP
	}
	tlsCfg, err := loadTLS(opts.Config, log)
	if err != nil {
		_ = wh.Close(context.Background())
		return nil, err
	}
	es, err := edge.New(ecfg, node, log)
	if err != nil {
		_ = wh.Close(context.Background()) // nothing is queued yet
		return nil, fmt.Errorf("server: websocket endpoint: %w", err)
	}
	s := &Server{opts: opts, log: log, node: node, broker: b, edge: es, webhooks: wh, closers: closers, tls: tlsCfg,
		served: make(chan error, 1), metrics: metrics, iserved: make(chan error, 1), push: pushSvc}
	s.dr.done = make(chan struct{})
	src := ops.Sources{Apps: opts.Config.Apps, Node: node, Edge: es, Webhooks: wh, Redis: redisBroker, Push: pushSvc}
	mux := http.NewServeMux()
	// Roles: an edge node holds WebSocket connections, an api node serves the
	// HTTP API; "all" (the default) does both.
	role := opts.Config.Role
	if role != apps.RoleAPI {
		mux.Handle(ecfg.PathPrefix+"/app/", es)
	}
	if role != apps.RoleEdge {
		a := api.New(opts.API, node, log)
		src.API = a
		mux.Handle("/apps/", a)
	}
	metrics.Bind(src)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"status":"ok"}`))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if s.draining.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte(`{"status":"draining"}`))
			return
		}
		_, _ = w.Write([]byte(`{"status":"ready"}`))
	})
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("Herald: a Pusher Channels compatible server. WebSocket: " + ecfg.PathPrefix + "/app/{key}; HTTP API: /apps/{id}/...\n"))
	})
	s.http = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       60 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	return s, nil
}

// Node returns the process's shared session state (for tests and tools).
func (s *Server) Node() *session.Node { return s.node }

// Edge returns the WebSocket endpoint.
func (s *Server) Edge() *edge.Server { return s.edge }

// Start listens on the configured address and serves in the background.
func (s *Server) Start() error {
	ln, err := net.Listen("tcp", s.opts.Addr)
	if err != nil {
		return fmt.Errorf("server: listen %s: %w", s.opts.Addr, err)
	}
	if s.tls != nil {
		ln = tls.NewListener(ln, s.tls)
	}
	s.ln = ln
	if ia := s.opts.InternalAddr; ia != "" && ia != "off" {
		iln, err := net.Listen("tcp", ia)
		switch {
		case err != nil && !s.opts.InternalOptional:
			ln.Close()
			return fmt.Errorf("server: internal listener %s: %w", ia, err)
		case err != nil:
			s.log.Warn("no internal listener (metrics, pprof, dashboard): cannot listen; set --internal-addr", "addr", ia, "err", err)
		default:
			s.iln = iln
			s.internal = ops.NewInternal(s.metrics, s.opts.Config.AdminToken)
			s.internal.HandleAdmin("POST /admin/drain", s.handleDrain)
			s.internal.HandleAdmin("GET /admin/drain", s.handleDrain)
			s.internal.Start()
			// No write timeout: pprof profiles and dashboard streams are long.
			s.ihttp = &http.Server{Handler: s.internal, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 120 * time.Second,
				ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelDebug)}
			go func() { s.iserved <- s.ihttp.Serve(iln) }()
			s.log.Info("internal listener (metrics, pprof, dashboard)", "addr", iln.Addr().String(),
				"dashboard", s.opts.Config.AdminToken != "")
		}
	}
	go func() { s.served <- s.http.Serve(ln) }()
	s.log.Info("herald listening", "addr", ln.Addr().String(), "tls", s.tls != nil, "apps", len(s.opts.Config.Apps),
		"role", or(s.opts.Config.Role, apps.RoleAll))
	return nil
}

// Addr returns the listening address (after Start).
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Shutdown stops in a fixed order: refuse readiness and new connections (a
// drain in progress ends here), close the remaining WebSocket connections at
// once with 4200 so clients reconnect elsewhere, stop the HTTP
// server, send the webhooks still queued (held ones at once) until ctx ends,
// then close the broker.
func (s *Server) Shutdown(ctx context.Context) error {
	s.draining.Store(true)
	s.stopDrain()
	errE := s.edge.Shutdown(ctx, protocol.CodeReconnect)
	errH := s.http.Shutdown(ctx)
	errW := s.webhooks.Close(ctx)
	s.push.Close()
	errB := s.broker.Close()
	for _, c := range s.closers {
		c()
	}
	if s.ihttp != nil {
		s.internal.Close() // ends dashboard streams, so Shutdown does not wait on them
		_ = s.ihttp.Shutdown(ctx)
		if err := <-s.iserved; err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Warn("internal listener", "err", err)
		}
	}
	if s.ln == nil {
		return errors.Join(errE, errH, errW, errB)
	}
	if err := <-s.served; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return errors.Join(errE, errH, errW, errB)
}

// InternalAddr returns the internal listener's address, or nil when it is off.
func (s *Server) InternalAddr() net.Addr {
	if s.iln == nil {
		return nil
	}
	return s.iln.Addr()
}

// Metrics returns the server's Prometheus metrics.
func (s *Server) Metrics() *ops.Metrics { return s.metrics }

// Webhooks returns the webhook dispatcher (for its Stats).
func (s *Server) Webhooks() *webhooks.Dispatcher { return s.webhooks }

func or(v, def string) string {
	if v == "" {
		return def
	}
	return v
}
