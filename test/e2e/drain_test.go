package e2e

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/heraldrt/herald/internal/server"
)

const drainToken = "drain-test-token-0123456789"

func adminCall(t *testing.T, s *server.Server, method, path, token string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+s.InternalAddr().String()+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// POST /admin/drain: readiness fails, new connections are refused, events
// still reach the connections not yet closed, and every connection is closed
// with 4200 at an even rate over the window; Drained fires when none is left.
func TestDrainSpreadsClosesOverTheWindow(t *testing.T) {
	cfg := testConfig()
	cfg.AdminToken = drainToken
	e := startWith(t, server.Options{Config: cfg, InternalAddr: "127.0.0.1:0"})
	const n = 80
	clients := make([]*client, n)
	for i := range clients {
		clients[i] = e.connect("app-key")
		clients[i].subscribe("news")
	}
	if st, _ := adminCall(t, e.srv, "POST", "/admin/drain", ""); st != http.StatusUnauthorized {
		t.Fatalf("drain without the token: %d", st)
	}
	if st, _ := adminCall(t, e.srv, "POST", "/admin/drain?window=forever", drainToken); st != http.StatusBadRequest {
		t.Fatalf("drain with a bad window: %d", st)
	}

	closedAt := make([]time.Duration, n)
	var wg sync.WaitGroup
	start := time.Now()
	for i, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case ci := <-c.closed:
					closedAt[i] = time.Since(start)
					if ci.code != 4200 {
						t.Errorf("socket %s closed with %d %q, want 4200", c.socketID, ci.code, ci.reason)
					}
					return
				case <-c.msgs: // events published during the drain
				case <-time.After(5 * time.Second):
					t.Errorf("socket %s not closed 5 s into a 1 s drain", c.socketID)
					return
				}
			}
		}()
	}
	st, body := adminCall(t, e.srv, "POST", "/admin/drain?window=1s", drainToken)
	var ds server.DrainStatus
	if st != http.StatusAccepted || json.Unmarshal([]byte(body), &ds) != nil || !ds.Draining || ds.WindowMS != 1000 ||
		ds.ConnectionsAtStart != n {
		t.Fatalf("drain: %d %s", st, body)
	}
	// Not ready, no new connection; the API still publishes to those left.
	resp, err := http.Get("http://" + e.addr + "/readyz")
	if err != nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("readyz during the drain: %v %v", resp, err)
	}
	resp.Body.Close()
	if _, _, _, err := ws.Dial(context.Background(), "ws://"+e.addr+"/app/app-key?protocol=7"); err == nil || !strings.Contains(err.Error(), "503") {
		t.Fatalf("a new connection during the drain: %v, want refused with 503", err)
	}
	e.trigger("news", "during-drain", "{}")

	select {
	case <-e.srv.Drained():
	case <-time.After(5 * time.Second):
		t.Fatal("not drained 5 s into a 1 s drain")
	}
	took := time.Since(start)
	wg.Wait()
	sort.Slice(closedAt, func(i, j int) bool { return closedAt[i] < closedAt[j] })
	// Stratified over the window: a quarter of the connections in each
	// quarter of it (give or take scheduling on a loaded machine; closing
	// them at once would put all 80 in the first), the last one about at
	// its end.
	var quarters [4]int
	for _, d := range closedAt {
		quarters[min(3, int(d*4/time.Second))]++
	}
	t.Logf("%d closes: first %v, median %v, last %v; per quarter of the window %v; drained after %v",
		n, closedAt[0].Round(time.Millisecond), closedAt[n/2].Round(time.Millisecond), closedAt[n-1].Round(time.Millisecond), quarters, took.Round(time.Millisecond))
	for i, q := range quarters {
		if q < n/4-10 || q > n/4+10 {
			t.Errorf("quarter %d of the window has %d closes, want about %d", i, q, n/4)
		}
	}
	if closedAt[n-1] > 2500*time.Millisecond {
		t.Errorf("last close %v after the start of a 1 s drain", closedAt[n-1])
	}
	st, body = adminCall(t, e.srv, "GET", "/admin/drain", drainToken)
	if st != 200 || json.Unmarshal([]byte(body), &ds) != nil || !ds.Done || ds.Connections != 0 {
		t.Fatalf("drain status: %d %s", st, body)
	}
	// A second drain request changes nothing.
	if st, body := adminCall(t, e.srv, "POST", "/admin/drain?window=5s", drainToken); st != http.StatusAccepted || !strings.Contains(body, `"window_ms":1000`) {
		t.Fatalf("second drain: %d %s", st, body)
	}
}

// Without admin_token the drain endpoint is refused like the dashboard.
func TestDrainNeedsAdminToken(t *testing.T) {
	e := startWith(t, server.Options{Config: testConfig(), InternalAddr: "127.0.0.1:0"})
	if st, _ := adminCall(t, e.srv, "POST", "/admin/drain", "anything-at-all-here"); st != http.StatusForbidden {
		t.Fatalf("drain with no admin_token configured: %d", st)
	}
	resp, err := http.Get("http://" + e.addr + "/readyz")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("readyz after a refused drain: %v %v", resp, err)
	}
	resp.Body.Close()
}
