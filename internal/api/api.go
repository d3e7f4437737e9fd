// Package api serves the Pusher HTTP API (PROTOCOL.md §7): signed requests to
// trigger events and to query channels and users.
package api

import (
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"math"
	"net/http"
	"regexp"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/heraldrt/herald/internal/apps"
	"github.com/heraldrt/herald/internal/auth"
	"github.com/heraldrt/herald/internal/protocol"
	"github.com/heraldrt/herald/internal/ratelimit"
	"github.com/heraldrt/herald/internal/session"
)

// Config tunes the API. Zero values mean the defaults given.
type Config struct {
	// TimestampWindow is how far auth_timestamp may be from the server's
	// clock. Default 600 s (the documented window).
	TimestampWindow time.Duration
	// MaxBodySize caps a request body in bytes (413 past it). Default 1 MiB.
	MaxBodySize int64
	// Now is the clock; default time.Now.
	Now func() time.Time
	// Nodes returns how many API-serving nodes share the apps' request rates
	// (live nodes seen in the shared backend). Each node allows 1/Nodes of an
	// app's api_requests_per_second. Nil: 1 (a single process).
	Nodes func() int
	// Metrics, when set, observes every request and every broker publish.
	Metrics Metrics
	// Push serves the direct push endpoints (…/users/{id}/events,
	// …/sockets/{id}/events). Nil: they are not served (404).
	Push Pusher
}

// Metrics observes the API for the metrics endpoint.
type Metrics interface {
	// Request reports one request: its route pattern (a bounded set, never the
	// raw path), the status answered and how long it took.
	Request(route string, status int, d time.Duration)
	// Publish reports one broker publish of an API trigger.
	Publish(d time.Duration, err error)
}

// Routes are the route labels Metrics.Request reports.
var Routes = []string{"events", "batch_events", "channels", "channel", "users", "terminate_connections",
	"push_user", "push_socket", "unknown"}

// API is an http.Handler for /apps/….
type API struct {
	cfg  Config
	node *session.Node
	log  *slog.Logger
	mux  *http.ServeMux

	limits   ratelimit.Keyed
	rejected atomic.Int64
}

// New returns the API handler.
func New(cfg Config, node *session.Node, log *slog.Logger) *API {
	if cfg.TimestampWindow <= 0 {
		cfg.TimestampWindow = 600 * time.Second
	}
	if cfg.MaxBodySize <= 0 {
		cfg.MaxBodySize = 1 << 20
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	a := &API{cfg: cfg, node: node, log: log, mux: http.NewServeMux()}
	a.mux.HandleFunc("POST /apps/{app}/events", a.observed("events", a.signed(a.events)))
	a.mux.HandleFunc("POST /apps/{app}/batch_events", a.observed("batch_events", a.signed(a.batchEvents)))
	a.mux.HandleFunc("GET /apps/{app}/channels", a.observed("channels", a.signed(a.channels)))
	a.mux.HandleFunc("GET /apps/{app}/channels/{channel}", a.observed("channel", a.signed(a.channel)))
	a.mux.HandleFunc("GET /apps/{app}/channels/{channel}/users", a.observed("users", a.signed(a.users)))
	a.mux.HandleFunc("GET /apps/{app}/channels/{channel}/history", a.observed("history", a.signed(a.history)))
	a.mux.HandleFunc("POST /apps/{app}/users/{user}/terminate_connections", a.observed("terminate_connections", a.signed(a.terminate)))
	if cfg.Push != nil {
		a.mux.HandleFunc("POST /apps/{app}/users/{user}/events", a.observed("push_user", a.signed(a.pushUser)))
		a.mux.HandleFunc("POST /apps/{app}/sockets/{socket}/events", a.observed("push_socket", a.signed(a.pushSocket)))
	}
	a.mux.HandleFunc("/apps/", a.observed("unknown", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "No such API endpoint: "+r.Method+" "+r.URL.Path)
	}))
	return a
}

// ServeHTTP implements http.Handler.
func (a *API) ServeHTTP(w http.ResponseWriter, r *http.Request) { a.mux.ServeHTTP(w, r) }

// observed reports each request of route to cfg.Metrics.
func (a *API) observed(route string, h http.HandlerFunc) http.HandlerFunc {
	m := a.cfg.Metrics
	if m == nil {
		return h
	}
	return func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		h(sw, r)
		m.Request(route, sw.status, time.Since(start))
	}
}

// statusWriter remembers the status a handler answered.
type statusWriter struct {
	http.ResponseWriter
	status int
	wrote  bool
}

func (w *statusWriter) WriteHeader(code int) {
	if !w.wrote {
		w.status, w.wrote = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	w.wrote = true
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// request is a verified API call.
type request struct {
	app  *apps.App
	body []byte
	r    *http.Request
}

// signed wraps h with app lookup, body reading and signature verification.
func (a *API) signed(h func(w http.ResponseWriter, req *request)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		app := a.node.Apps.ByID(r.PathValue("app"))
		if app == nil {
			writeError(w, http.StatusNotFound, "Unknown app id")
			return
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, a.cfg.MaxBodySize))
		if err != nil {
			var tooBig *http.MaxBytesError
			if errors.As(err, &tooBig) {
				writeError(w, http.StatusRequestEntityTooLarge, "Request body is too large")
				return
			}
			writeError(w, http.StatusBadRequest, "Cannot read request body")
			return
		}
		err = auth.VerifyRequest(auth.Request{Method: r.Method, Path: r.URL.Path, Query: r.URL.Query(), Body: body},
			func(key string) (string, bool) {
				if key == app.Key {
					return app.Secret, true
				}
				return "", false
			}, a.cfg.Now(), a.cfg.TimestampWindow)
		if err != nil {
			writeError(w, http.StatusUnauthorized, err.Error())
			return
		}
		if !app.IsEnabled() {
			writeError(w, http.StatusForbidden, "Application disabled")
			return
		}
		if !a.allow(w, app) {
			return
		}
		if protocol.TooDeep(body, protocol.MaxJSONDepth) {
			writeError(w, http.StatusBadRequest, "Invalid JSON body: "+protocol.ErrTooDeep.Error())
			return
		}
		h(w, &request{app: app, body: body, r: r})
	}
}

// allow applies the app's API request rate (after authentication, so that
// unsigned traffic cannot use up an app's quota). It sets the X-RateLimit
// headers and answers 429 with Retry-After when the bucket is empty.
func (a *API) allow(w http.ResponseWriter, app *apps.App) bool {
	if app.APIRequestsPerSecond <= 0 {
		return true
	}
	// Several nodes: each enforces its share, so the cluster-wide rate stays
	// near the limit while a load balancer spreads requests evenly.
	share := 1
	if a.cfg.Nodes != nil {
		share = max(1, a.cfg.Nodes())
	}
	rate := math.Max(1, float64(app.APIRequestsPerSecond)/float64(share))
	ok, remaining, wait := a.limits.Take(app.ID, a.cfg.Now(), rate, rate)
	h := w.Header()
	h.Set("X-RateLimit-Limit", strconv.Itoa(int(rate)))
	h.Set("X-RateLimit-Remaining", strconv.Itoa(int(remaining)))
	if ok {
		return true
	}
	a.rejected.Add(1)
	h.Set("Retry-After", strconv.Itoa(max(1, int(math.Ceil(wait.Seconds())))))
	writeError(w, http.StatusTooManyRequests, "Too many requests: the app's limit is "+
		strconv.Itoa(app.APIRequestsPerSecond)+" API requests per second")
	return false
}

// RateLimited returns how many requests were refused with 429 so far.
func (a *API) RateLimited() int64 { return a.rejected.Load() }

// writeJSON writes a 200 response.
func writeJSON(w http.ResponseWriter, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "cannot encode response")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(b)
}

// writeError writes {"error": msg, "code": status}.
func writeError(w http.ResponseWriter, status int, msg string) {
	b, _ := json.Marshal(struct {
		Error string `json:"error"`
		Code  int    `json:"code"`
	}{msg, status})
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

var socketIDRe = regexp.MustCompile(`^\d+\.\d+$`)
