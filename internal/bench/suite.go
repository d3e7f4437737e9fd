package bench

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// suiteTarget is one server the suite starts and measures.
type suiteTarget struct {
	Name  string
	Argv  []string // "{port}" and "{redis}" are replaced
	Redis bool     // start a redis-server first
	Only  []string // scenarios this target runs (nil: all but redis-only ones)
}

// suiteScenario is one row of the suite's matrix.
type suiteScenario struct {
	Name     string // label in the results
	Scenario string // herald bench scenario
	Params   Params
	Settle   time.Duration
	// RedisOnly: run only for targets that use Redis (and those list it).
	RedisOnly bool
}

func suiteMatrix(quick bool) []suiteScenario {
	if quick {
		return []suiteScenario{
			{Name: "idle", Scenario: "idle", Params: Params{Steps: []int{1000, 4000}}, Settle: 3 * time.Second},
			{Name: "throughput", Scenario: "throughput", Params: Params{Conns: 2000, Channels: 20, Rates: []float64{300}, Duration: 10 * time.Second}},
			{Name: "maxrate", Scenario: "throughput", Params: Params{Conns: 2000, Channels: 20, Rates: []float64{300, 600, 900, 1200}, Duration: 5 * time.Second, StopOnFail: true}},
			{Name: "fanout", Scenario: "fanout", Params: Params{Conns: 4000, Broadcasts: 5, Interval: 500 * time.Millisecond}},
			{Name: "burst", Scenario: "throughput", Params: Params{Conns: 4000, Channels: 4, Batch: 10, P99Limit: time.Second, Rates: []float64{250, 500}, Duration: 5 * time.Second, StopOnFail: true}},
			{Name: "connect", Scenario: "connect", Params: Params{Conns: 2000}},
			{Name: "presence", Scenario: "presence", Params: Params{Channels: 20, Observers: 20, Churners: 5, Rate: 2, Duration: 5 * time.Second}},
			{Name: "client-events", Scenario: "client-events", Params: Params{Conns: 500, Channels: 50, Senders: 1, Rate: 10, Duration: 5 * time.Second}},
			{Name: "redis-throughput", Scenario: "throughput", RedisOnly: true, Params: Params{Conns: 2000, Channels: 20, Rates: []float64{300}, Duration: 10 * time.Second}},
		}
	}
	return []suiteScenario{
		// Memory: the slope between 4,000 and 19,000 idle subscribed
		// connections, each on a channel of its own.
		{Name: "idle", Scenario: "idle", Params: Params{Steps: []int{4000, 19000}}, Settle: 5 * time.Second},
		// CPU and latency at 30,000 deliveries/s: 5,000 connections, 50
		// channels of 100, 300 events/s of 100 bytes.
		{Name: "throughput", Scenario: "throughput", Params: Params{Conns: 5000, Channels: 50, Rates: []float64{300}, Duration: 20 * time.Second}},
		// Highest sustained rate: every message delivered and p99 ≤ 100 ms.
		{Name: "maxrate", Scenario: "throughput", Params: Params{Conns: 5000, Channels: 50,
			Rates: []float64{300, 450, 600, 800, 1000, 1200, 1400, 1600, 1800, 2000, 2400, 2800, 3200, 4000, 5000, 6000}, Duration: 10 * time.Second, StopOnFail: true}},
		// A broadcast to 19,000 local subscribers.
		{Name: "fanout", Scenario: "fanout", Params: Params{Conns: 19000, Broadcasts: 10, Interval: time.Second}},
		// Coalescing: each connection gets bursts of 10 events back to back
		// (batch_events of 10 to a channel of 1,000 subscribers). One burst
		// is 10,000 frames: a server writing one frame per syscall needs
		// about 100 ms for it on this machine, so the latency limit here is
		// 1 s (the same for every target), which makes this a measure of
		// throughput.
		{Name: "burst", Scenario: "throughput", Params: Params{Conns: 10000, Channels: 10, Batch: 10, P99Limit: time.Second,
			Rates: []float64{25, 50, 100, 250, 500, 750, 1000, 1250, 1500, 2000}, Duration: 10 * time.Second, StopOnFail: true}},
		{Name: "connect", Scenario: "connect", Params: Params{Conns: 5000}},
		{Name: "presence", Scenario: "presence", Params: Params{Channels: 50, Observers: 20, Churners: 5, Rate: 2, Duration: 10 * time.Second}},
		{Name: "client-events", Scenario: "client-events", Params: Params{Conns: 1000, Channels: 100, Senders: 1, Rate: 10, Duration: 10 * time.Second}},
		// The Redis path at 30,000 deliveries/s (herald-redis only).
		{Name: "redis-throughput", Scenario: "throughput", RedisOnly: true, Params: Params{Conns: 5000, Channels: 50, Rates: []float64{300}, Duration: 20 * time.Second}},
	}
}

// SuiteRun is one scenario on one target in one round.
type SuiteRun struct {
	Round    int     `json:"round"`
	Name     string  `json:"name"`
	Target   string  `json:"target"`
	Result   *Result `json:"result"`
	ExtraCPU float64 `json:"redis_cpu_s,omitempty"` // redis-server CPU over the run
}

// SuiteReport is summary.json.
type SuiteReport struct {
	Started  time.Time  `json:"started"`
	Finished time.Time  `json:"finished"`
	Machine  Machine    `json:"machine"`
	Command  string     `json:"command"`
	Rounds   int        `json:"rounds"`
	Targets  []string   `json:"targets"`
	Runs     []SuiteRun `json:"runs"`
}

func suiteMain(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("bench suite", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("out", "bench-results", "directory for the JSON results, summary.json, summary.md and server logs")
	rounds := fs.Int("rounds", 3, "rounds; every round runs every scenario on every target, targets in rotating order")
	quick := fs.Bool("quick", false, "smaller connection counts and shorter steps")
	only := fs.String("scenarios", "", "comma-separated subset of: idle,throughput,maxrate,fanout,burst,connect,presence,client-events,redis-throughput")
	targets := fs.String("targets", "herald,raw", "built-in targets to run: herald, herald-redis, raw")
	redisServer := fs.String("redis-server", "redis-server", "redis-server binary for herald-redis")
	basePort := fs.Int("port", 17100, "first port to use (each server gets the next free one)")
	quiet := fs.Float64("wait-quiet", 0, "before each run, wait until the rest of the machine uses less than this many cores (0: do not wait); the machine may be shared")
	quietMax := fs.Duration("wait-max", 10*time.Minute, "longest wait for --wait-quiet")
	var peers multiFlag
	fs.Var(&peers, "peer", `another server, NAME=COMMAND, with {port} in COMMAND; run with sh -c "exec COMMAND" (repeatable), e.g. --peer 'soketi=/path/run-soketi {port}'`)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	exe, err := os.Executable()
	if err != nil {
		fmt.Fprintf(stderr, "herald bench suite: %v\n", err)
		return 1
	}
	var ts []suiteTarget
	for _, name := range splitList(*targets) {
		switch name {
		case "herald":
			ts = append(ts, suiteTarget{Name: "herald", Argv: []string{exe, "serve", "--config", "{config}", "--addr", "127.0.0.1:{port}", "--internal-addr", "off", "--log-level", "warn"}})
		case "herald-redis":
			ts = append(ts, suiteTarget{Name: "herald-redis", Redis: true, Only: []string{"redis-throughput"},
				Argv: []string{exe, "serve", "--config", "{config}", "--addr", "127.0.0.1:{port}", "--internal-addr", "off", "--log-level", "warn", "--redis", "redis://127.0.0.1:{redis}"}})
		case "raw":
			ts = append(ts, suiteTarget{Name: "raw", Argv: []string{exe, "bench", "raw", "--addr", "127.0.0.1:{port}"}})
		default:
			fmt.Fprintf(stderr, "herald bench suite: unknown target %q (peers go in --peer)\n", name)
			return 2
		}
	}
	for _, p := range peers {
		name, cmd, ok := strings.Cut(p, "=")
		if !ok || name == "" || !strings.Contains(cmd, "{port}") {
			fmt.Fprintf(stderr, "herald bench suite: --peer %q: want NAME=COMMAND with {port}\n", p)
			return 2
		}
		ts = append(ts, suiteTarget{Name: name, Argv: []string{"sh", "-c", "exec " + cmd}})
	}
	matrix := suiteMatrix(*quick)
	if *only != "" {
		want := splitList(*only)
		matrix = slices.DeleteFunc(matrix, func(s suiteScenario) bool { return !slices.Contains(want, s.Name) })
	}
	if err := os.MkdirAll(filepath.Join(*out, "logs"), 0o755); err != nil {
		fmt.Fprintf(stderr, "herald bench suite: %v\n", err)
		return 1
	}
	raiseNofile() // inherited by the servers it starts
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	rep := &SuiteReport{Started: time.Now().UTC(), Machine: machineInfo(), Rounds: *rounds,
		Command: "herald bench suite " + strings.Join(args, " ")}
	for _, t := range ts {
		rep.Targets = append(rep.Targets, t.Name)
	}
	s := &suite{out: *out, redisServer: *redisServer, port: *basePort, stderr: stderr}
	for round := 1; round <= *rounds && ctx.Err() == nil; round++ {
		for _, sc := range matrix {
			order := rotate(ts, round-1)
			for _, t := range order {
				if ctx.Err() != nil {
					break
				}
				if !runsOn(t, sc) {
					continue
				}
				if *quiet > 0 {
					waitQuiet(ctx, *quiet, *quietMax, stderr)
				}
				fmt.Fprintf(stderr, "== round %d/%d: %s on %s\n", round, *rounds, sc.Name, t.Name)
				run, err := s.run(ctx, round, t, sc)
				if err != nil {
					fmt.Fprintf(stderr, "   %s on %s: %v\n", sc.Name, t.Name, err)
					run = SuiteRun{Round: round, Name: sc.Name, Target: t.Name,
						Result: &Result{Scenario: sc.Scenario, Target: t.Name, Errors: []string{err.Error()}}}
				}
				rep.Runs = append(rep.Runs, run)
				rep.Finished = time.Now().UTC()
				if err := writeJSONFile(filepath.Join(*out, "summary.json"), rep); err != nil {
					fmt.Fprintf(stderr, "herald bench suite: %v\n", err)
					return 1
				}
				if r := run.Result; r != nil {
					fmt.Fprintf(stderr, "   %s\n", oneLine(sc.Name, r))
				}
			}
		}
	}
	if err := rep.WriteReport(*out, stdout); err != nil {
		fmt.Fprintf(stderr, "herald bench suite: %v\n", err)
		return 1
	}
	return 0
}

// reportMain is `herald bench report SUMMARY.json...`: it merges suite
// reports (runs of several invocations) and writes summary.md and
// metrics.json (the input of tools/benchcharts) to --out.
func reportMain(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("bench report", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("out", ".", "directory for summary.md and metrics.json")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() == 0 {
		fmt.Fprintln(stderr, "usage: herald bench report [--out DIR] SUMMARY.json...")
		return 2
	}
	var merged *SuiteReport
	for _, path := range fs.Args() {
		b, err := os.ReadFile(path)
		if err != nil {
			fmt.Fprintf(stderr, "herald bench report: %v\n", err)
			return 1
		}
		var r SuiteReport
		if err := json.Unmarshal(b, &r); err != nil {
			fmt.Fprintf(stderr, "herald bench report: %s: %v\n", path, err)
			return 1
		}
		if merged == nil {
			merged = &r
			continue
		}
		merged.Runs = append(merged.Runs, r.Runs...)
		merged.Rounds += r.Rounds
		merged.Command += "; " + r.Command
		for _, t := range r.Targets {
			if !slices.Contains(merged.Targets, t) {
				merged.Targets = append(merged.Targets, t)
			}
		}
		if r.Finished.After(merged.Finished) {
			merged.Finished = r.Finished
		}
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		fmt.Fprintf(stderr, "herald bench report: %v\n", err)
		return 1
	}
	if err := merged.WriteReport(*out, stdout); err != nil {
		fmt.Fprintf(stderr, "herald bench report: %v\n", err)
		return 1
	}
	return 0
}

// MetricsFile is metrics.json: the headline numbers per target, for charts.
type MetricsFile struct {
	Started time.Time     `json:"started"`
	Machine Machine       `json:"machine"`
	Rounds  int           `json:"rounds"`
	Metrics []MetricStats `json:"metrics"`
}

// MetricStats is one headline metric across targets.
type MetricStats struct {
	Key           string        `json:"key"`
	Title         string        `json:"title"`
	Unit          string        `json:"unit"`
	LowerIsBetter bool          `json:"lower_is_better"`
	Targets       []TargetStats `json:"targets"`
}

// TargetStats is one metric of one target over the rounds.
type TargetStats struct {
	Name   string  `json:"name"`
	Median float64 `json:"median"`
	Min    float64 `json:"min"`
	Max    float64 `json:"max"`
	N      int     `json:"n"`
	Failed int     `json:"failed"`
}

// WriteReport writes summary.md (also to w) and metrics.json into dir.
func (rep *SuiteReport) WriteReport(dir string, w io.Writer) error {
	f, err := os.Create(filepath.Join(dir, "summary.md"))
	if err != nil {
		return err
	}
	rep.Markdown(io.MultiWriter(f, w))
	if err := f.Close(); err != nil {
		return err
	}
	mf := MetricsFile{Started: rep.Started, Machine: rep.Machine, Rounds: rep.Rounds}
	for _, m := range Metrics {
		st := rep.Stats(m)
		if len(st) == 0 {
			continue
		}
		ms := MetricStats{Key: m.Key, Title: m.Title, Unit: m.Unit, LowerIsBetter: m.LowerIsBetter}
		for _, t := range rep.Targets {
			if s, ok := st[t]; ok {
				ms.Targets = append(ms.Targets, TargetStats{Name: t, Median: s.Median, Min: s.Min, Max: s.Max, N: s.N, Failed: s.Failed})
			}
		}
		mf.Metrics = append(mf.Metrics, ms)
	}
	return writeJSONFile(filepath.Join(dir, "metrics.json"), mf)
}

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

func rotate[T any](s []T, k int) []T {
	if len(s) == 0 {
		return s
	}
	k %= len(s)
	return append(slices.Clone(s[k:]), s[:k]...)
}

func runsOn(t suiteTarget, sc suiteScenario) bool {
	if t.Only != nil {
		return slices.Contains(t.Only, sc.Name)
	}
	return !sc.RedisOnly
}

type suite struct {
	out         string
	redisServer string
	port        int
	stderr      io.Writer
}

const suiteHeraldConfig = `# written by herald bench suite
apps:
  - id: app-id
    key: app-key
    secret: app-secret
    client_events: true
    api_requests_per_second: -1
    client_event_rate: 20
`

// freePort returns the next port at or after s.port that can be bound.
func (s *suite) freePort() int {
	for {
		p := s.port
		s.port++
		if s.port > 60000 {
			s.port = 17100
		}
		ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
		if err == nil {
			ln.Close()
			return p
		}
	}
}

func (s *suite) run(ctx context.Context, round int, t suiteTarget, sc suiteScenario) (SuiteRun, error) {
	run := SuiteRun{Round: round, Name: sc.Name, Target: t.Name}
	tag := fmt.Sprintf("%d-%s-%s", round, sc.Name, t.Name)
	cfgPath := filepath.Join(s.out, "logs", "herald.yaml")
	if err := os.WriteFile(cfgPath, []byte(suiteHeraldConfig), 0o644); err != nil {
		return run, err
	}
	var redisPID int
	var redisPort int
	if t.Redis {
		redisPort = s.freePort()
		rc, err := startLogged(filepath.Join(s.out, "logs", tag+".redis.log"), []string{s.redisServer, "--port", strconv.Itoa(redisPort),
			"--bind", "127.0.0.1", "--save", "", "--appendonly", "no"})
		if err != nil {
			return run, fmt.Errorf("redis-server: %w", err)
		}
		defer stopProcess(rc)
		redisPID = rc.Process.Pid
		if err := waitPort(ctx, redisPort, 20*time.Second); err != nil {
			return run, fmt.Errorf("redis-server: %w", err)
		}
	}
	port := s.freePort()
	argv := make([]string, len(t.Argv))
	for i, a := range t.Argv {
		a = strings.ReplaceAll(a, "{port}", strconv.Itoa(port))
		a = strings.ReplaceAll(a, "{redis}", strconv.Itoa(redisPort))
		argv[i] = strings.ReplaceAll(a, "{config}", cfgPath)
	}
	cmd, err := startLogged(filepath.Join(s.out, "logs", tag+".log"), argv)
	if err != nil {
		return run, err
	}
	defer stopProcess(cmd)
	if err := waitPort(ctx, port, 60*time.Second); err != nil {
		return run, fmt.Errorf("%s did not listen on %d: %w", t.Name, port, err)
	}
	time.Sleep(time.Second) // let it finish starting
	opts := Options{Target: Target{Addr: "127.0.0.1:" + strconv.Itoa(port), AppID: "app-id", Key: "app-key", Secret: "app-secret"},
		Name: t.Name, ServerPID: cmd.Process.Pid, Settle: sc.Settle, Progress: s.stderr}
	var redis0 time.Duration
	if redisPID > 0 {
		redis0, _ = ProcCPU(redisPID)
	}
	res, err := Run(ctx, sc.Scenario, opts, sc.Params)
	if err != nil {
		return run, err
	}
	if redisPID > 0 {
		r1, _ := ProcCPU(redisPID)
		run.ExtraCPU = (r1 - redis0).Seconds()
	}
	if cmd.ProcessState != nil || !alive(cmd.Process.Pid) {
		res.fail("%s exited during the run (see logs/%s.log)", t.Name, tag)
		res.OK = false
	}
	run.Result = res
	return run, res.WriteJSON(filepath.Join(s.out, tag+".json"))
}

// waitQuiet waits until the machine's busy CPU, sampled over 3 s, is under
// cores, or max has passed.
func waitQuiet(ctx context.Context, cores float64, max time.Duration, log io.Writer) {
	deadline := time.Now().Add(max)
	for {
		b0, _ := machineCPU()
		t0 := time.Now()
		select {
		case <-ctx.Done():
			return
		case <-time.After(3 * time.Second):
		}
		b1, _ := machineCPU()
		busy := (b1 - b0).Seconds() / time.Since(t0).Seconds()
		if busy < cores {
			return
		}
		if time.Now().After(deadline) {
			fmt.Fprintf(log, "   machine still busy (%.2f cores); running anyway\n", busy)
			return
		}
		fmt.Fprintf(log, "   waiting for a quieter machine (%.2f cores busy)\n", busy)
	}
}

func alive(pid int) bool { return syscall.Kill(pid, 0) == nil }

func startLogged(logPath string, argv []string) (*exec.Cmd, error) {
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, err
	}
	go func() { _ = cmd.Wait(); f.Close() }()
	return cmd, nil
}

// stopProcess sends SIGTERM to the process group, then SIGKILL after 10 s.
func stopProcess(cmd *exec.Cmd) {
	pid := cmd.Process.Pid
	_ = syscall.Kill(-pid, syscall.SIGTERM)
	for i := 0; i < 100 && alive(pid); i++ {
		time.Sleep(100 * time.Millisecond)
	}
	if alive(pid) {
		_ = syscall.Kill(-pid, syscall.SIGKILL)
	}
}

func waitPort(ctx context.Context, port int, d time.Duration) error {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return errors.New("timed out")
}

func writeJSONFile(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// oneLine is the headline of a run for the log.
func oneLine(name string, r *Result) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s/%s ok=%v", name, r.Target, r.OK)
	if r.RSSPerConn != 0 {
		fmt.Fprintf(&b, " rss/conn=%.0fB", r.RSSPerConn)
	}
	if r.CPU != nil && r.CPU.PerDelivery > 0 {
		fmt.Fprintf(&b, " cpu/msg=%.2fµs", r.CPU.PerDelivery)
	}
	if r.Latency != nil && r.Latency.Count > 0 {
		fmt.Fprintf(&b, " p99=%.2fms", r.Latency.P99)
	}
	if r.MaxSustained > 0 {
		fmt.Fprintf(&b, " max=%.0f/s", r.MaxSustained)
	}
	if r.Fanout != nil {
		fmt.Fprintf(&b, " publish→last=%.1fms", r.Fanout.ToLastMedianMs)
	}
	if r.ConnectPerSec > 0 && r.Scenario == "connect" {
		fmt.Fprintf(&b, " %.0f conns/s", r.ConnectPerSec)
	}
	if r.CPU != nil {
		fmt.Fprintf(&b, " other=%.2fcores", r.CPU.OtherCores)
	}
	if len(r.Errors) > 0 {
		fmt.Fprintf(&b, " errors=%q", r.Errors)
	}
	return b.String()
}

// metric extracts one headline number of a run; ok is false when the run
// has none.
type metric struct {
	Key, Title, Unit string
	Scenario         string
	Get              func(r *Result) (float64, bool)
	LowerIsBetter    bool
}

// Metrics are the headline numbers of the suite, in table order.
var Metrics = []metric{
	{Key: "rss_per_conn", Title: "RSS per idle subscribed connection", Unit: "B", Scenario: "idle", LowerIsBetter: true,
		Get: func(r *Result) (float64, bool) { return r.RSSPerConn, r.RSSPerConn != 0 }},
	{Key: "cpu_per_msg", Title: "server CPU per delivery at 30k/s", Unit: "µs", Scenario: "throughput", LowerIsBetter: true,
		Get: func(r *Result) (float64, bool) { return cpuPer(r) }},
	{Key: "p99", Title: "p99 publish→deliver at 30k/s", Unit: "ms", Scenario: "throughput", LowerIsBetter: true,
		Get: func(r *Result) (float64, bool) { return latP99(r) }},
	{Key: "max_sustained", Title: "highest sustained deliveries/s (p99 ≤ 100 ms, none lost)", Unit: "/s", Scenario: "maxrate",
		Get: func(r *Result) (float64, bool) { return r.MaxSustained, len(r.Rates) > 0 }},
	{Key: "fanout_last", Title: "broadcast to one channel: publish→last subscriber (median)", Unit: "ms", Scenario: "fanout", LowerIsBetter: true,
		Get: func(r *Result) (float64, bool) {
			if r.Fanout == nil {
				return 0, false
			}
			return r.Fanout.ToLastMedianMs, true
		}},
	{Key: "fanout_cpu", Title: "server CPU per delivery, broadcast to one channel", Unit: "µs", Scenario: "fanout", LowerIsBetter: true,
		Get: func(r *Result) (float64, bool) { return cpuPer(r) }},
	{Key: "burst_max", Title: "bursts of 10: highest sustained deliveries/s (p99 ≤ 1 s, none lost)", Unit: "/s", Scenario: "burst",
		Get: func(r *Result) (float64, bool) { return r.MaxSustained, len(r.Rates) > 0 }},
	{Key: "connects", Title: "connections (with subscribe) per second", Unit: "/s", Scenario: "connect",
		Get: func(r *Result) (float64, bool) { return r.ConnectPerSec, r.ConnectPerSec > 0 }},
	{Key: "presence_join_p99", Title: "presence churn: join p99", Unit: "ms", Scenario: "presence", LowerIsBetter: true,
		Get: func(r *Result) (float64, bool) {
			if r.Presence == nil || r.Presence.JoinLatency.Count == 0 {
				return 0, false
			}
			return r.Presence.JoinLatency.P99, true
		}},
	{Key: "client_p99", Title: "client events p99", Unit: "ms", Scenario: "client-events", LowerIsBetter: true,
		Get: func(r *Result) (float64, bool) { return latP99(r) }},
	{Key: "redis_p99", Title: "p99 publish→deliver at 30k/s through Redis", Unit: "ms", Scenario: "redis-throughput", LowerIsBetter: true,
		Get: func(r *Result) (float64, bool) { return latP99(r) }},
	{Key: "redis_cpu_per_msg", Title: "server CPU per delivery at 30k/s through Redis", Unit: "µs", Scenario: "redis-throughput", LowerIsBetter: true,
		Get: func(r *Result) (float64, bool) { return cpuPer(r) }},
}

func cpuPer(r *Result) (float64, bool) {
	if r.CPU == nil || r.CPU.PerDelivery == 0 {
		return 0, false
	}
	return r.CPU.PerDelivery, true
}

func latP99(r *Result) (float64, bool) {
	if r.Latency == nil || r.Latency.Count == 0 {
		return 0, false
	}
	return r.Latency.P99, true
}

// Stat is the median and range of one metric of one target.
type Stat struct {
	Median, Min, Max float64
	N                int
	Failed           int // runs with errors (not counted)
}

// Stats returns the metric's values per target over the rounds (failed runs
// excluded, except for the rate searches, whose failing step is the result).
func (rep *SuiteReport) Stats(m metric) map[string]Stat {
	vals := map[string][]float64{}
	failed := map[string]int{}
	for _, run := range rep.Runs {
		if run.Name != m.Scenario || run.Result == nil {
			continue
		}
		v, ok := m.Get(run.Result)
		if !ok || (!run.Result.OK && len(run.Result.Rates) <= 1) {
			failed[run.Target]++
			continue
		}
		vals[run.Target] = append(vals[run.Target], v)
	}
	out := map[string]Stat{}
	for t, v := range vals {
		out[t] = Stat{Median: median(v), Min: slices.Min(v), Max: slices.Max(v), N: len(v), Failed: failed[t]}
	}
	for t, n := range failed {
		if _, ok := out[t]; !ok {
			out[t] = Stat{Failed: n}
		}
	}
	return out
}

// Markdown writes the comparison table: medians with ranges, and the ratio
// to the raw reference.
func (rep *SuiteReport) Markdown(w io.Writer) {
	fmt.Fprintf(w, "## herald bench suite, %s\n\n", rep.Started.Format("2006-01-02 15:04 UTC"))
	fmt.Fprintf(w, "%d CPUs (%s), %s, Linux %s, %s; %d round(s); `%s`\n\n", rep.Machine.CPUs, rep.Machine.Model,
		rep.Machine.MemTotal, rep.Machine.Kernel, rep.Machine.GoVersion, rep.Rounds, rep.Command)
	targets := slices.Clone(rep.Targets)
	fmt.Fprintf(w, "| metric |")
	for _, t := range targets {
		fmt.Fprintf(w, " %s |", t)
	}
	fmt.Fprintf(w, "\n|---|")
	for range targets {
		fmt.Fprintf(w, "---|")
	}
	fmt.Fprintln(w)
	for _, m := range Metrics {
		st := rep.Stats(m)
		if len(st) == 0 {
			continue
		}
		fmt.Fprintf(w, "| %s (%s) |", m.Title, m.Unit)
		raw, hasRaw := st["raw"]
		for _, t := range targets {
			s, ok := st[t]
			switch {
			case !ok:
				fmt.Fprintf(w, " – |")
			case s.N == 0:
				fmt.Fprintf(w, " failed |")
			case s.Median == 0 && (m.Key == "max_sustained" || m.Key == "burst_max"):
				cell := "none (first step failed)"
				if s.Max > 0 {
					cell = "0 (" + fmtNum(s.Min) + "–" + fmtNum(s.Max) + ")"
				}
				fmt.Fprintf(w, " %s |", cell)
			default:
				cell := fmtNum(s.Median)
				if s.N > 1 {
					cell += " (" + fmtNum(s.Min) + "–" + fmtNum(s.Max) + ")"
				}
				if hasRaw && raw.N > 0 && raw.Median != 0 && t != "raw" {
					cell += fmt.Sprintf(" ×%.2f", s.Median/raw.Median)
				}
				if s.Failed > 0 {
					cell += fmt.Sprintf(" [%d failed]", s.Failed)
				}
				fmt.Fprintf(w, " %s |", cell)
			}
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "\nMedians over rounds, (min–max), ×ratio to raw.\n")
	var errs []string
	for _, run := range rep.Runs {
		if run.Result != nil && len(run.Result.Errors) > 0 && len(run.Result.Rates) <= 1 {
			errs = append(errs, fmt.Sprintf("round %d %s on %s: %s", run.Round, run.Name, run.Target, strings.Join(run.Result.Errors, "; ")))
		}
	}
	sort.Strings(errs)
	if len(errs) > 0 {
		fmt.Fprintf(w, "\nRuns with errors:\n\n")
		for _, e := range errs {
			fmt.Fprintf(w, "- %s\n", e)
		}
	}
}

func fmtNum(v float64) string {
	switch {
	case v >= 10000:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case v >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case v >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	default:
		return strconv.FormatFloat(v, 'f', 2, 64)
	}
}
