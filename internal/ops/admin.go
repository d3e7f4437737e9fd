package ops

import "net/http"

// HandleAdmin serves h at pattern (e.g. "POST /admin/drain") on the internal
// listener, behind the admin token like the dashboard: 403 when no token is
// configured, 401 when the request does not carry it (?token=… or
// Authorization: Bearer …). Register before the listener serves.
func (in *Internal) HandleAdmin(pattern string, h http.HandlerFunc) {
	in.mux.HandleFunc(pattern, in.admin(h))
}
