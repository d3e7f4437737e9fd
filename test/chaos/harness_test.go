//go:build chaos || soak

package chaos

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/heraldrt/herald/internal/redistest"
	"github.com/heraldrt/herald/internal/redisx"
	"github.com/heraldrt/herald/internal/testkit"
)

var (
	heraldBin string
	repoRoot  string
)

func TestMain(m *testing.M) {
	wd, _ := os.Getwd()
	repoRoot = filepath.Join(wd, "..", "..")
	raiseFileLimit()
	tmp, err := os.MkdirTemp("", "herald-chaos-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	heraldBin = filepath.Join(tmp, "herald")
	if bin := os.Getenv("CHAOS_HERALD_BIN"); bin != "" {
		heraldBin = bin // a prebuilt binary (e.g. an older commit, to compare)
	} else if err := testkit.BuildHerald(repoRoot, heraldBin, false); err != nil {
		fmt.Fprintln(os.Stderr, "build herald:", err)
		os.Exit(1)
	}
	code := m.Run()
	if err := writeReport(); err != nil {
		fmt.Fprintln(os.Stderr, "chaos report:", err)
	}
	os.RemoveAll(tmp)
	printFailures()
	os.Exit(code)
}

// raiseFileLimit sets RLIMIT_NOFILE's soft limit to the hard one, for this
// process and the herald and redis-server processes it starts.
func raiseFileLimit() {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return
	}
	if rl.Cur < rl.Max {
		rl.Cur = rl.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl)
	}
}

// needFiles fails the test when the file limit is below n.
func needFiles(t *testing.T, n uint64) {
	t.Helper()
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		fatalf(t, "%v", err)
	}
	if rl.Cur < n {
		fatalf(t, "RLIMIT_NOFILE is %d (hard %d); this test needs %d: raise the hard limit (ulimit -Hn)", rl.Cur, rl.Max, n)
	}
}

var app = testkit.App{ID: "app-id", Key: "app-key", Secret: "app-secret"}

// ---------------------------------------------------------------------------
// Processes

// node is one herald process with its internal listener (metrics).
type node struct {
	*testkit.Herald
	Name     string
	Internal string // host:port of the internal listener
}

// listenHost is where the test's herald and redis-server processes listen:
// not 127.0.0.1, whose free ports are also the local ports of every
// outgoing connection on the machine, so a port could be taken while a
// killed process is down and its restart on the same port would fail.
const listenHost = "127.0.0.100"

func freeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(listenHost, "0"))
	if err != nil {
		fatalf(t, "%v", err)
	}
	defer l.Close()
	return l.Addr().String()
}

// startNode starts herald with config; logs at info level (a debug line per
// closed connection would be thousands of lines).
func startNode(t testing.TB, name, config string, env ...string) *node {
	t.Helper()
	internal := freeAddr(t)
	level := "info"
	if l := os.Getenv("CHAOS_LOG_LEVEL"); l != "" {
		level = l // e.g. debug, to diagnose a failure
	}
	env = append([]string{"HERALD_INTERNAL_ADDR=" + internal, "HERALD_LOG_LEVEL=" + level}, env...)
	h := testkit.StartHeraldOn(t, heraldBin, listenHost, config, env...)
	return &node{Herald: h, Name: name, Internal: internal}
}

// RSS returns the process's resident set size in bytes (VmRSS).
func (n *node) RSS() (int64, error) {
	pid := n.PID()
	if pid == 0 {
		return 0, fmt.Errorf("%s is not running", n.Name)
	}
	return procRSS(pid)
}

func procRSS(pid int) (int64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(rest)
			if len(f) < 1 {
				break
			}
			kb, err := strconv.ParseInt(f[0], 10, 64)
			return kb * 1024, err
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}

// sideDialer dials the test's HTTP requests from 127.0.0.10, apart from
// the WebSocket clients and from the processes' own connections.
var sideDialer = &net.Dialer{Timeout: 2 * time.Second, LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 10)}}

var metricsClient = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: sideDialer.DialContext}}

// Metrics scrapes /metrics on the internal listener: series (name with its
// labels, as printed) → value.
func (n *node) Metrics() (map[string]float64, error) {
	resp, err := metricsClient.Get("http://" + n.Internal + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("metrics: HTTP %d", resp.StatusCode)
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
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		out[line[:i]] = v
	}
	return out, sc.Err()
}

// Metric returns one series' value (0 when absent).
func (n *node) Metric(t testing.TB, series string) float64 {
	t.Helper()
	m, err := n.Metrics()
	if err != nil {
		fatalf(t, "%s metrics: %v", n.Name, err)
	}
	return m[series]
}

// fleet is Redis shards, edge nodes and one api node.
type fleet struct {
	shards []*redistest.Server
	urls   []string
	ring   *redisx.Ring
	edges  []*node
	api    *node
	config string
}

func startFleet(t testing.TB, shards, edges int, config string) *fleet {
	t.Helper()
	f := &fleet{config: config}
	for i := 0; i < shards; i++ {
		s := redistest.StartOn(t, listenHost)
		f.shards = append(f.shards, s)
		f.urls = append(f.urls, s.URL())
	}
	f.ring = redisx.NewRing(f.urls)
	redis := "HERALD_REDIS=" + strings.Join(f.urls, ",")
	for i := 0; i < edges; i++ {
		f.edges = append(f.edges, startNode(t, "edge"+strconv.Itoa(i), config, redis, "HERALD_ROLE=edge"))
	}
	f.api = startNode(t, "api", config, redis, "HERALD_ROLE=api")
	return f
}

// shardOf is the shard index Herald uses for a channel of the app.
func (f *fleet) shardOf(channel string) int {
	return f.ring.Pick(redisx.ShardKey(app.ID, channel))
}

// channelsOn returns n channel names with prefix, spread evenly over the
// shards (round robin).
func (f *fleet) channelsOn(prefix string, n int) []string {
	var out []string
	next := 0
	for i := 0; len(out) < n; i++ {
		c := prefix + strconv.Itoa(i)
		if f.shardOf(c) == len(out)%len(f.shards) {
			out = append(out, c)
		}
		next++
		if next > 100000 {
			panic("channelsOn: no spread")
		}
	}
	return out
}

// ---------------------------------------------------------------------------
// Publishing through the signed HTTP API

// publisher sends signed API requests with deadlines over kept-alive
// connections.
type publisher struct {
	addr   string
	client *http.Client
}

func newPublisher(addr string) *publisher {
	tr := &http.Transport{MaxIdleConnsPerHost: 64, MaxConnsPerHost: 64, IdleConnTimeout: 30 * time.Second,
		DialContext: sideDialer.DialContext}
	return &publisher{addr: addr, client: &http.Client{Timeout: 3 * time.Second, Transport: tr}}
}

func (p *publisher) close() { p.client.CloseIdleConnections() }

// trigger publishes one event; it returns the HTTP status (0 on a transport
// error or timeout).
func (p *publisher) trigger(channel, event, data string) (int, error) {
	body, _ := json.Marshal(map[string]any{"name": event, "channel": channel, "data": data})
	return p.do("POST", "/events", nil, body)
}

func (p *publisher) do(method, path string, params map[string][]string, body []byte) (int, error) {
	code, _, err := p.doBody(method, path, params, body)
	return code, err
}

func (p *publisher) doBody(method, path string, params map[string][]string, body []byte) (int, []byte, error) {
	full := "/apps/" + app.ID + path
	q := signRequest(method, full, params, body)
	var rd io.Reader
	if body != nil {
		rd = strings.NewReader(string(body))
	}
	req, err := http.NewRequest(method, "http://"+p.addr+full+"?"+q, rd)
	if err != nil {
		return 0, nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// presenceUsers lists a presence channel's user ids through the API.
func (p *publisher) presenceUsers(channel string) ([]string, error) {
	code, b, err := p.doBody("GET", "/channels/"+channel+"/users", nil, nil)
	if err != nil {
		return nil, err
	}
	if code != http.StatusOK {
		return nil, fmt.Errorf("users of %s: HTTP %d %s", channel, code, b)
	}
	var r struct {
		Users []struct {
			ID string `json:"id"`
		} `json:"users"`
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, err
	}
	ids := make([]string, 0, len(r.Users))
	for _, u := range r.Users {
		ids = append(ids, u.ID)
	}
	sort.Strings(ids)
	return ids, nil
}

// ---------------------------------------------------------------------------
// Statistics

func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(p/100*float64(len(sorted)))) - 1
	if i < 0 {
		i = 0
	}
	if i >= len(sorted) {
		i = len(sorted) - 1
	}
	return sorted[i]
}

func sortDurations(d []time.Duration) {
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func mib(b int64) float64 { return float64(b) / (1 << 20) }

// ---------------------------------------------------------------------------
// Report

type reportEntry struct {
	Test    string         `json:"test"`
	Passed  bool           `json:"passed"`
	Figures map[string]any `json:"figures"`
	Notes   []string       `json:"notes,omitempty"`
}

var (
	reportMu sync.Mutex
	report   []*reportEntry
)

// record adds a test's figures to the summary; the entry's pass/fail is
// taken when the test ends.
func record(t *testing.T, figures map[string]any, notes ...string) {
	e := &reportEntry{Test: t.Name(), Figures: figures, Notes: notes}
	reportMu.Lock()
	report = append(report, e)
	reportMu.Unlock()
	t.Cleanup(func() {
		reportMu.Lock()
		e.Passed = !t.Failed()
		reportMu.Unlock()
	})
	keys := make([]string, 0, len(figures))
	for k := range figures {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		t.Logf("%s: %s = %v", t.Name(), k, figures[k])
	}
}

func reportDir() string {
	if d := os.Getenv("CHAOS_REPORT_DIR"); d != "" {
		return d
	}
	return filepath.Join(repoRoot, "bin")
}

func writeReport() error {
	reportMu.Lock()
	defer reportMu.Unlock()
	if len(report) == 0 {
		return nil
	}
	dir := reportDir()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	base := "chaos-report"
	if reportBase != "" {
		base = reportBase
	}
	js, err := json.MarshalIndent(map[string]any{"time": time.Now().UTC().Format(time.RFC3339), "tests": report}, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, base+".json"), js, 0o644); err != nil {
		return err
	}
	var md strings.Builder
	fmt.Fprintf(&md, "# Herald %s (%s)\n\n", base, time.Now().UTC().Format(time.RFC3339))
	for _, e := range report {
		status := "PASS"
		if !e.Passed {
			status = "FAIL"
		}
		fmt.Fprintf(&md, "## %s: %s\n\n| figure | value |\n|---|---|\n", e.Test, status)
		keys := make([]string, 0, len(e.Figures))
		for k := range e.Figures {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			fmt.Fprintf(&md, "| %s | %v |\n", k, e.Figures[k])
		}
		for _, n := range e.Notes {
			fmt.Fprintf(&md, "\n%s\n", n)
		}
		md.WriteString("\n")
	}
	if err := os.WriteFile(filepath.Join(dir, base+".md"), []byte(md.String()), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "chaos: report written to %s\n", filepath.Join(dir, base+".{json,md}"))
	return nil
}

// reportBase names the report files (soak sets its own).
var reportBase string

// waitFor polls cond every step until it is true or d passes.
func waitFor(d, step time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(step)
	}
}

// failures collects every test failure message, printed again at the very
// end of the run (CI shows the tail of the output, after the node logs).
var (
	failuresMu sync.Mutex
	failures   []string
)

func noteFailure(t testing.TB, msg string) {
	failuresMu.Lock()
	failures = append(failures, t.Name()+": "+msg)
	failuresMu.Unlock()
}

// errorf is t.Errorf, also remembered for the summary at the end.
func errorf(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	noteFailure(t, msg)
	t.Error(msg)
}

// fatalf is t.Fatalf, also remembered for the summary at the end.
func fatalf(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	noteFailure(t, msg)
	t.Fatal(msg)
}

// printFailures repeats every failure at the end of the output.
func printFailures() {
	failuresMu.Lock()
	defer failuresMu.Unlock()
	if len(failures) == 0 {
		return
	}
	fmt.Fprintf(os.Stderr, "chaos: %d failure(s):\n", len(failures))
	for _, f := range failures {
		fmt.Fprintf(os.Stderr, "  %s\n", f)
	}
}
