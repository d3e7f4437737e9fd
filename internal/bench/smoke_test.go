package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/heraldrt/herald/internal/apps"
	"github.com/heraldrt/herald/internal/server"
)

// TestMain lets the test binary serve as the tool's worker process: the
// runner re-executes os.Executable() with WorkerEnv set.
func TestMain(m *testing.M) {
	if os.Getenv(WorkerEnv) == "1" {
		os.Exit(WorkerMain(os.Stdin, os.Stdout))
	}
	os.Exit(m.Run())
}

const smokeConfig = `
apps:
  - id: app-id
    key: app-key
    secret: app-secret
    client_events: true
    api_requests_per_second: -1
    client_event_rate: 100
`

func startHerald(t *testing.T) string {
	t.Helper()
	cfg, err := apps.Parse([]byte(smokeConfig))
	if err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(server.Options{Addr: "127.0.0.1:0", Config: cfg, InternalAddr: "off"})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	})
	return srv.Addr().String()
}

func startRaw(t *testing.T) string {
	t.Helper()
	s := NewRawServer()
	if err := s.Listen("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	go func() { _ = s.Serve() }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s.Shutdown(ctx)
	})
	return s.Addr()
}

// TestSmoke runs every scenario, tiny, against Herald and the raw reference
// server, and checks correctness only: every message delivered, nothing
// lost, the JSON report well-formed. Never timing.
func TestSmoke(t *testing.T) {
	targets := map[string]string{"herald": startHerald(t), "raw": startRaw(t)}
	cases := []struct {
		scenario string
		p        Params
	}{
		{"idle", Params{Steps: []int{20, 40}}},
		{"connect", Params{Conns: 40}},
		{"fanout", Params{Conns: 50, Broadcasts: 3, Interval: 10 * time.Millisecond}},
		{"throughput", Params{Conns: 60, Channels: 6, Rates: []float64{50, 100}, Duration: time.Second}},
		{"throughput", Params{Conns: 40, Channels: 4, Rates: []float64{100}, Batch: 5, Duration: time.Second}},
		{"client-events", Params{Conns: 30, Channels: 3, Senders: 2, Rate: 5, Duration: time.Second}},
		{"presence", Params{Channels: 3, Observers: 3, Churners: 2, Rate: 4, Duration: time.Second}},
	}
	for name, addr := range targets {
		for _, c := range cases {
			t.Run(name+"/"+c.scenario, func(t *testing.T) {
				opts := Options{Target: Target{Addr: addr, AppID: "app-id", Key: "app-key", Secret: "app-secret"},
					Name: name, ServerPID: os.Getpid(), Workers: 2, Settle: 100 * time.Millisecond, Parallel: 8,
					Src: []string{"127.0.0.1", "127.0.0.2"}}
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
				defer cancel()
				res, err := Run(ctx, c.scenario, opts, c.p)
				if err != nil {
					t.Fatal(err)
				}
				if !res.OK {
					t.Fatalf("not ok: %v", res.Errors)
				}
				checkResult(t, c.scenario, c.p, res)
			})
		}
	}
}

func checkResult(t *testing.T, scenario string, p Params, res *Result) {
	t.Helper()
	if res.Lost != 0 {
		t.Errorf("lost %d", res.Lost)
	}
	switch scenario {
	case "idle":
		if len(res.Idle) != len(p.Steps) || res.Idle[len(res.Idle)-1].Conns != p.Steps[len(p.Steps)-1] {
			t.Errorf("idle steps = %+v, want conns %v", res.Idle, p.Steps)
		}
		if res.ServerRSS <= 0 {
			t.Errorf("no server RSS")
		}
	case "connect":
		if res.Conns != p.Conns || res.ConnectPerSec <= 0 || res.ConnectLatency == nil || res.ConnectLatency.Count != int64(p.Conns) {
			t.Errorf("connect: conns %d, %.0f/s, latency %+v", res.Conns, res.ConnectPerSec, res.ConnectLatency)
		}
	case "fanout":
		if len(res.Broadcasts) != p.Broadcasts || res.Delivered != int64(p.Broadcasts*p.Conns) {
			t.Errorf("fanout: %d broadcasts, delivered %d", len(res.Broadcasts), res.Delivered)
		}
		for _, b := range res.Broadcasts {
			if b.Received != int64(p.Conns) || b.ToLastMs < b.ToFirstMs {
				t.Errorf("broadcast %+v", b)
			}
		}
	case "throughput":
		if len(res.Rates) != len(p.Rates) {
			t.Fatalf("%d rate steps, want %d", len(res.Rates), len(p.Rates))
		}
		for _, s := range res.Rates {
			want := int64(s.Rate*p.Duration.Seconds()) * int64(p.Conns/p.Channels)
			if s.Expected != want || s.Delivered != want || s.Lost != 0 || s.PublishErrors != 0 {
				t.Errorf("step %.0f/s: expected %d delivered %d (want %d), lost %d, errors %d",
					s.Rate, s.Expected, s.Delivered, want, s.Lost, s.PublishErrors)
			}
			if s.Latency.Count != s.Delivered {
				t.Errorf("latency count %d, delivered %d", s.Latency.Count, s.Delivered)
			}
		}
	case "client-events":
		// senders per channel × rate × duration events, each to the others.
		perCh := p.Conns / p.Channels
		want := int64(p.Channels*p.Senders) * int64(p.Rate*p.Duration.Seconds()) * int64(perCh-1)
		if res.Expected != want || res.Delivered != want {
			t.Errorf("client events: expected %d delivered %d, want %d", res.Expected, res.Delivered, want)
		}
	case "presence":
		pr := res.Presence
		if pr == nil || pr.Joins == 0 || pr.AddedReceived != pr.AddedExpected || pr.RemovedReceived != pr.RemovedExpected ||
			pr.AddedExpected != pr.Joins*int64(p.Observers) {
			t.Errorf("presence: %+v", pr)
		}
	}
	// The JSON report is well-formed and carries the scenario.
	path := filepath.Join(t.TempDir(), "r.json")
	if err := res.WriteJSON(path); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("report is not JSON: %v", err)
	}
	if m["scenario"] != scenario || m["ok"] != true {
		t.Errorf("report: scenario %v ok %v", m["scenario"], m["ok"])
	}
	var md bytes.Buffer
	res.Markdown(&md)
	if !strings.Contains(md.String(), "### "+scenario) {
		t.Errorf("markdown summary: %q", md.String())
	}
}
