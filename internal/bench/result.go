package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"time"
)

// Result is the outcome of one scenario run (the --json file).
type Result struct {
	Scenario string         `json:"scenario"`
	Target   string         `json:"target"`
	Addr     string         `json:"addr"`
	Started  time.Time      `json:"started"`
	Machine  Machine        `json:"machine"`
	Params   map[string]any `json:"params"`

	Conns          int      `json:"conns"`
	ConnectFailed  int      `json:"connect_failed"`
	ConnectSeconds float64  `json:"connect_seconds"`
	ConnectPerSec  float64  `json:"connects_per_s,omitempty"`
	ConnectLatency *Latency `json:"connect_latency,omitempty"`
	Workers        int      `json:"workers"`

	Published       int64    `json:"published,omitempty"`
	Expected        int64    `json:"expected,omitempty"`
	Delivered       int64    `json:"delivered,omitempty"`
	Lost            int64    `json:"lost"`
	DeliveredPerSec float64  `json:"delivered_per_s,omitempty"`
	Latency         *Latency `json:"latency,omitempty"` // publish → deliver
	CPU             *CPU     `json:"cpu,omitempty"`

	ServerRSS    int64           `json:"server_rss_bytes,omitempty"`
	Idle         []IdleStep      `json:"idle_steps,omitempty"`
	RSSPerConn   float64         `json:"rss_per_conn_bytes,omitempty"` // idle slope
	Broadcasts   []Broadcast     `json:"broadcasts,omitempty"`
	Fanout       *FanoutSummary  `json:"fanout,omitempty"`
	Rates        []RateStep      `json:"rates,omitempty"`
	MaxSustained float64         `json:"max_sustained_deliveries_per_s,omitempty"`
	Presence     *PresenceResult `json:"presence,omitempty"`

	Errors []string `json:"errors,omitempty"`
	OK     bool     `json:"ok"`
}

// Machine describes where the run happened.
type Machine struct {
	CPUs      int    `json:"cpus"`
	GoVersion string `json:"go"`
	Kernel    string `json:"kernel"`
	Model     string `json:"cpu_model"`
	MemTotal  string `json:"mem_total"`
}

func machineInfo() Machine {
	m := Machine{CPUs: runtime.NumCPU(), GoVersion: runtime.Version()}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "model name"); ok {
				m.Model = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		l, _, _ := strings.Cut(string(b), "\n")
		m.MemTotal = strings.Join(strings.Fields(strings.TrimPrefix(l, "MemTotal:")), " ")
	}
	return m
}

// IdleStep is the server's memory at one connection count.
type IdleStep struct {
	Conns   int   `json:"conns"`
	RSS     int64 `json:"rss_bytes"`
	Threads int   `json:"threads"`
}

// Broadcast is one fanout broadcast.
type Broadcast struct {
	Seq           int64   `json:"seq"`
	Received      int64   `json:"received"`
	ToFirstMs     float64 `json:"publish_to_first_ms"`
	ToLastMs      float64 `json:"publish_to_last_ms"`
	FirstToLastMs float64 `json:"first_to_last_ms"`
}

// FanoutSummary are the medians and ranges of the broadcasts.
type FanoutSummary struct {
	ToLastMedianMs      float64 `json:"publish_to_last_median_ms"`
	ToLastMinMs         float64 `json:"publish_to_last_min_ms"`
	ToLastMaxMs         float64 `json:"publish_to_last_max_ms"`
	FirstToLastMedianMs float64 `json:"first_to_last_median_ms"`
	ToFirstMedianMs     float64 `json:"publish_to_first_median_ms"`
}

// RateStep is one publish rate of a throughput run.
type RateStep struct {
	Rate             float64 `json:"publishes_per_s"`
	Batch            int     `json:"batch"`
	TargetDeliveries float64 `json:"target_deliveries_per_s"`
	Published        int64   `json:"published"`
	Requests         int64   `json:"requests"`
	PublishErrors    int64   `json:"publish_errors"`
	Lagged           int64   `json:"publisher_lagged"`
	Expected         int64   `json:"expected"`
	Delivered        int64   `json:"delivered"`
	Lost             int64   `json:"lost"`
	DeliveredPerSec  float64 `json:"delivered_per_s"`
	Latency          Latency `json:"latency"`
	CPU              CPU     `json:"cpu"`
	Sustained        bool    `json:"sustained"`
	Why              string  `json:"why,omitempty"`
}

// PresenceResult is the outcome of presence churn.
type PresenceResult struct {
	Channels        int     `json:"channels"`
	Observers       int     `json:"observers_per_channel"`
	Churners        int     `json:"churners_per_channel"`
	Joins           int64   `json:"joins"`
	Leaves          int64   `json:"leaves"`
	JoinsPerSec     float64 `json:"joins_per_s"`
	JoinLatency     Latency `json:"join_latency"`
	MemberLatency   Latency `json:"member_added_latency"`
	AddedExpected   int64   `json:"member_added_expected"`
	AddedReceived   int64   `json:"member_added_received"`
	RemovedExpected int64   `json:"member_removed_expected"`
	RemovedReceived int64   `json:"member_removed_received"`
}

// WriteJSON writes r to path.
func (r *Result) WriteJSON(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

func (r *Result) fail(format string, a ...any) {
	r.Errors = append(r.Errors, fmt.Sprintf(format, a...))
}

// Markdown writes a short summary.
func (r *Result) Markdown(w io.Writer) {
	fmt.Fprintf(w, "### %s on %s (%s)\n\n", r.Scenario, r.Target, r.Addr)
	fmt.Fprintf(w, "| metric | value |\n|---|---|\n")
	row := func(k, f string, a ...any) { fmt.Fprintf(w, "| %s | %s |\n", k, fmt.Sprintf(f, a...)) }
	row("connections", "%d (failed %d, %.0f/s)", r.Conns, r.ConnectFailed, r.ConnectPerSec)
	if r.ConnectLatency != nil && r.Scenario == "connect" {
		row("connect+subscribe latency", "p50 %.1f ms, p99 %.1f ms, max %.1f ms", r.ConnectLatency.P50, r.ConnectLatency.P99, r.ConnectLatency.Max)
	}
	for _, s := range r.Idle {
		row(fmt.Sprintf("server RSS @ %d conns", s.Conns), "%.1f MiB (%d threads)", float64(s.RSS)/(1<<20), s.Threads)
	}
	if r.RSSPerConn != 0 {
		row("RSS per idle connection (slope)", "%.0f B", r.RSSPerConn)
	}
	if r.Published > 0 || r.Expected > 0 {
		row("published / expected / delivered / lost", "%d / %d / %d / %d", r.Published, r.Expected, r.Delivered, r.Lost)
	}
	if r.DeliveredPerSec > 0 {
		row("delivered", "%.0f msg/s", r.DeliveredPerSec)
	}
	if r.Latency != nil && r.Latency.Count > 0 {
		row("publish→deliver", "p50 %.2f ms, p90 %.2f ms, p99 %.2f ms, max %.2f ms", r.Latency.P50, r.Latency.P90, r.Latency.P99, r.Latency.Max)
	}
	if f := r.Fanout; f != nil {
		row("broadcast publish→last (median, range)", "%.1f ms (%.1f–%.1f)", f.ToLastMedianMs, f.ToLastMinMs, f.ToLastMaxMs)
		row("broadcast first→last (median)", "%.1f ms", f.FirstToLastMedianMs)
	}
	if p := r.Presence; p != nil {
		row("joins", "%d (%.0f/s), join p50 %.1f ms, p99 %.1f ms", p.Joins, p.JoinsPerSec, p.JoinLatency.P50, p.JoinLatency.P99)
		row("member_added expected / received", "%d / %d (p99 %.1f ms)", p.AddedExpected, p.AddedReceived, p.MemberLatency.P99)
		row("member_removed expected / received", "%d / %d", p.RemovedExpected, p.RemovedReceived)
	}
	if c := r.CPU; c != nil {
		row("server CPU", "%.2f s (%.2f cores)", c.Server, c.ServerCores)
		if c.PerDelivery > 0 {
			row("server CPU per delivery", "%.2f µs", c.PerDelivery)
		}
		row("tool CPU / other CPU", "%.2f / %.2f cores", c.ToolCores, c.OtherCores)
	}
	if len(r.Rates) > 0 {
		fmt.Fprintf(w, "\n| publishes/s | target deliveries/s | delivered/s | lost | p50 ms | p99 ms | max ms | server µs/msg | server cores | sustained |\n|---|---|---|---|---|---|---|---|---|---|\n")
		for _, s := range r.Rates {
			fmt.Fprintf(w, "| %.0f | %.0f | %.0f | %d | %.2f | %.2f | %.2f | %.2f | %.2f | %v %s |\n", s.Rate, s.TargetDeliveries,
				s.DeliveredPerSec, s.Lost, s.Latency.P50, s.Latency.P99, s.Latency.Max, s.CPU.PerDelivery, s.CPU.ServerCores, s.Sustained, s.Why)
		}
		if r.MaxSustained > 0 {
			fmt.Fprintf(w, "\nhighest sustained: %.0f deliveries/s\n", r.MaxSustained)
		}
	}
	for _, e := range r.Errors {
		fmt.Fprintf(w, "\n- error: %s", e)
	}
	fmt.Fprintf(w, "\n\nok: %v\n\n", r.OK)
}
