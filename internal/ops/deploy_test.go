package ops_test

// Tests of the files under deploy/: the example config is valid, and the
// Grafana dashboard only queries metrics (and labels) that Herald serves.

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/heraldrt/herald/internal/apps"
	"github.com/heraldrt/herald/internal/server"
)

const (
	exampleConfig = "../../deploy/herald.example.yaml"
	grafanaJSON   = "../../deploy/grafana/herald.json"
)

// TestDeployExampleConfig is `herald config check deploy/herald.example.yaml`.
func TestDeployExampleConfig(t *testing.T) {
	cfg, err := apps.Load(exampleConfig)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Apps) != 2 {
		t.Errorf("apps: %d, want 2", len(cfg.Apps))
	}
	hooks := 0
	for _, a := range cfg.Apps {
		hooks += len(a.Webhooks)
	}
	if hooks == 0 {
		t.Error("the example config has no webhooks")
	}
	if cfg.AdminToken == "" {
		t.Error("the example config has no admin_token placeholder")
	}
	if len(cfg.Redis) != 0 || cfg.RedisCluster != "" {
		t.Error("Redis should stay commented out in the example config")
	}
}

// served starts a server with the example config (so the per-app webhook
// metrics exist) and returns the metric families /metrics serves, each with
// the label names its samples carry. Histograms also get their _bucket,
// _sum and _count series (the _bucket with le).
func served(t *testing.T) map[string]map[string]bool {
	t.Helper()
	cfg, err := apps.Load(exampleConfig)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(server.Options{Addr: "127.0.0.1:0", InternalAddr: "127.0.0.1:0", Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	}()
	// One API request, so herald_api_requests_total has a series.
	resp, err := http.Post("http://"+srv.Addr().String()+"/apps/100001/events", "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()

	resp, err = http.Get("http://" + srv.InternalAddr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/metrics: %s", resp.Status)
	}
	names := map[string]map[string]bool{}
	add := func(name string) map[string]bool {
		if names[name] == nil {
			names[name] = map[string]bool{}
		}
		return names[name]
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if f := strings.Fields(line); len(f) == 4 && f[0] == "#" && f[1] == "TYPE" {
			add(f[2])
			if f[3] == "histogram" {
				add(f[2] + "_bucket")["le"] = true
				add(f[2] + "_sum")
				add(f[2] + "_count")
			}
			continue
		}
		if line == "" || line[0] == '#' {
			continue
		}
		name, rest, _ := strings.Cut(line, "{")
		if rest == "" {
			continue
		}
		labels := add(name)
		for _, m := range labelMatcher.FindAllStringSubmatch(rest, -1) {
			labels[m[1]] = true
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return names
}

var (
	// metricName matches the metric names a query can use: Herald's own and
	// the Go and process collectors'.
	metricName = regexp.MustCompile(`\b(?:herald|go|process)_[a-zA-Z0-9_]+`)
	// labelMatcher matches a label matcher inside {…}: name, op.
	labelMatcher = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)`)
	byClause     = regexp.MustCompile(`\b(?:by|without)\s*\(([^)]*)\)`)
	braces       = regexp.MustCompile(`\{([^{}]*)\}`)
	legendLabel  = regexp.MustCompile(`\{\{\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}`)
)

// Labels Prometheus adds when it scrapes.
var targetLabels = map[string]bool{"instance": true, "job": true}

type grafanaPanel struct {
	Type       string          `json:"type"`
	Title      string          `json:"title"`
	Datasource json.RawMessage `json:"datasource"`
	Targets    []struct {
		Expr         string `json:"expr"`
		LegendFormat string `json:"legendFormat"`
	} `json:"targets"`
	Panels []grafanaPanel `json:"panels"`
}

func TestDeployGrafanaDashboard(t *testing.T) {
	data, err := os.ReadFile(grafanaJSON)
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Inputs []struct {
			Name     string `json:"name"`
			PluginID string `json:"pluginId"`
		} `json:"__inputs"`
		SchemaVersion int            `json:"schemaVersion"`
		Panels        []grafanaPanel `json:"panels"`
		Templating    struct {
			List []struct {
				Name       string          `json:"name"`
				Definition string          `json:"definition"`
				Datasource json.RawMessage `json:"datasource"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(data, &dash); err != nil {
		t.Fatal(err)
	}
	if len(dash.Inputs) != 1 || dash.Inputs[0].Name != "DS_PROMETHEUS" || dash.Inputs[0].PluginID != "prometheus" {
		t.Errorf("__inputs: %+v, want the one DS_PROMETHEUS prometheus input", dash.Inputs)
	}
	if dash.SchemaVersion < 36 {
		t.Errorf("schemaVersion %d", dash.SchemaVersion)
	}
	const ds = `"uid":"${DS_PROMETHEUS}"`
	checkDS := func(what string, raw json.RawMessage) {
		if !strings.Contains(strings.ReplaceAll(string(raw), " ", ""), ds) {
			t.Errorf("%s: datasource %s, want uid ${DS_PROMETHEUS}", what, raw)
		}
	}

	metrics := served(t)
	used := map[string]bool{}
	check := func(where, expr, legend string) {
		names := metricName.FindAllString(expr, -1)
		if len(names) == 0 {
			t.Errorf("%s: no Herald, Go or process metric in %q", where, expr)
		}
		allowed := map[string]bool{}
		for k := range targetLabels {
			allowed[k] = true
		}
		for _, n := range names {
			used[n] = true
			labels, ok := metrics[n]
			if !ok {
				t.Errorf("%s: metric %s is not served by /metrics", where, n)
				continue
			}
			for l := range labels {
				allowed[l] = true
			}
		}
		var labels []string
		for _, m := range byClause.FindAllStringSubmatch(expr, -1) {
			for _, l := range strings.Split(m[1], ",") {
				labels = append(labels, strings.TrimSpace(l))
			}
		}
		for _, m := range braces.FindAllStringSubmatch(expr, -1) {
			for _, l := range labelMatcher.FindAllStringSubmatch(m[1], -1) {
				labels = append(labels, l[1])
			}
		}
		for _, m := range legendLabel.FindAllStringSubmatch(legend, -1) {
			labels = append(labels, m[1])
		}
		for _, l := range labels {
			if l != "" && !allowed[l] {
				t.Errorf("%s: label %q is not on %v", where, l, names)
			}
		}
	}

	var walk func([]grafanaPanel)
	queries := 0
	walk = func(ps []grafanaPanel) {
		for _, p := range ps {
			if p.Type == "row" {
				walk(p.Panels)
				continue
			}
			checkDS(p.Title, p.Datasource)
			if len(p.Targets) == 0 {
				t.Errorf("panel %q has no queries", p.Title)
			}
			for _, tg := range p.Targets {
				queries++
				check("panel "+p.Title, tg.Expr, tg.LegendFormat)
			}
		}
	}
	walk(dash.Panels)
	for _, v := range dash.Templating.List {
		if v.Definition != "" {
			checkDS("variable "+v.Name, v.Datasource)
			check("variable "+v.Name, v.Definition, "")
		}
	}
	if queries < 20 {
		t.Errorf("only %d queries", queries)
	}
	for _, want := range []string{"herald_messages_delivered_total", "herald_connections", "herald_connections_closed_total",
		"herald_subscriptions", "herald_messages_published_total", "herald_bytes_received_total", "herald_bytes_sent_total",
		"herald_api_requests_total", "herald_api_publish_duration_seconds_bucket", "herald_webhook_queue_depth",
		"herald_webhook_events_failed_total", "herald_webhook_events_dropped_total", "herald_slow_consumer_disconnects_total",
		"herald_rate_limited_total", "go_goroutines"} {
		if !used[want] {
			t.Errorf("the dashboard does not show %s", want)
		}
	}
	if t.Failed() {
		var all []string
		for n := range metrics {
			all = append(all, n)
		}
		sort.Strings(all)
		t.Logf("served: %s", strings.Join(all, " "))
	}
}
