package ops

import (
	"crypto/subtle"
	"net/http"
	"net/http/pprof"
	"strings"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Internal is the internal listener's handler: /metrics, /debug/pprof/ and
// the dashboard. Close ends its live streams (call it before shutting the
// listener down).
type Internal struct {
	mux   *http.ServeMux
	m     *Metrics
	token string
	dash  *dashboard
}

// NewInternal returns the handler. token protects the dashboard; empty
// refuses it.
func NewInternal(m *Metrics, token string) *Internal {
	in := &Internal{mux: http.NewServeMux(), m: m, token: token}
	in.dash = newDashboard(m)
	in.mux.Handle("GET /metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}))
	in.mux.HandleFunc("/debug/pprof/", pprof.Index)
	in.mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	in.mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	in.mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	in.mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	in.mux.HandleFunc("GET /dashboard", in.admin(in.dash.page))
	in.mux.HandleFunc("GET /dashboard/events", in.admin(in.dash.events))
	in.mux.HandleFunc("GET /dashboard/presence", in.admin(in.dash.presence))
	in.mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("Herald internal listener: /metrics, /debug/pprof/, /dashboard?token=…\n"))
	})
	return in
}

// ServeHTTP implements http.Handler.
func (in *Internal) ServeHTTP(w http.ResponseWriter, r *http.Request) { in.mux.ServeHTTP(w, r) }

// Start begins sampling the dashboard's history (one sample a second).
func (in *Internal) Start() { in.dash.start() }

// Close ends the dashboard's streams and its sampler.
func (in *Internal) Close() { in.dash.close() }

// admin checks the admin token (?token= or Authorization: Bearer).
func (in *Internal) admin(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		if in.token == "" {
			http.Error(w, "Herald dashboard: disabled; set admin_token in the config file (or HERALD_ADMIN_TOKEN) to enable it", http.StatusForbidden)
			return
		}
		got := r.URL.Query().Get("token")
		if b, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
			got = b
		}
		if subtle.ConstantTimeCompare([]byte(got), []byte(in.token)) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="herald"`)
			http.Error(w, "Herald dashboard: missing or wrong admin token (?token=… or Authorization: Bearer …)", http.StatusUnauthorized)
			return
		}
		h(w, r)
	}
}
