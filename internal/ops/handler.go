package ops

import (
	"crypto/subtle"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
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

// NewInternal returns the handler. token protects the dashboard (empty
// refuses it) and pprof (empty: loopback clients only); /metrics is open.
func NewInternal(m *Metrics, token string) *Internal {
	in := &Internal{mux: http.NewServeMux(), m: m, token: token}
	in.dash = newDashboard(m)
	in.mux.Handle("GET /metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}))
	in.mux.HandleFunc("/debug/pprof/", in.debug(pprof.Index))
	in.mux.HandleFunc("/debug/pprof/cmdline", in.debug(pprof.Cmdline))
	in.mux.HandleFunc("/debug/pprof/profile", in.debug(pprof.Profile))
	in.mux.HandleFunc("/debug/pprof/symbol", in.debug(pprof.Symbol))
	in.mux.HandleFunc("/debug/pprof/trace", in.debug(pprof.Trace))
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

// debug guards pprof: profiles reveal memory contents and the command line
// (flags such as --app-secret), and cost CPU. With an admin token they need
// it, like the dashboard; without one they are served only to loopback
// peers, so an internal listener bound to a non-loopback address (a
// container's 0.0.0.0:9601 for Prometheus) does not expose them.
func (in *Internal) debug(h http.HandlerFunc) http.HandlerFunc {
	guarded := in.admin(h)
	return func(w http.ResponseWriter, r *http.Request) {
		if in.token != "" {
			guarded(w, r)
			return
		}
		if !loopback(r.RemoteAddr) {
			w.Header().Set("Cache-Control", "no-store")
			http.Error(w, "Herald pprof: only served to loopback clients without an admin token; set admin_token (or HERALD_ADMIN_TOKEN) and send it", http.StatusForbidden)
			return
		}
		h(w, r)
	}
}

// loopback reports whether remoteAddr (host:port) is a loopback address.
func loopback(remoteAddr string) bool {
	host, _, err := net.SplitHostPort(remoteAddr)
	if err != nil {
		return false
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}

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
