package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"github.com/heraldrt/herald/internal/edge"
	"github.com/heraldrt/herald/internal/server"
)

const adminToken = "test-admin-token-0123456789"

// startOps starts a server with the internal listener on a free port; token
// is the admin token ("" = dashboard off). It returns the env and the
// internal base URL.
func startOps(t *testing.T, token string) (*env, string) {
	t.Helper()
	cfg := testConfig()
	cfg.AdminToken = token
	srv, err := server.New(server.Options{
		Addr: "127.0.0.1:0", InternalAddr: "127.0.0.1:0", Log: testLogger(), Config: cfg,
		Edge: edge.Config{PongTimeout: 1500 * time.Millisecond, SweepInterval: 100 * time.Millisecond},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	return &env{t: t, srv: srv, addr: srv.Addr().String()}, "http://" + srv.InternalAddr().String()
}

// scrape reads /metrics into "name{labels}" → value (labels as printed).
func scrape(t *testing.T, base string) map[string]float64 {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("/metrics: %s", resp.Status)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("bad metrics line %q", line)
		}
		out[line[:i]] = v
	}
	return out
}

func TestMetricsCountExactly(t *testing.T) {
	e, base := startOps(t, "")
	before := scrape(t, base)
	for _, name := range []string{"herald_messages_delivered_total", "go_goroutines", "process_resident_memory_bytes",
		`herald_connections{app="app-id"}`, `herald_subscriptions{type="public"}`} {
		if _, ok := before[name]; !ok {
			t.Fatalf("/metrics has no %s", name)
		}
	}

	// 3 subscribers + 1 publish → delivered +3.
	subs := []*client{e.connect("app-key"), e.connect("app-key"), e.connect("app-key")}
	for _, c := range subs {
		c.subscribe("metrics-room")
	}
	mid := scrape(t, base)
	e.trigger("metrics-room", "ev", "hello")
	for _, c := range subs {
		c.expectOn("ev", "metrics-room")
	}
	after := scrape(t, base)
	delta := func(a, b map[string]float64, name string) float64 { return b[name] - a[name] }
	checks := []struct {
		name string
		want float64
	}{
		{"herald_messages_delivered_total", 3},
		{`herald_messages_published_total{source="api"}`, 1},
		{`herald_api_requests_total{route="events",status="200"}`, 1},
		{"herald_api_publish_duration_seconds_count", 1},
		{`herald_messages_published_total{source="client"}`, 0},
	}
	for _, c := range checks {
		if got := delta(mid, after, c.name); got != c.want {
			t.Errorf("%s moved by %v, want %v", c.name, got, c.want)
		}
	}
	if got := after[`herald_connections{app="app-id"}`]; got != 3 {
		t.Errorf("connections = %v, want 3", got)
	}
	if got := after[`herald_subscriptions{type="public"}`]; got != 3 {
		t.Errorf("public subscriptions = %v, want 3", got)
	}
	if got := delta(before, after, "herald_connections_opened_total"); got != 3 {
		t.Errorf("opened moved by %v, want 3", got)
	}

	// A client event on a private channel with 2 subscribers: published +1,
	// delivered +1 (never echoed to the sender).
	subs[0].subscribePrivate("private-metrics")
	subs[1].subscribePrivate("private-metrics")
	mid = scrape(t, base)
	if got := mid[`herald_subscriptions{type="private"}`]; got != 2 {
		t.Errorf("private subscriptions = %v, want 2", got)
	}
	subs[0].send(map[string]any{"event": "client-hi", "channel": "private-metrics", "data": map[string]any{}})
	subs[1].expectOn("client-hi", "private-metrics")
	after = scrape(t, base)
	for _, c := range []struct {
		name string
		want float64
	}{
		{"herald_messages_delivered_total", 1},
		{`herald_messages_published_total{source="client"}`, 1},
		{"herald_client_events_total", 1},
		{`herald_messages_published_total{source="api"}`, 0},
	} {
		if got := delta(mid, after, c.name); got != c.want {
			t.Errorf("%s moved by %v, want %v", c.name, got, c.want)
		}
	}
	if delta(before, after, "herald_bytes_received_total") <= 0 || delta(before, after, "herald_bytes_sent_total") <= 0 {
		t.Errorf("bytes counters did not move")
	}

	// A client closing is counted under reason="client"; an unknown API route
	// under route="unknown".
	mid = scrape(t, base)
	_ = wsutil.WriteClientMessage(subs[2].conn, ws.OpClose, ws.NewCloseFrameBody(ws.StatusNormalClosure, ""))
	waitFor(t, "close counted", func() bool {
		return scrape(t, base)[`herald_connections_closed_total{reason="client"}`]-mid[`herald_connections_closed_total{reason="client"}`] == 1
	})
	if st, _ := e.api("GET", "/nope", nil, nil); st != 404 {
		t.Fatalf("unknown route: %d", st)
	}
	after = scrape(t, base)
	if got := delta(mid, after, `herald_api_requests_total{route="unknown",status="404"}`); got != 1 {
		t.Errorf("unknown route counted %v, want 1", got)
	}
	if got := after[`herald_connections{app="app-id"}`]; got != 2 {
		t.Errorf("connections after a close = %v, want 2", got)
	}
	if got := after[`herald_subscriptions{type="public"}`]; got != 2 {
		t.Errorf("public subscriptions after a close = %v, want 2", got)
	}

	// pprof is on the internal listener.
	if st := getStatus(t, base+"/debug/pprof/", ""); st != 200 {
		t.Errorf("/debug/pprof/: %d", st)
	}
	// Without an admin token the dashboard is refused.
	if st := getStatus(t, base+"/dashboard", ""); st != http.StatusForbidden {
		t.Errorf("dashboard without admin_token: %d, want 403", st)
	}
}

func getStatus(t *testing.T, url, bearer string) int {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

func TestDashboardTokenAndEvents(t *testing.T) {
	e, base := startOps(t, adminToken)
	if st := getStatus(t, base+"/dashboard", ""); st != http.StatusUnauthorized {
		t.Errorf("no token: %d, want 401", st)
	}
	if st := getStatus(t, base+"/dashboard?token=wrong", ""); st != http.StatusUnauthorized {
		t.Errorf("wrong token: %d, want 401", st)
	}
	if st := getStatus(t, base+"/dashboard?token="+adminToken, ""); st != 200 {
		t.Errorf("token in query: %d", st)
	}
	if st := getStatus(t, base+"/dashboard", adminToken); st != 200 {
		t.Errorf("bearer token: %d", st)
	}
	c := e.connect("app-key")
	c.subscribe("dash-room")
	c.subscribePresence("presence-dash", "u1", map[string]any{"name": "Ada"})
	e.trigger("dash-room", "ev", "x")
	c.expectOn("ev", "dash-room")

	resp, err := http.Get(base + "/dashboard/events?token=" + adminToken)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("content type %q", ct)
	}
	r := bufio.NewReader(resp.Body)
	line, err := r.ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	var snap struct {
		Delivered   uint64 `json:"delivered"`
		Connections int64  `json:"connections"`
		Channels    []struct {
			App, Channel string
			Subscribers  int
		} `json:"channels"`
		Apps []struct {
			ID          string `json:"id"`
			Connections int64  `json:"connections"`
		} `json:"apps"`
	}
	if err := json.Unmarshal([]byte(strings.TrimPrefix(strings.TrimSpace(line), "data: ")), &snap); err != nil {
		t.Fatalf("%v: %q", err, line)
	}
	if snap.Delivered < 1 || snap.Connections != 1 || len(snap.Channels) != 2 || len(snap.Apps) != len(testConfig().Apps) {
		t.Fatalf("snapshot: %+v", snap)
	}
	// Presence members of a chosen channel.
	pr, err := http.Get(base + "/dashboard/presence?app=app-id&channel=presence-dash&token=" + adminToken)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(pr.Body)
	pr.Body.Close()
	if pr.StatusCode != 200 || !strings.Contains(string(b), `"id":"u1"`) || !strings.Contains(string(b), "Ada") {
		t.Fatalf("presence: %d %s", pr.StatusCode, b)
	}
	// The stream ends at shutdown (t.Cleanup would hang otherwise).
}
