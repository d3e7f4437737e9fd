package bench

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"time"
)

// Params are a scenario's settings; zero values take the scenario's default.
type Params struct {
	Conns      int           // connections (idle: the last step)
	Channels   int           // channels the connections are spread over (0: scenario default)
	Prefix     string        // channel name prefix
	Steps      []int         // idle: connection counts at which RSS is read
	Rates      []float64     // throughput: events published per second, one step each
	Batch      int           // throughput: events per API request (batch_events when > 1)
	Duration   time.Duration // throughput, client-events, presence: how long each step runs
	Broadcasts int           // fanout: broadcasts
	Interval   time.Duration // fanout: pause between broadcasts
	Senders    int           // client-events: senders per channel
	Rate       float64       // client-events: events/s per sender; presence: cycles/s per churner
	Observers  int           // presence: members that stay, per channel
	Churners   int           // presence: members that join and leave, per channel
	P99Limit   time.Duration // throughput: a step is sustained only with p99 at most this
	StopOnFail bool          // throughput: stop at the first step not sustained
}

// Scenarios lists the scenario names.
var Scenarios = []string{"idle", "fanout", "throughput", "connect", "presence", "client-events"}

// Run runs one scenario.
func Run(ctx context.Context, scenario string, opts Options, p Params) (*Result, error) {
	opts.defaults()
	res := &Result{Scenario: scenario, Target: opts.Name, Addr: opts.Target.Addr, Started: time.Now().UTC(),
		Machine: machineInfo(), Params: map[string]any{}}
	var err error
	switch scenario {
	case "idle":
		err = runIdle(ctx, opts, p, res)
	case "fanout":
		err = runFanout(ctx, opts, p, res)
	case "throughput":
		err = runThroughput(ctx, opts, p, res)
	case "connect":
		err = runConnect(ctx, opts, p, res)
	case "presence":
		err = runPresence(ctx, opts, p, res)
	case "client-events":
		err = runClientEvents(ctx, opts, p, res)
	default:
		return nil, fmt.Errorf("bench: unknown scenario %q", scenario)
	}
	if err != nil {
		res.fail("%v", err)
	}
	res.OK = len(res.Errors) == 0
	return res, nil
}

func or[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// settle waits for the server to finish with a connect burst.
func settle(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

func (res *Result) noteConnect(c connectResult, want int) error {
	res.Conns += c.Conns - res.Conns
	res.ConnectFailed += c.Failed
	res.ConnectSeconds += c.Seconds
	if c.Failed > 0 {
		res.fail("%d of %d connections failed; first error: %s", c.Failed, want, c.FirstErr)
	}
	if c.Conns == 0 {
		return fmt.Errorf("no connection could be opened")
	}
	return nil
}

func runIdle(ctx context.Context, opts Options, p Params, res *Result) error {
	steps := p.Steps
	if len(steps) == 0 {
		steps = []int{or(p.Conns, 1000)}
	}
	for i := 1; i < len(steps); i++ {
		if steps[i] <= steps[i-1] {
			return fmt.Errorf("idle steps must increase: %v", steps)
		}
	}
	last := steps[len(steps)-1]
	channels := p.Channels
	if channels <= 0 {
		channels = last // a channel of its own for every connection
	}
	spec := ChannelSpec{Prefix: or(p.Prefix, "idle-"), Count: channels}
	res.Params = map[string]any{"steps": steps, "channels": channels, "prefix": spec.Prefix, "settle": or(opts.Settle, 5*time.Second).String()}
	r, err := newRunner(opts, last)
	if err != nil {
		return err
	}
	defer r.close()
	res.Workers = len(r.workers)
	prev := 0
	for _, n := range steps {
		c, err := r.connect(n-prev, spec, 0)
		if err != nil {
			return err
		}
		if err := res.noteConnect(c, n-prev); err != nil {
			return err
		}
		res.Conns = n - res.ConnectFailed
		prev = n
		settle(ctx, or(opts.Settle, 5*time.Second))
		st := IdleStep{Conns: int(totalConns(r)), RSS: r.rss(), Threads: ProcThreads(opts.ServerPID)}
		res.Idle = append(res.Idle, st)
		r.progress(fmt.Sprintf("idle: %d conns, server RSS %.1f MiB", st.Conns, float64(st.RSS)/(1<<20)))
	}
	r.clearProgress()
	if len(res.Idle) >= 2 {
		a, b := res.Idle[0], res.Idle[len(res.Idle)-1]
		if b.Conns > a.Conns {
			res.RSSPerConn = float64(b.RSS-a.RSS) / float64(b.Conns-a.Conns)
		}
	} else if s := res.Idle[0]; s.Conns > 0 {
		res.RSSPerConn = float64(s.RSS) / float64(s.Conns)
	}
	res.ServerRSS = res.Idle[len(res.Idle)-1].RSS
	t, _ := r.totals(false)
	if t.Dropped > 0 {
		res.fail("%d connections dropped while idle: %s", t.Dropped, t.FirstErr)
	}
	return nil
}

func totalConns(r *runner) int64 {
	t, _ := r.totals(false)
	return t.Conns
}

// channelSubs returns the subscribers of each channel index.
func channelSubs(t totals) map[int]int64 {
	m := make(map[int]int64, len(t.PerChannel))
	for i, c := range t.PerChannel {
		m[i] = c.Subs
	}
	return m
}

func runThroughput(ctx context.Context, opts Options, p Params, res *Result) error {
	n := or(p.Conns, 5000)
	channels := or(p.Channels, 50)
	batch := max(1, p.Batch)
	rates := p.Rates
	if len(rates) == 0 {
		rates = []float64{300}
	}
	d := or(p.Duration, 20*time.Second)
	limit := or(p.P99Limit, 100*time.Millisecond)
	spec := ChannelSpec{Prefix: or(p.Prefix, "bench-"), Count: channels}
	res.Params = map[string]any{"conns": n, "channels": channels, "rates": rates, "batch": batch, "duration": d.String(),
		"event_bytes": opts.EventSize, "p99_limit": limit.String(), "prefix": spec.Prefix}
	r, err := newRunner(opts, n)
	if err != nil {
		return err
	}
	defer r.close()
	res.Workers = len(r.workers)
	c, err := r.connect(n, spec, 0)
	if err != nil {
		return err
	}
	if err := res.noteConnect(c, n); err != nil {
		return err
	}
	res.ConnectPerSec = float64(c.Conns) / max(c.Seconds, 1e-9)
	settle(ctx, or(opts.Settle, 3*time.Second))
	t0, _ := r.totals(true)
	subs := channelSubs(t0)
	pub := newPublisher(opts.Target, opts.Publishers)
	defer pub.close()

	for _, rate := range rates {
		if ctx.Err() != nil {
			break
		}
		step := runRateStep(ctx, r, pub, spec, subs, rate, batch, d, opts.EventSize, limit)
		if !step.Sustained && p.StopOnFail && step.Lost == 0 && len(rates) > 1 {
			// One noisy step (the machine is shared) must not end the
			// search: a rate fails only when it fails twice in a row.
			res.Rates = append(res.Rates, step)
			step = runRateStep(ctx, r, pub, spec, subs, rate, batch, d, opts.EventSize, limit)
		}
		res.Rates = append(res.Rates, step)
		if step.Sustained {
			res.MaxSustained = max(res.MaxSustained, step.DeliveredPerSec)
		} else if p.StopOnFail {
			break
		}
	}
	r.clearProgress()
	// The headline numbers are the first step's.
	s := res.Rates[0]
	res.Published, res.Expected, res.Delivered, res.Lost = s.Published, s.Expected, s.Delivered, s.Lost
	res.DeliveredPerSec = s.DeliveredPerSec
	lat := s.Latency
	res.Latency = &lat
	cpu := s.CPU
	res.CPU = &cpu
	res.ServerRSS = r.rss()
	for _, s := range res.Rates {
		if s.Lost != 0 && len(rates) == 1 {
			res.fail("%d of %d deliveries lost at %.0f publishes/s", s.Lost, s.Expected, s.Rate)
		}
		if s.PublishErrors > 0 && len(rates) == 1 {
			res.fail("%d publish errors: %s", s.PublishErrors, pub.firstError())
		}
	}
	t, _ := r.totals(false)
	if t.Dropped > 0 {
		res.fail("%d connections dropped: %s", t.Dropped, t.FirstErr)
	}
	return nil
}

func runRateStep(ctx context.Context, r *runner, pub *publisher, spec ChannelSpec, subs map[int]int64,
	rate float64, batch int, d time.Duration, size int, limit time.Duration) RateStep {
	_, _ = r.all(command{Op: "reset"})
	pub.channelCounts()
	pub.published.Store(0)
	pub.requests.Store(0)
	pub.lagged.Store(0)
	errs0 := pub.errs.Load()
	var perDelivery float64
	for _, s := range subs {
		perDelivery += float64(s)
	}
	perDelivery /= float64(max(1, spec.Count)) // mean subscribers per channel
	step := RateStep{Rate: rate, Batch: batch, TargetDeliveries: rate * perDelivery}

	stop := make(chan struct{})
	go r.progressLoop(stop, func() string {
		t, _ := r.totals(false)
		return fmt.Sprintf("throughput %.0f ev/s (→%.0f deliveries/s): published %d, delivered %d", rate, step.TargetDeliveries, pub.published.Load(), t.Recv)
	})
	c0 := r.cpu()
	reqRate := rate / float64(batch)
	pub.paced(ctx, reqRate, d, 64, func(seq int64) {
		ch := int(seq % int64(spec.Count))
		evs := make([]apiEvent, batch)
		now := time.Now()
		for k := range evs {
			evs[k] = apiEvent{Name: "bench", Channel: spec.Prefix + strconv.Itoa(ch), Data: benchData(now, seq*int64(batch)+int64(k), size)}
		}
		_ = pub.trigger(ctx, ch, evs)
	})
	counts := pub.channelCounts()
	var expected int64
	for ch, n := range counts {
		expected += n * subs[ch]
	}
	wctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	r.waitRecv(wctx, expected, 2*time.Second)
	cancel()
	c1 := r.cpu()
	close(stop)
	t, _ := r.totals(true)
	step.Published = pub.published.Load()
	step.Requests = pub.requests.Load()
	step.PublishErrors = pub.errs.Load() - errs0
	step.Lagged = pub.lagged.Load()
	step.Expected = expected
	step.Delivered = t.Recv
	step.Lost = expected - t.Recv
	step.DeliveredPerSec = float64(t.Recv) / d.Seconds()
	step.Latency = t.Hist.Summary()
	step.CPU = cpuDelta(c0, c1, t.Recv)
	switch {
	case step.Lost != 0:
		step.Why = fmt.Sprintf("lost %d", step.Lost)
	case step.PublishErrors > 0:
		step.Why = fmt.Sprintf("%d publish errors: %s", step.PublishErrors, pub.firstError())
	case step.Lagged > 0:
		step.Why = fmt.Sprintf("publisher lagged %d", step.Lagged)
	case float64(step.Published) < 0.97*rate*d.Seconds():
		step.Why = fmt.Sprintf("published only %d", step.Published)
	case step.Latency.P99 > float64(limit.Microseconds())/1000:
		step.Why = fmt.Sprintf("p99 %.1f ms", step.Latency.P99)
	default:
		step.Sustained = true
	}
	r.clearProgress()
	r.progress(fmt.Sprintf("throughput %.0f ev/s: delivered %.0f/s, p99 %.2f ms, lost %d, server %.2f µs/msg %s",
		rate, step.DeliveredPerSec, step.Latency.P99, step.Lost, step.CPU.PerDelivery, step.Why))
	if r.tty {
		fmt.Fprintln(r.opts.Progress)
		r.lastLen = 0
	}
	return step
}

func runFanout(ctx context.Context, opts Options, p Params, res *Result) error {
	n := or(p.Conns, 1000)
	k := or(p.Broadcasts, 10)
	interval := or(p.Interval, 500*time.Millisecond)
	spec := ChannelSpec{Prefix: or(p.Prefix, "fanout-"), Count: 1}
	res.Params = map[string]any{"conns": n, "broadcasts": k, "interval": interval.String(), "event_bytes": opts.EventSize, "prefix": spec.Prefix}
	r, err := newRunner(opts, n)
	if err != nil {
		return err
	}
	defer r.close()
	res.Workers = len(r.workers)
	c, err := r.connect(n, spec, 0)
	if err != nil {
		return err
	}
	if err := res.noteConnect(c, n); err != nil {
		return err
	}
	res.ConnectPerSec = float64(c.Conns) / max(c.Seconds, 1e-9)
	settle(ctx, or(opts.Settle, 3*time.Second))
	if _, err := r.all(command{Op: "seqs", Seqs: k}); err != nil {
		return err
	}
	_, _ = r.all(command{Op: "reset"})
	subs := int64(c.Conns)
	pub := newPublisher(opts.Target, 1)
	defer pub.close()
	// Warm the API connection so the first broadcast does not pay for a dial.
	_ = pub.trigger(ctx, -1, []apiEvent{{Name: "warmup", Channel: "fanout-warmup", Data: "x"}})
	c0 := r.cpu()
	var toLast, firstLast, toFirst []float64
	for s := range int64(k) {
		if ctx.Err() != nil {
			break
		}
		t0 := time.Now()
		err := pub.trigger(ctx, 0, []apiEvent{{Name: "bench", Channel: spec.Prefix + "0", Data: benchData(t0, s, opts.EventSize)}})
		if err != nil {
			res.fail("broadcast %d: %v", s, err)
			continue
		}
		b := Broadcast{Seq: s}
		var first, last int64
		deadline := time.After(15 * time.Second)
	wait:
		for b.Received < subs {
			select {
			case ev := <-r.events:
				if ev.Event != "seq" || ev.Seq != s {
					continue
				}
				b.Received += ev.Recv
				if first == 0 || ev.First < first {
					first = ev.First
				}
				last = max(last, ev.Last)
			case <-deadline:
				break wait
			}
		}
		if b.Received < subs {
			res.fail("broadcast %d reached %d of %d subscribers within 15 s", s, b.Received, subs)
		}
		if first > 0 {
			b.ToFirstMs = float64(first-t0.UnixNano()) / 1e6
			b.ToLastMs = float64(last-t0.UnixNano()) / 1e6
			b.FirstToLastMs = float64(last-first) / 1e6
		}
		res.Broadcasts = append(res.Broadcasts, b)
		toLast = append(toLast, b.ToLastMs)
		firstLast = append(firstLast, b.FirstToLastMs)
		toFirst = append(toFirst, b.ToFirstMs)
		r.progress(fmt.Sprintf("fanout %d/%d: publish→last %.1f ms", s+1, k, b.ToLastMs))
		if s < int64(k)-1 {
			settle(ctx, interval)
		}
	}
	// A worker reports a broadcast complete from its frame handler, a moment
	// before it adds the read's frames to the connection's count.
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	r.waitRecv(wctx, int64(len(res.Broadcasts))*subs, time.Second)
	cancel()
	t, _ := r.totals(true)
	c1 := r.cpu()
	r.clearProgress()
	res.Published = int64(len(res.Broadcasts))
	res.Expected = res.Published * subs
	res.Delivered = t.Recv
	res.Lost = res.Expected - t.Recv
	lat := t.Hist.Summary()
	res.Latency = &lat
	cpu := cpuDelta(c0, c1, t.Recv)
	res.CPU = &cpu
	res.ServerRSS = r.rss()
	if len(toLast) > 0 {
		res.Fanout = &FanoutSummary{ToLastMedianMs: median(toLast), ToLastMinMs: slices.Min(toLast), ToLastMaxMs: slices.Max(toLast),
			FirstToLastMedianMs: median(firstLast), ToFirstMedianMs: median(toFirst)}
	}
	if res.Lost != 0 {
		res.fail("%d of %d deliveries lost", res.Lost, res.Expected)
	}
	return nil
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func runConnect(ctx context.Context, opts Options, p Params, res *Result) error {
	n := or(p.Conns, 1000)
	channels := p.Channels
	if channels <= 0 {
		channels = n
	}
	spec := ChannelSpec{Prefix: or(p.Prefix, "connect-"), Count: channels}
	res.Params = map[string]any{"conns": n, "channels": channels, "parallel": opts.Parallel, "prefix": spec.Prefix}
	r, err := newRunner(opts, n)
	if err != nil {
		return err
	}
	defer r.close()
	res.Workers = len(r.workers)
	rss0 := r.rss()
	c0 := r.cpu()
	c, err := r.connect(n, spec, 0)
	if err != nil {
		return err
	}
	c1 := r.cpu()
	if err := res.noteConnect(c, n); err != nil {
		return err
	}
	res.Conns = c.Conns
	res.ConnectPerSec = float64(c.Conns) / max(c.Seconds, 1e-9)
	cpu := cpuDelta(c0, c1, 0)
	if c.Conns > 0 {
		cpu.PerConn = cpu.Server * 1e6 / float64(c.Conns)
	}
	res.CPU = &cpu
	t, _ := r.totals(true)
	l := t.ConnHist.Summary()
	res.ConnectLatency = &l
	res.ServerRSS = r.rss()
	res.Params["rss_before_bytes"] = rss0
	return nil
}

func runClientEvents(ctx context.Context, opts Options, p Params, res *Result) error {
	n := or(p.Conns, 1000)
	channels := or(p.Channels, 100)
	senders := or(p.Senders, 1)
	rate := or(p.Rate, 10.0)
	d := or(p.Duration, 10*time.Second)
	spec := ChannelSpec{Prefix: or(p.Prefix, "private-bench-"), Count: channels}
	res.Params = map[string]any{"conns": n, "channels": channels, "senders_per_channel": senders, "rate_per_sender": rate,
		"duration": d.String(), "event_bytes": opts.EventSize, "prefix": spec.Prefix}
	r, err := newRunner(opts, n)
	if err != nil {
		return err
	}
	defer r.close()
	res.Workers = len(r.workers)
	c, err := r.connect(n, spec, 0)
	if err != nil {
		return err
	}
	if err := res.noteConnect(c, n); err != nil {
		return err
	}
	res.ConnectPerSec = float64(c.Conns) / max(c.Seconds, 1e-9)
	settle(ctx, or(opts.Settle, 3*time.Second))
	t0, _ := r.totals(true)
	subs := channelSubs(t0)
	_, _ = r.all(command{Op: "reset"})
	stop := make(chan struct{})
	go r.progressLoop(stop, func() string {
		t, _ := r.totals(false)
		return fmt.Sprintf("client events: sent %d, delivered %d", t.Sent, t.Recv)
	})
	c0 := r.cpu()
	if _, err := r.all(command{Op: "client-events", Senders: senders, Rate: rate, Duration: d, Size: opts.EventSize}); err != nil {
		close(stop)
		return err
	}
	_, _ = r.all(command{Op: "wait"})
	// Every event reaches the channel's other subscribers.
	expectedOf := func(t totals) int64 {
		var e int64
		for i, pc := range t.PerChannel {
			e += pc.Sent * max(0, subs[i]-1)
		}
		return e
	}
	t1, _ := r.totals(true)
	expected := expectedOf(t1)
	wctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	r.waitRecv(wctx, expected, 2*time.Second)
	cancel()
	c1 := r.cpu()
	close(stop)
	r.clearProgress()
	t, _ := r.totals(true)
	res.Published = t.Sent
	res.Expected = expected
	res.Delivered = t.Recv
	res.Lost = expected - t.Recv
	res.DeliveredPerSec = float64(t.Recv) / d.Seconds()
	lat := t.Hist.Summary()
	res.Latency = &lat
	cpu := cpuDelta(c0, c1, t.Recv)
	res.CPU = &cpu
	res.ServerRSS = r.rss()
	if res.Lost != 0 {
		res.fail("%d of %d client-event deliveries lost", res.Lost, res.Expected)
	}
	if t.Errors > 0 {
		res.fail("%d errors: %s", t.Errors, t.FirstErr)
	}
	return nil
}

func runPresence(ctx context.Context, opts Options, p Params, res *Result) error {
	channels := or(p.Channels, 50)
	obs := or(p.Observers, 20)
	churners := or(p.Churners, 5)
	rate := p.Rate
	if rate == 0 {
		rate = 2
	}
	d := or(p.Duration, 10*time.Second)
	n := channels * (obs + churners)
	spec := ChannelSpec{Prefix: or(p.Prefix, "presence-bench-"), Count: channels}
	res.Params = map[string]any{"channels": channels, "observers_per_channel": obs, "churners_per_channel": churners,
		"cycles_per_s_per_churner": rate, "duration": d.String(), "prefix": spec.Prefix}
	r, err := newRunner(opts, n)
	if err != nil {
		return err
	}
	defer r.close()
	res.Workers = len(r.workers)
	c, err := r.connect(n, spec, channels*obs)
	if err != nil {
		return err
	}
	if err := res.noteConnect(c, n); err != nil {
		return err
	}
	res.ConnectPerSec = float64(c.Conns) / max(c.Seconds, 1e-9)
	settle(ctx, or(opts.Settle, 3*time.Second))
	_, _ = r.all(command{Op: "reset"})
	t0, _ := r.totals(true)
	subs := channelSubs(t0)
	stop := make(chan struct{})
	go r.progressLoop(stop, func() string {
		t, _ := r.totals(false)
		return fmt.Sprintf("presence churn: joins %d, leaves %d", t.Joins, t.Leaves)
	})
	c0 := r.cpu()
	if _, err := r.all(command{Op: "churn", Rate: rate, Duration: d}); err != nil {
		close(stop)
		return err
	}
	_, _ = r.all(command{Op: "wait"})
	elapsed := time.Since(c0.at)
	// Wait for the member events to settle.
	var t totals
	var lastSum int64 = -1
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); {
		t, _ = r.totals(true)
		var sum, want int64
		for i, pc := range t.PerChannel {
			sum += pc.Added + pc.Removed
			want += (pc.Joins + pc.Leaves) * subs[i]
		}
		if sum >= want || sum == lastSum {
			if sum >= want {
				break
			}
			time.Sleep(time.Second)
			t2, _ := r.totals(true)
			var sum2 int64
			for _, pc := range t2.PerChannel {
				sum2 += pc.Added + pc.Removed
			}
			t = t2
			if sum2 == sum {
				break
			}
		}
		lastSum = sum
		time.Sleep(50 * time.Millisecond)
	}
	c1 := r.cpu()
	close(stop)
	r.clearProgress()
	pr := &PresenceResult{Channels: channels, Observers: obs, Churners: churners, Joins: t.Joins, Leaves: t.Leaves,
		JoinsPerSec: float64(t.Joins) / elapsed.Seconds(), JoinLatency: t.Join.Summary(), MemberLatency: t.Member.Summary()}
	for i, pc := range t.PerChannel {
		pr.AddedExpected += pc.Joins * subs[i]
		pr.RemovedExpected += pc.Leaves * subs[i]
		pr.AddedReceived += pc.Added
		pr.RemovedReceived += pc.Removed
	}
	res.Presence = pr
	res.Expected = pr.AddedExpected + pr.RemovedExpected
	res.Delivered = pr.AddedReceived + pr.RemovedReceived
	res.Lost = res.Expected - res.Delivered
	cpu := cpuDelta(c0, c1, 0)
	res.CPU = &cpu
	res.ServerRSS = r.rss()
	if res.Lost != 0 {
		res.fail("member events: expected %d, received %d", res.Expected, res.Delivered)
	}
	if t.Errors > 0 {
		res.fail("%d errors: %s", t.Errors, t.FirstErr)
	}
	if t.Joins == 0 {
		res.fail("no presence joins completed")
	}
	return nil
}
