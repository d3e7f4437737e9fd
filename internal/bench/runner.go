package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Options are the settings shared by every scenario.
type Options struct {
	Target     Target
	Name       string   // label of the server under test, e.g. "herald"
	ServerPID  int      // 0: no server RSS/CPU
	Src        []string // source addresses to spread connections over
	Workers    int      // worker processes; 0 = one per PerWorker connections
	PerWorker  int      // connections per worker process (default 15000)
	Parallel   int      // concurrent connects per worker
	WorkerExe  string   // executable run as "exe bench worker"; default os.Executable()
	Settle     time.Duration
	Progress   io.Writer // live progress line; nil = none
	EventSize  int       // bytes of event data (default 100)
	Publishers int       // concurrent HTTP API requests
}

func (o *Options) defaults() {
	if o.PerWorker <= 0 {
		o.PerWorker = 15000
	}
	if o.Parallel <= 0 {
		o.Parallel = 64
	}
	if len(o.Src) == 0 {
		o.Src = []string{"127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5", "127.0.0.6", "127.0.0.7", "127.0.0.8"}
	}
	if o.EventSize <= 0 {
		o.EventSize = 100
	}
	if o.Publishers <= 0 {
		o.Publishers = 32
	}
	if o.Name == "" {
		o.Name = "server"
	}
}

// runner drives the worker processes of one scenario run.
type runner struct {
	opts    Options
	workers []*workerProcess
	events  chan reply
	total   int // connections requested so far
	start   time.Time
	tty     bool
	lastLen int
}

func newRunner(opts Options, conns int) (*runner, error) {
	opts.defaults()
	raiseNofile()
	n := opts.Workers
	if n <= 0 {
		n = max(1, (conns+opts.PerWorker-1)/opts.PerWorker)
	}
	exe := opts.WorkerExe
	if exe == "" {
		var err error
		if exe, err = os.Executable(); err != nil {
			return nil, err
		}
	}
	r := &runner{opts: opts, events: make(chan reply, 4096), start: time.Now()}
	if f, ok := opts.Progress.(*os.File); ok && isTerminal(f) {
		r.tty = true
	}
	for range n {
		p, err := startWorker(exe, r.events, os.Stderr)
		if err != nil {
			r.close()
			return nil, fmt.Errorf("bench: start worker: %w", err)
		}
		r.workers = append(r.workers, p)
	}
	return r, nil
}

func (r *runner) close() {
	var wg sync.WaitGroup
	for _, p := range r.workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			done := make(chan struct{})
			go func() {
				_, _ = p.call(command{Op: "quit"})
				close(done)
			}()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
			}
			p.in.Close()
			_ = p.wait()
		}()
	}
	wg.Wait()
	r.workers = nil
}

// all sends cmd to every worker and collects the replies.
func (r *runner) all(cmd command) ([]reply, error) {
	out := make([]reply, len(r.workers))
	errs := make([]error, len(r.workers))
	var wg sync.WaitGroup
	for i, p := range r.workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i], errs[i] = p.call(cmd)
		}()
	}
	wg.Wait()
	return out, errors.Join(errs...)
}

// connectResult summarises a connect phase.
type connectResult struct {
	Conns    int
	Failed   int
	Seconds  float64
	FirstErr string
}

// connect opens n more connections spread over the workers, each subscribing
// per spec (ChannelSpec.Count 0: no subscription).
func (r *runner) connect(n int, spec ChannelSpec, churnFrom int) (connectResult, error) {
	per := (n + len(r.workers) - 1) / len(r.workers)
	first := r.total
	var wg sync.WaitGroup
	reps := make([]reply, len(r.workers))
	errs := make([]error, len(r.workers))
	stop := make(chan struct{})
	go r.progressLoop(stop, func() string {
		reps, _ := r.all(command{Op: "stats"})
		c := 0
		for _, rp := range reps {
			c += rp.Conns
		}
		return fmt.Sprintf("connecting %d/%d", c, r.total+n)
	})
	for i, p := range r.workers {
		cnt := min(per, first+n-(r.total+i*per))
		if cnt <= 0 {
			continue
		}
		cmd := command{Op: "connect", Target: r.opts.Target, Src: r.opts.Src, First: first + i*per, Count: cnt,
			Channels: spec, ChurnFrom: churnFrom, Parallel: r.opts.Parallel, Timeout: 30 * time.Second}
		wg.Add(1)
		go func() {
			defer wg.Done()
			reps[i], errs[i] = p.call(cmd)
		}()
	}
	wg.Wait()
	close(stop)
	r.total += n
	res := connectResult{}
	for _, rp := range reps {
		res.Conns += rp.Conns
		res.Failed += rp.Failed
		res.Seconds = max(res.Seconds, rp.Seconds)
		if res.FirstErr == "" {
			res.FirstErr = rp.FirstError
		}
	}
	r.clearProgress()
	return res, errors.Join(errs...)
}

// totals is the sum of the workers' counters.
type totals struct {
	Conns, Dropped, Errors       int64
	Recv, Bytes, Sent            int64
	Joins, Leaves                int64
	FirstErr                     string
	Hist, Join, Member, ConnHist HistData
	PerChannel                   map[int]*chanJSON
}

func (r *runner) totals(full bool) (totals, error) {
	reps, err := r.all(command{Op: "stats", Full: full})
	var t totals
	if full {
		t.PerChannel = make(map[int]*chanJSON)
	}
	for _, rp := range reps {
		t.Conns += int64(rp.Conns)
		t.Dropped += rp.Dropped
		t.Errors += rp.Errors
		t.Recv += rp.Recv
		t.Bytes += rp.Bytes
		t.Sent += rp.Sent
		t.Joins += rp.Joins
		t.Leaves += rp.Leaves
		if t.FirstErr == "" {
			t.FirstErr = rp.FirstError
		}
		if full {
			t.Hist.Merge(rp.Hist)
			t.Join.Merge(rp.JoinHist)
			t.Member.Merge(rp.MemberHist)
			t.ConnHist.Merge(rp.ConnHist)
			for _, c := range rp.PerChannel {
				pc := t.PerChannel[c.I]
				if pc == nil {
					pc = &chanJSON{I: c.I}
					t.PerChannel[c.I] = pc
				}
				pc.Subs += c.Subs
				pc.Recv += c.Recv
				pc.Sent += c.Sent
				pc.Added += c.Added
				pc.Removed += c.Removed
				pc.Joins += c.Joins
				pc.Leaves += c.Leaves
			}
		}
	}
	return t, err
}

// cpuSnap is the CPU time of the server, of the tool and of the machine.
type cpuSnap struct {
	at            time.Time
	server, tool  time.Duration
	busy, machine time.Duration
}

func (r *runner) cpu() cpuSnap {
	s := cpuSnap{at: time.Now(), tool: selfCPU()}
	if r.opts.ServerPID > 0 {
		s.server, _ = ProcCPU(r.opts.ServerPID)
	}
	for _, p := range r.workers {
		c, _ := ProcCPU(p.pid)
		s.tool += c
	}
	s.busy, s.machine = machineCPU()
	return s
}

// CPU is the CPU use over a measured window.
type CPU struct {
	Seconds     float64 `json:"seconds"`                          // wall time of the window
	Server      float64 `json:"server_cpu_s"`                     // CPU seconds of the server
	Tool        float64 `json:"tool_cpu_s"`                       // CPU seconds of this tool and its workers
	Other       float64 `json:"other_cpu_s"`                      // CPU seconds of everything else on the machine
	ServerCores float64 `json:"server_cores"`                     // Server / Seconds
	ToolCores   float64 `json:"tool_cores"`                       // Tool / Seconds
	OtherCores  float64 `json:"other_cores"`                      // Other / Seconds
	PerDelivery float64 `json:"server_us_per_delivery,omitempty"` // server CPU µs per delivered message
	PerConn     float64 `json:"server_us_per_conn,omitempty"`     // connect: server CPU µs per connection
}

func cpuDelta(a, b cpuSnap, delivered int64) CPU {
	c := CPU{Seconds: b.at.Sub(a.at).Seconds(), Server: (b.server - a.server).Seconds(), Tool: (b.tool - a.tool).Seconds()}
	busy := (b.busy - a.busy).Seconds()
	c.Other = max(0, busy-c.Server-c.Tool)
	if c.Seconds > 0 {
		c.ServerCores, c.ToolCores, c.OtherCores = c.Server/c.Seconds, c.Tool/c.Seconds, c.Other/c.Seconds
	}
	if delivered > 0 {
		c.PerDelivery = c.Server * 1e6 / float64(delivered)
	}
	return c
}

func (r *runner) rss() int64 {
	if r.opts.ServerPID <= 0 {
		return 0
	}
	v, _ := ProcRSS(r.opts.ServerPID)
	return v
}

// progressLoop prints line() every second until stop is closed.
func (r *runner) progressLoop(stop <-chan struct{}, line func() string) {
	if r.opts.Progress == nil {
		return
	}
	t := time.NewTicker(time.Second)
	defer t.Stop()
	n := 0
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		n++
		if !r.tty && n%5 != 0 {
			continue
		}
		r.progress(line())
	}
}

func (r *runner) progress(s string) {
	if r.opts.Progress == nil {
		return
	}
	s = fmt.Sprintf("[%s %s] %5.0fs %s", r.opts.Name, "bench", time.Since(r.start).Seconds(), s)
	if r.tty {
		pad := ""
		if r.lastLen > len(s) {
			pad = strings.Repeat(" ", r.lastLen-len(s))
		}
		fmt.Fprintf(r.opts.Progress, "\r%s%s", s, pad)
		r.lastLen = len(s)
		return
	}
	fmt.Fprintln(r.opts.Progress, s)
}

func (r *runner) clearProgress() {
	if r.tty && r.lastLen > 0 {
		fmt.Fprintf(r.opts.Progress, "\r%s\r", strings.Repeat(" ", r.lastLen))
		r.lastLen = 0
	}
}

// waitRecv waits until the workers received want events, or nothing more
// arrives for idle, or ctx ends. It returns the total received.
func (r *runner) waitRecv(ctx context.Context, want int64, idle time.Duration) int64 {
	last, lastChange := int64(-1), time.Now()
	for {
		t, _ := r.totals(false)
		if t.Recv >= want {
			return t.Recv
		}
		if t.Recv != last {
			last, lastChange = t.Recv, time.Now()
		} else if time.Since(lastChange) > idle {
			return t.Recv
		}
		select {
		case <-ctx.Done():
			return t.Recv
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}
