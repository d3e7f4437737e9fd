package e2e

import (
	"net/http"
	"testing"

	"github.com/heraldrt/herald/internal/apps"
	"github.com/heraldrt/herald/internal/server"
)

// startRole starts a server with only the given role's endpoints.
func startRole(t *testing.T, role string) string {
	t.Helper()
	cfg := testConfig()
	cfg.Role = role
	return startWith(t, server.Options{Config: cfg}).addr
}

func get(t *testing.T, url string) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// An edge node serves only WebSockets; an api node only the HTTP API. Both
// answer health checks.
func TestRoles(t *testing.T) {
	edgeAddr := startRole(t, apps.RoleEdge)
	e := &env{t: t, addr: edgeAddr}
	c := e.connect("app-key")
	c.subscribe("news")
	if code, _ := e.api("GET", "/channels", nil, nil); code != http.StatusNotFound {
		t.Fatalf("edge node served the API: %d", code)
	}
	if code := get(t, "http://"+edgeAddr+"/readyz"); code != http.StatusOK {
		t.Fatalf("edge readyz: %d", code)
	}

	apiAddr := startRole(t, apps.RoleAPI)
	a := &env{t: t, addr: apiAddr}
	if code, body := a.api("GET", "/channels", nil, nil); code != http.StatusOK {
		t.Fatalf("api node: %d %s", code, body)
	}
	// The WebSocket path is not served: a plain GET is a 404 and an upgrade fails.
	if code := get(t, "http://"+apiAddr+"/app/app-key"); code != http.StatusNotFound {
		t.Fatalf("api node served /app/: %d", code)
	}
	if code := get(t, "http://"+apiAddr+"/healthz"); code != http.StatusOK {
		t.Fatalf("api healthz: %d", code)
	}
}
