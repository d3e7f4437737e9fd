// Command wsbench drives wsserver (or Herald) and wsload for each target and
// prints two tables: idle memory (RSS slope per connection, goroutines,
// threads) and broadcast cost (server write loop, time until the client holds
// every frame, CPU per delivered message).
//
//	go run ./cmd/wsbench                       # all wsserver impls, 2000 → 8000 conns
//	go run ./cmd/wsbench -impls nbio -steps 1000,4000
//	go run ./cmd/wsbench -gc -impls gobwas-epoll,herald,herald-1ch
//
// Targets "herald" (every connection subscribed to its own public channel) and
// "herald-1ch" (all on one channel; broadcast is a signed HTTP API trigger)
// run the real Herald binary, built from ../../cmd/herald unless -herald is
// given. Herald has no debug endpoint: its goroutines and heap are not shown.
//
// Server and client run as separate processes; every wait is bounded.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

type stats struct {
	Conns      int    `json:"conns"`
	Goroutines int    `json:"goroutines"`
	VmRSS      int64  `json:"vmrss_bytes"`
	HeapInuse  uint64 `json:"heap_inuse"`
	StackInuse uint64 `json:"stack_inuse"`
	Sys        uint64 `json:"sys"`
	NumGC      uint32 `json:"num_gc"`
}

type bcast struct {
	Mode       string  `json:"mode"`
	Conns      int     `json:"conns"`
	Sent       int     `json:"sent"`
	Errors     int     `json:"errors"`
	ElapsedNs  int64   `json:"elapsed_ns"`
	CPUNs      int64   `json:"cpu_ns"`
	UserNs     int64   `json:"user_ns"`
	CPUPerMsg  float64 `json:"cpu_ns_per_msg"`
	VolCtxSw   int64   `json:"vol_ctxsw"`
	InvolCtxSw int64   `json:"invol_ctxsw"`
	Err        string  `json:"err,omitempty"`
}

type step struct {
	Conns   int   `json:"conns"`
	RSS     int64 `json:"rss_bytes"`                    // VmRSS read from /proc/<pid>/status
	GCRSS   int64 `json:"rss_after_gc_bytes,omitempty"` // -gc: after runtime/debug.FreeOSMemory
	Threads int   `json:"threads"`                      // OS threads, from /proc/<pid>/status
	Stats   stats `json:"stats"`
	Failed  int   `json:"failed_dials"`
	DialMs  int   `json:"dial_ms"`
}

type bcastSummary struct {
	Mode        string    `json:"mode"`
	Supported   bool      `json:"supported"`
	MedianMs    float64   `json:"median_ms"`
	MedianCPUUs float64   `json:"median_cpu_us_per_msg"`
	ElapsedMs   []float64 `json:"elapsed_ms"`
	CPUUsPerMsg []float64 `json:"cpu_us_per_msg"`
	UserUsPerMs []float64 `json:"user_cpu_us_per_msg"`
	MedianUser  float64   `json:"median_user_cpu_us_per_msg"`
	Delivered   []int64   `json:"delivered_frames"` // counted by the client
	VolCtxSw    []int64   `json:"vol_ctxsw"`
	InvolCtxSw  []int64   `json:"invol_ctxsw"`
	StealMs     []float64 `json:"host_steal_ms"`    // from /proc/stat, whole machine
	E2EMs       []float64 `json:"delivered_all_ms"` // request sent → client has every frame
	MedianE2EMs float64   `json:"median_delivered_all_ms"`
	Note        string    `json:"note,omitempty"`
}

type result struct {
	Impl         string         `json:"impl"`
	BaseRSS      int64          `json:"base_rss_bytes"`
	Steps        []step         `json:"steps"`
	SlopeBytes   float64        `json:"rss_slope_bytes_per_conn"`
	GCSlopeBytes float64        `json:"rss_after_gc_slope_bytes_per_conn,omitempty"`
	Broadcast    []bcastSummary `json:"broadcast"`
	Err          string         `json:"err,omitempty"`
}

func main() {
	implsFlag := flag.String("impls", "gorilla,coder,gobwas-epoll,nbio", "targets to measure: wsserver impls and/or herald (one channel per connection), herald-1ch (all on one channel, broadcast via the HTTP API)")
	stepsFlag := flag.String("steps", "2000,8000", "connection counts (first and last give the slope)")
	settle := flag.Duration("settle", 5*time.Second, "settling time after each step")
	reps := flag.Int("reps", 5, "broadcasts per mode")
	size := flag.Int("n", 100, "broadcast payload bytes")
	addr := flag.String("addr", "127.0.0.1:18080", "server listen address")
	binDir := flag.String("bin", "", "directory with prebuilt wsserver and wsload (default: build into a temp dir)")
	out := flag.String("json", "", "also write results as JSON to this file")
	total := flag.Duration("deadline", 30*time.Minute, "bound on the whole run")
	gc := flag.Bool("gc", false, "wsserver targets: also read RSS after a forced GC and FreeOSMemory (Herald cannot be asked)")
	var h heraldOpts
	flag.StringVar(&h.bin, "herald", "", "herald binary (default: build ../../cmd/herald when a herald target is asked for)")
	flag.StringVar(&h.appID, "herald-app-id", "app-id", "Herald app id")
	flag.StringVar(&h.key, "herald-key", "app-key", "Herald app key")
	flag.StringVar(&h.secret, "herald-secret", "app-secret", "Herald app secret")
	flag.Parse()

	ctx, cancel := context.WithTimeout(context.Background(), *total)
	defer cancel()

	var steps []int
	for _, s := range strings.Split(*stepsFlag, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n <= 0 {
			log.Fatalf("bad -steps %q", *stepsFlag)
		}
		steps = append(steps, n)
	}
	var impls []string
	for _, impl := range strings.Split(*implsFlag, ",") {
		impls = append(impls, strings.TrimSpace(impl))
	}
	tmp, err := os.MkdirTemp("", "wsbench")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(tmp)
	dir := *binDir
	if dir == "" {
		dir = tmp
		for _, cmd := range []string{"wsserver", "wsload"} {
			b := exec.CommandContext(ctx, "go", "build", "-o", filepath.Join(dir, cmd), "./cmd/"+cmd)
			b.Stdout, b.Stderr = os.Stderr, os.Stderr
			if err := b.Run(); err != nil {
				log.Fatalf("build %s (run from tools/wscandidates): %v", cmd, err)
			}
		}
	}
	if h.bin == "" && (slices.Contains(impls, "herald") || slices.Contains(impls, "herald-1ch")) {
		// The top-level module is two directories up; it does not depend on this one.
		h.bin = filepath.Join(tmp, "herald")
		b := exec.CommandContext(ctx, "go", "build", "-o", h.bin, "./cmd/herald")
		b.Dir = filepath.Join("..", "..")
		b.Stdout, b.Stderr = os.Stderr, os.Stderr
		if err := b.Run(); err != nil {
			log.Fatalf("build herald (run from tools/wscandidates, or pass -herald): %v", err)
		}
	}

	r := runner{ctx: ctx, dir: dir, addr: *addr, steps: steps, settle: *settle, reps: *reps, size: *size, gc: *gc, herald: h}
	if r.dir != tmp {
		// Herald's config file goes to the temp dir, never next to the binaries.
		r.herald.cfgDir = tmp
	}
	var results []result
	for _, impl := range impls {
		log.Printf("=== %s", impl)
		res := r.measure(impl)
		if res.Err != "" {
			log.Printf("%s: %s", impl, res.Err)
		}
		results = append(results, res)
	}
	printTable(results, steps)
	if *out != "" {
		b, _ := json.MarshalIndent(results, "", "  ")
		if err := os.WriteFile(*out, b, 0o644); err != nil {
			log.Print(err)
		}
	}
}

type runner struct {
	ctx    context.Context
	dir    string
	addr   string
	steps  []int
	settle time.Duration
	reps   int
	size   int
	gc     bool
	herald heraldOpts
}

// target is one server under test: a wsserver candidate or Herald itself.
type target struct {
	name     string
	argv     []string
	env      []string
	readyURL string   // polled until it answers 200
	statsURL string   // wsserver's /stats; "" for Herald (it has no debug endpoint)
	wsURL    string   // what wsload dials
	loadArgs []string // extra wsload flags
	modes    []string // broadcast modes
	// broadcast sends one message to every connection and returns what the
	// server reported (zero for Herald, whose API only acknowledges).
	broadcast func(ctx context.Context, mode string) (bcast, error)
	frameLen  int64  // bytes one broadcast delivers per connection; 0: calibrate
	note      string // why broadcast is not measured, if it is not
}

func (r *runner) target(name string) (target, error) {
	base := "http://" + r.addr
	if name == "herald" || name == "herald-1ch" {
		h := r.herald
		if h.bin == "" {
			return target{}, errors.New("no herald binary (-herald, or run from tools/wscandidates so it can be built)")
		}
		cfgDir := h.cfgDir
		if cfgDir == "" {
			cfgDir = r.dir
		}
		cfg := filepath.Join(cfgDir, "herald.yaml")
		// activity_timeout 3600: no pings (wsload does not answer them) during
		// the run. Everything else is the default app.
		yaml := fmt.Sprintf("apps:\n  - id: %s\n    key: %s\n    secret: %s\n    activity_timeout: 3600\n", h.appID, h.key, h.secret)
		if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
			return target{}, err
		}
		t := target{
			name:     name,
			argv:     []string{h.bin, "serve"},
			env:      []string{"HERALD_ADDR=" + r.addr, "HERALD_CONFIG=" + cfg, "HERALD_LOG_LEVEL=warn"},
			readyURL: base + "/healthz",
			wsURL:    "ws://" + r.addr + "/app/" + h.key + "?protocol=7",
		}
		if name == "herald" {
			// One public channel per connection: the idle-memory case.
			t.loadArgs = []string{"-subscribe", "c-%d"}
			t.note = "one channel per connection; see herald-1ch"
		} else {
			// Every connection on one channel: one API trigger reaches all.
			t.loadArgs = []string{"-subscribe", "bench"}
			t.modes = []string{"api"}
			t.broadcast = func(ctx context.Context, _ string) (bcast, error) {
				return bcast{}, h.trigger(ctx, base, "bench", makeData(r.size))
			}
		}
		return t, nil
	}
	frameLen := int64(r.size + 2)
	if r.size >= 126 {
		frameLen = int64(r.size + 4)
	}
	return target{
		name:     name,
		argv:     []string{filepath.Join(r.dir, "wsserver"), "-impl", name, "-addr", r.addr},
		readyURL: base + "/stats",
		statsURL: base + "/stats",
		wsURL:    "ws://" + r.addr + "/app/test",
		modes:    []string{"lib", "raw"},
		broadcast: func(ctx context.Context, mode string) (b bcast, err error) {
			err = getJSON(ctx, fmt.Sprintf("%s/broadcast?n=%d&mode=%s", base, r.size, mode), &b)
			return b, err
		},
		frameLen: frameLen,
	}, nil
}

func (r *runner) measure(impl string) (res result) {
	res.Impl = impl
	ctx, cancel := context.WithTimeout(r.ctx, 10*time.Minute)
	defer cancel()
	t, err := r.target(impl)
	if err != nil {
		res.Err = err.Error()
		return
	}

	logf, _ := os.Create(filepath.Join(os.TempDir(), "wsbench-"+impl+".log"))
	defer logf.Close()
	srv := exec.CommandContext(ctx, t.argv[0], t.argv[1:]...)
	srv.Env = append(os.Environ(), t.env...)
	srv.Stdout, srv.Stderr = logf, logf
	srv.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := srv.Start(); err != nil {
		res.Err = err.Error()
		return
	}
	defer func() { _ = srv.Process.Kill(); _ = srv.Wait() }()

	if err := retry(ctx, 10*time.Second, func() error { return getOK(ctx, t.readyURL) }); err != nil {
		res.Err = "server not up: " + err.Error()
		return
	}
	res.BaseRSS = procRSS(srv.Process.Pid)

	cli := exec.CommandContext(ctx, filepath.Join(r.dir, "wsload"), append([]string{"-url", t.wsURL}, t.loadArgs...)...)
	cli.Stderr = logf
	cli.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdin, _ := cli.StdinPipe()
	stdout, _ := cli.StdoutPipe()
	if err := cli.Start(); err != nil {
		res.Err = err.Error()
		return
	}
	defer func() { _ = cli.Process.Kill(); _ = cli.Wait() }()
	lines := make(chan string, 16)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	ask := func(cmd string, timeout time.Duration) (map[string]int64, error) {
		if _, err := io.WriteString(stdin, cmd+"\n"); err != nil {
			return nil, err
		}
		select {
		case l, ok := <-lines:
			if !ok {
				return nil, errors.New("client exited")
			}
			return kv(l), nil
		case <-time.After(timeout):
			return nil, fmt.Errorf("client: no answer to %q in %v", cmd, timeout)
		}
	}

	have := 0
	for _, target := range r.steps {
		reply, err := ask(fmt.Sprintf("add %d", target-have), 3*time.Minute)
		if err != nil {
			res.Err = err.Error()
			return
		}
		have = int(reply["total"])
		sleepCtx(ctx, r.settle)
		s := step{Conns: have, RSS: procRSS(srv.Process.Pid), Threads: procThreads(srv.Process.Pid), Failed: int(reply["failed"]), DialMs: int(reply["ms"])}
		if t.statsURL != "" {
			_ = getJSON(ctx, t.statsURL, &s.Stats)
			if r.gc {
				var g stats
				if getJSON(ctx, t.statsURL+"?gc=1", &g) == nil {
					s.GCRSS = g.VmRSS
				}
			}
			log.Printf("%s: %d conns (server sees %d), RSS %.1f MiB, threads %d, goroutines %d, heap %.1f MiB, stacks %.1f MiB, RSS after forced GC %.1f MiB",
				impl, have, s.Stats.Conns, mib(s.RSS), s.Threads, s.Stats.Goroutines, mib(int64(s.Stats.HeapInuse)), mib(int64(s.Stats.StackInuse)), mib(s.GCRSS))
		} else {
			s.Stats.Goroutines = -1
			log.Printf("%s: %d conns, RSS %.1f MiB, threads %d", impl, have, mib(s.RSS), s.Threads)
		}
		if s.Failed > 0 {
			log.Printf("%s: %d dials failed (see %s)", impl, s.Failed, logf.Name())
		}
		res.Steps = append(res.Steps, s)
	}
	first, last := res.Steps[0], res.Steps[len(res.Steps)-1]
	if last.Conns > first.Conns {
		res.SlopeBytes = float64(last.RSS-first.RSS) / float64(last.Conns-first.Conns)
		if first.GCRSS > 0 && last.GCRSS > 0 {
			res.GCSlopeBytes = float64(last.GCRSS-first.GCRSS) / float64(last.Conns-first.Conns)
		}
	}
	if len(t.modes) == 0 {
		res.Broadcast = append(res.Broadcast, bcastSummary{Mode: "-", Note: t.note})
	}

	// rxQuiet returns the client's byte count once it has stopped growing.
	rxQuiet := func() (int64, error) {
		var last int64 = -1
		deadline := time.Now().Add(10 * time.Second)
		for {
			st, err := ask("stats", 10*time.Second)
			if err != nil {
				return 0, err
			}
			if st["rxbytes"] == last || time.Now().After(deadline) {
				return st["rxbytes"], nil
			}
			last = st["rxbytes"]
			sleepCtx(ctx, 300*time.Millisecond)
		}
	}
	for _, mode := range t.modes {
		sum := bcastSummary{Mode: mode, Supported: true}
		frameLen := t.frameLen
		if frameLen == 0 {
			// Calibrate: one broadcast, then bytes received per connection.
			rx0, err := rxQuiet()
			if err == nil {
				_, err = t.broadcast(ctx, mode)
			}
			var rx1 int64
			if err == nil {
				rx1, err = rxQuiet()
			}
			if err != nil {
				res.Err = err.Error()
				return
			}
			if d := rx1 - rx0; d <= 0 || d%int64(have) != 0 {
				sum.Supported, sum.Note = false, fmt.Sprintf("calibration: %d bytes for %d connections", d, have)
				res.Broadcast = append(res.Broadcast, sum)
				continue
			}
			frameLen = (rx1 - rx0) / int64(have)
		}
		for i := 0; i < r.reps; i++ {
			before, err := ask("stats", 10*time.Second)
			if err != nil {
				res.Err = err.Error()
				return
			}
			want := before["rxbytes"] + int64(have)*frameLen
			if _, err := ask(fmt.Sprintf("expect %d", want), 10*time.Second); err != nil {
				res.Err = err.Error()
				return
			}
			steal0 := stealTicks()
			t0 := time.Now()
			b, err := t.broadcast(ctx, mode)
			if err != nil {
				res.Err = err.Error()
				return
			}
			if b.Err != "" {
				sum.Supported, sum.Note = false, b.Err
				break
			}
			// Wait (bounded) until the client has every frame.
			var after map[string]int64
			deadline := time.Now().Add(10 * time.Second)
			for {
				if after, err = ask("stats", 10*time.Second); err != nil || after["reached"] != 0 || time.Now().After(deadline) {
					break
				}
				sleepCtx(ctx, 20*time.Millisecond)
			}
			if after == nil {
				res.Err = "client: no stats"
				return
			}
			if after["reached"] != 0 {
				sum.E2EMs = append(sum.E2EMs, float64(after["reached"]-t0.UnixNano())/1e6)
			}
			sum.StealMs = append(sum.StealMs, float64(stealTicks()-steal0)*10) // USER_HZ=100
			sum.VolCtxSw = append(sum.VolCtxSw, b.VolCtxSw)
			sum.InvolCtxSw = append(sum.InvolCtxSw, b.InvolCtxSw)
			if b.ElapsedNs > 0 {
				sum.ElapsedMs = append(sum.ElapsedMs, float64(b.ElapsedNs)/1e6)
				sum.CPUUsPerMsg = append(sum.CPUUsPerMsg, b.CPUPerMsg/1e3)
			}
			if b.Sent > 0 {
				sum.UserUsPerMs = append(sum.UserUsPerMs, float64(b.UserNs)/float64(b.Sent)/1e3)
			}
			sum.Delivered = append(sum.Delivered, (after["rxbytes"]-before["rxbytes"])/frameLen)
			sleepCtx(ctx, 300*time.Millisecond)
		}
		if sum.Supported {
			sum.MedianMs, sum.MedianCPUUs, sum.MedianUser = median(sum.ElapsedMs), median(sum.CPUUsPerMsg), median(sum.UserUsPerMs)
			sum.MedianE2EMs = median(sum.E2EMs)
			log.Printf("%s: broadcast %s: server loop median %.2f ms, delivered to all median %.2f ms, %.2f µs CPU/msg (%.2f user), delivered %v",
				impl, mode, sum.MedianMs, sum.MedianE2EMs, sum.MedianCPUUs, sum.MedianUser, sum.Delivered)
		}
		res.Broadcast = append(res.Broadcast, sum)
	}
	_, _ = ask("quit", 10*time.Second)
	return res
}

func printTable(rs []result, steps []int) {
	lo, hi := steps[0], steps[len(steps)-1]
	fmt.Printf("\n| target | RSS @%d | RSS @%d | RSS B/idle conn (slope) | after forced GC | heap B/conn | stack B/conn | goroutines @%d | threads @%d |\n", lo, hi, hi, hi)
	fmt.Println("|---|---|---|---|---|---|---|---|---|")
	for _, r := range rs {
		if len(r.Steps) < 2 {
			fmt.Printf("| %s | error: %s |\n", r.Impl, r.Err)
			continue
		}
		first, last := r.Steps[0], r.Steps[len(r.Steps)-1]
		dc := float64(last.Conns - first.Conns)
		gcSlope, heap, stack, gor := "-", "-", "-", "-"
		if r.GCSlopeBytes != 0 {
			gcSlope = fmt.Sprintf("%.0f", r.GCSlopeBytes)
		}
		if last.Stats.Goroutines >= 0 {
			heap = fmt.Sprintf("%.0f", (float64(last.Stats.HeapInuse)-float64(first.Stats.HeapInuse))/dc)
			stack = fmt.Sprintf("%.0f", (float64(last.Stats.StackInuse)-float64(first.Stats.StackInuse))/dc)
			gor = strconv.Itoa(last.Stats.Goroutines)
		}
		conns := ""
		if first.Conns != lo || last.Conns != hi {
			conns = fmt.Sprintf(" (%d→%d conns)", first.Conns, last.Conns)
		}
		fmt.Printf("| %s%s | %.1f MiB | %.1f MiB | %.0f | %s | %s | %s | %s | %d |\n",
			r.Impl, conns, mib(first.RSS), mib(last.RSS), r.SlopeBytes, gcSlope, heap, stack, gor, last.Threads)
	}
	fmt.Printf("\n| target | mode | server write loop ms @%d | delivered to all ms | CPU µs/msg [user] | frames delivered |\n", hi)
	fmt.Println("|---|---|---|---|---|---|")
	for _, r := range rs {
		for _, b := range r.Broadcast {
			switch {
			case b.Mode == "-":
				fmt.Printf("| %s | - | not measured: %s | | | |\n", r.Impl, b.Note)
			case !b.Supported:
				fmt.Printf("| %s | %s | n/a: %s | | | |\n", r.Impl, b.Mode, b.Note)
			default:
				loop, cpu := "-", "-"
				if len(b.ElapsedMs) > 0 {
					loop = fmt.Sprintf("%.1f", b.MedianMs)
					cpu = fmt.Sprintf("%.2f [%.2f]", b.MedianCPUUs, b.MedianUser)
				}
				fmt.Printf("| %s | %s | %s | %.1f | %s | %v |\n", r.Impl, b.Mode, loop, b.MedianE2EMs, cpu, b.Delivered)
			}
		}
	}
}

func procRSS(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(rest)
			kb, _ := strconv.ParseInt(f[0], 10, 64)
			return kb * 1024
		}
	}
	return -1
}

// stealTicks is the machine-wide steal time (USER_HZ ticks) from /proc/stat:
// time this VM wanted a CPU but the hypervisor ran someone else.
func stealTicks() int64 {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line) // cpu user nice system idle iowait irq softirq steal ...
	if len(f) < 9 {
		return 0
	}
	n, _ := strconv.ParseInt(f[8], 10, 64)
	return n
}

func getJSON(ctx context.Context, url string, v any) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

func retry(ctx context.Context, d time.Duration, f func() error) error {
	deadline := time.Now().Add(d)
	for {
		err := f()
		if err == nil || time.Now().After(deadline) || ctx.Err() != nil {
			return err
		}
		sleepCtx(ctx, 100*time.Millisecond)
	}
}

func sleepCtx(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// kv parses "word k=v k=v" reply lines.
func kv(line string) map[string]int64 {
	m := map[string]int64{}
	for _, f := range strings.Fields(line) {
		if k, v, ok := strings.Cut(f, "="); ok {
			n, _ := strconv.ParseInt(v, 10, 64)
			m[k] = n
		}
	}
	return m
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

func getOK(ctx context.Context, url string) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	return nil
}

func procThreads(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "Threads:"); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(rest))
			return n
		}
	}
	return -1
}
