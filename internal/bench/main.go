// Package bench is `herald bench`: a load tool that speaks the Pusher
// protocol to any Pusher-compatible server (WebSocket connections, signed HTTP
// API publishes, private and presence auth, client events) and measures
// memory per connection, CPU per delivered message, throughput, latency and
// loss; and `herald bench raw`, the reference server it compares against.
// Connections are held by worker processes (the binary re-executed as
// "bench worker"), spread over 127.0.0.x source addresses.
package bench

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
)

const usage = `Usage: herald bench <scenario> [flags]   drive a Pusher-compatible server
       herald bench raw [--addr A]          run the raw reference server
       herald bench suite [flags]           run the whole comparison (see BENCHMARKS.md)
       herald bench report [--out DIR] SUMMARY.json...   merge suite results: summary.md, metrics.json

Scenarios:
  idle           connect and subscribe N (--steps 4000,19000), server RSS per connection
  fanout         N subscribers on one channel, --broadcasts K: publish→first/last delivery
  throughput     N subscribers over --channels C, --rate R[,R2..] events/s through the API:
                 delivered/s, publish→deliver p50/p90/p99/max, loss, server CPU per message
  connect        connections (and subscriptions) per second
  presence       observers and churners on presence channels: join/leave churn
  client-events  private channels, --senders per channel sending --rate events/s each

Common flags (see 'herald bench <scenario> -h'):
  --addr 127.0.0.1:6001 --app-id app-id --key app-key --secret app-secret
  --server-pid PID (RSS and CPU of the server) --json FILE --name LABEL
`

// Main runs `herald bench` with args (after "bench").
func Main(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "worker":
		return WorkerMain(os.Stdin, stdout)
	case "raw":
		return rawMain(args[1:], stderr)
	case "suite":
		return suiteMain(args[1:], stdout, stderr)
	case "report":
		return reportMain(args[1:], stdout, stderr)
	case "-h", "--help", "help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	scenario := args[0]
	known := false
	for _, s := range Scenarios {
		known = known || s == scenario
	}
	if !known {
		fmt.Fprintf(stderr, "herald bench: unknown scenario %q\n\n%s", scenario, usage)
		return 2
	}
	fs := flag.NewFlagSet("bench "+scenario, flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o Options
	var p Params
	var jsonPath, src, steps, rates string
	fs.StringVar(&o.Target.Addr, "addr", "127.0.0.1:6001", "server host:port (WebSocket and HTTP API)")
	fs.StringVar(&o.Target.AppID, "app-id", "app-id", "app id")
	fs.StringVar(&o.Target.Key, "key", "app-key", "app key")
	fs.StringVar(&o.Target.Secret, "secret", "app-secret", "app secret (signs API calls and private/presence subscriptions)")
	fs.IntVar(&o.ServerPID, "server-pid", 0, "pid of the server: its RSS and CPU time are read from /proc")
	fs.StringVar(&o.Name, "name", "server", "label of the server in the report")
	fs.StringVar(&jsonPath, "json", "", "write the result as JSON to this file")
	fs.StringVar(&src, "src", "127.0.0.1-8", "source addresses: a list (a,b,c) or a range of the last octet (127.0.0.1-8)")
	fs.IntVar(&o.Workers, "workers", 0, "worker processes (default: one per --per-worker connections)")
	fs.IntVar(&o.PerWorker, "per-worker", 15000, "connections per worker process (each has at most RLIMIT_NOFILE files)")
	fs.IntVar(&o.Parallel, "parallel", 64, "concurrent connection attempts per worker")
	fs.DurationVar(&o.Settle, "settle", 0, "pause after connecting before measuring (idle: 5s, others 3s)")
	fs.IntVar(&o.EventSize, "size", 100, "bytes of event data")
	fs.IntVar(&p.Conns, "conns", 0, "connections")
	fs.IntVar(&p.Channels, "channels", 0, "channels the connections are spread over")
	fs.StringVar(&p.Prefix, "prefix", "", "channel name prefix (private-… and presence-… are signed)")
	fs.StringVar(&steps, "steps", "", "idle: connection counts to read RSS at, e.g. 4000,19000")
	fs.StringVar(&rates, "rate", "", "throughput: events/s, or a list of steps (300,600,…); client-events: events/s per sender; presence: cycles/s per churner")
	fs.IntVar(&p.Batch, "batch", 1, "throughput: events per API request (batch_events when > 1)")
	fs.DurationVar(&p.Duration, "duration", 0, "throughput/client-events/presence: how long each step runs")
	fs.IntVar(&p.Broadcasts, "broadcasts", 0, "fanout: broadcasts")
	fs.DurationVar(&p.Interval, "interval", 0, "fanout: pause between broadcasts")
	fs.IntVar(&p.Senders, "senders", 0, "client-events: senders per channel")
	fs.IntVar(&p.Observers, "observers", 0, "presence: members per channel that stay")
	fs.IntVar(&p.Churners, "churners", 0, "presence: members per channel that join and leave")
	fs.DurationVar(&p.P99Limit, "p99-limit", 100*time.Millisecond, "throughput: a rate is sustained only if every message arrived and p99 is at most this")
	fs.BoolVar(&p.StopOnFail, "stop-on-fail", true, "throughput: stop at the first rate that is not sustained")
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "herald bench: unexpected arguments %q\n", fs.Args())
		return 2
	}
	var err error
	if o.Src, err = parseSrc(src); err != nil {
		fmt.Fprintf(stderr, "herald bench: %v\n", err)
		return 2
	}
	if p.Steps, err = parseInts(steps); err != nil {
		fmt.Fprintf(stderr, "herald bench: --steps: %v\n", err)
		return 2
	}
	if fl, err := parseFloats(rates); err != nil {
		fmt.Fprintf(stderr, "herald bench: --rate: %v\n", err)
		return 2
	} else if scenario == "throughput" {
		p.Rates = fl
	} else if len(fl) > 0 {
		p.Rate = fl[0]
	}
	o.Progress = stderr
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	res, err := Run(ctx, scenario, o, p)
	if err != nil {
		fmt.Fprintf(stderr, "herald bench: %v\n", err)
		return 1
	}
	if jsonPath != "" {
		if err := res.WriteJSON(jsonPath); err != nil {
			fmt.Fprintf(stderr, "herald bench: %v\n", err)
			return 1
		}
	}
	res.Markdown(stdout)
	if !res.OK {
		return 1
	}
	return 0
}

func parseSrc(s string) ([]string, error) {
	if s == "" {
		return nil, nil
	}
	if base, rng, ok := strings.Cut(s, "-"); ok && !strings.Contains(s, ",") {
		i := strings.LastIndexByte(base, '.')
		if i < 0 {
			return nil, fmt.Errorf("bad --src %q", s)
		}
		lo, err1 := strconv.Atoi(base[i+1:])
		hi, err2 := strconv.Atoi(rng)
		if err1 != nil || err2 != nil || lo > hi || hi > 254 {
			return nil, fmt.Errorf("bad --src range %q", s)
		}
		var out []string
		for o := lo; o <= hi; o++ {
			out = append(out, base[:i+1]+strconv.Itoa(o))
		}
		return out, nil
	}
	return strings.Split(s, ","), nil
}

func parseInts(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		v, err := strconv.Atoi(f)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, nil
}

func parseFloats(s string) ([]float64, error) {
	var out []float64
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		v, err := strconv.ParseFloat(f, 64)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, nil
}

func rawMain(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("bench raw", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "127.0.0.1:6001", "listen address")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	raiseNofile()
	s := NewRawServer()
	if err := s.Listen(*addr); err != nil {
		fmt.Fprintf(stderr, "herald bench raw: %v\n", err)
		return 1
	}
	fmt.Fprintf(stderr, "raw reference server listening on %s\n", s.Addr())
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s.Shutdown(sctx)
	}()
	if err := s.Serve(); err != nil {
		fmt.Fprintf(stderr, "herald bench raw: %v\n", err)
		return 1
	}
	return 0
}
