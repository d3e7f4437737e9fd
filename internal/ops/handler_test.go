package ops

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

// The internal listener's access rules: /metrics is open (Prometheus);
// pprof needs the admin token when one is set, and is served only to
// loopback peers otherwise; the dashboard always needs the token.
func TestInternalAccess(t *testing.T) {
	const token = "0123456789abcdef-token"
	for _, tc := range []struct {
		token, path, remote, bearer string
		want                        int
	}{
		{"", "/metrics", "10.1.2.3:5555", "", 200},
		{"", "/debug/pprof/", "127.0.0.1:5555", "", 200},
		{"", "/debug/pprof/", "[::1]:5555", "", 200},
		{"", "/debug/pprof/cmdline", "10.1.2.3:5555", "", 403},
		{"", "/debug/pprof/", "[::ffff:10.1.2.3]:5555", "", 403},
		{"", "/dashboard", "127.0.0.1:5555", "", 403},
		{token, "/metrics", "10.1.2.3:5555", "", 200},
		{token, "/debug/pprof/", "127.0.0.1:5555", "", 401},
		{token, "/debug/pprof/cmdline", "10.1.2.3:5555", "wrong-token-0123456", 401},
		{token, "/debug/pprof/cmdline", "10.1.2.3:5555", token, 200},
		{token, "/dashboard", "10.1.2.3:5555", token, 200},
		{token, "/dashboard", "127.0.0.1:5555", "", 401},
	} {
		in := NewInternal(NewMetrics(), tc.token)
		req := httptest.NewRequest("GET", tc.path, nil)
		req.RemoteAddr = tc.remote
		if tc.bearer != "" {
			req.Header.Set("Authorization", "Bearer "+tc.bearer)
		}
		rec := httptest.NewRecorder()
		in.ServeHTTP(rec, req)
		in.Close()
		if rec.Code != tc.want {
			t.Errorf("token %v, GET %s from %s (bearer %q): %d, want %d", tc.token != "", tc.path, tc.remote, tc.bearer, rec.Code, tc.want)
		}
		if tc.want != http.StatusOK && rec.Body.Len() == 0 {
			t.Errorf("GET %s: refusal without a message", tc.path)
		}
	}
}
