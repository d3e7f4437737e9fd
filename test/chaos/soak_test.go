//go:build soak

package chaos

import (
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// soakConfig is churnConfig with presence rooms large enough.
const soakConfig = churnConfig + `    max_presence_members: 1000
`

// TestSoak runs half of TestChurn's load (2,500 churning connections, half
// the publish rate, plus presence members) on 2 edge nodes, 1 api node and
// 2 Redis shards for SOAK_DURATION (default 1h), sampling every herald
// process's RSS (/proc/<pid>/status) and goroutines (go_goroutines on its
// internal listener) every SOAK_INTERVAL (default 1m). Both must stay flat:
// the median of the last third of the samples within 10% (plus 8 MiB, or 20
// goroutines) of the median of the first third. Deliveries are checked as in
// TestChurn, continuously: at least 99.999%, and 100% exactly once on the
// history channels with recovery.
func TestSoak(t *testing.T) {
	reportBase = "soak-report"
	needFiles(t, 8000)
	duration, interval := time.Hour, time.Minute
	if s := os.Getenv("SOAK_DURATION"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			fatalf(t, "SOAK_DURATION: %v", err)
		}
		duration = d
	}
	if s := os.Getenv("SOAK_INTERVAL"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			fatalf(t, "SOAK_INTERVAL: %v", err)
		}
		interval = d
	}
	if duration < 6*interval {
		fatalf(t, "SOAK_DURATION %v is less than 6 samples of SOAK_INTERVAL %v", duration, interval)
	}
	o := churnOpts{
		slots: 2500, dense: 10, sparse: 500, sparsePer: 50, histN: 10, histEvery: 5,
		presenceEvery: 10, rooms: 5,
		ticks: 12, ramp: 5 * time.Second, minLife: 3 * time.Second, maxLife: 12 * time.Second,
	}
	f := startFleet(t, 2, 2, soakConfig)
	procs := append(append([]*node(nil), f.edges...), f.api)

	// Subscriptions are checked as they finish (a few seconds later, so
	// that the publisher has logged every event they had to receive), and
	// the log keeps only the recent events of the non-history channels.
	var (
		mu       sync.Mutex
		pending  []*subRec
		st       deliveryStats
		checked  int64
		checkEnd = make(chan struct{})
	)
	var r *churnRun
	r = newChurnRun(f, o, func(s []*subRec) {
		mu.Lock()
		pending = append(pending, s...)
		mu.Unlock()
	})
	checkOnce := func(all bool) {
		cutoff := time.Now().Add(-5 * time.Second).UnixNano()
		mu.Lock()
		var ready, rest []*subRec
		for _, s := range pending {
			if all || s.endAt < cutoff {
				ready = append(ready, s)
			} else {
				rest = append(rest, s)
			}
		}
		pending = rest
		r.log.mu.Lock()
		for _, s := range ready {
			checkSub(&st, r.names, r.log.events[s.ch], s)
			checked++
		}
		r.log.mu.Unlock()
		mu.Unlock()
		if !all {
			old := time.Now().Add(-o.maxLife - time.Minute).UnixNano()
			r.log.prune(old, r.isHist)
		}
	}
	go func() {
		tk := time.NewTicker(2 * time.Second)
		defer tk.Stop()
		for {
			select {
			case <-checkEnd:
				return
			case <-tk.C:
				checkOnce(false)
			}
		}
	}()

	t0 := time.Now()
	r.start(t0.Add(duration))

	type sample struct {
		at         time.Duration
		rss        []int64
		goroutines []float64
		conns      float64
	}
	var samples []sample
	next := t0.Add(interval)
	for next.Before(r.pubEnd) {
		time.Sleep(time.Until(next))
		next = next.Add(interval)
		s := sample{at: time.Since(t0).Round(time.Second)}
		for _, p := range procs {
			v, err := p.RSS()
			if err != nil {
				fatalf(t, "%s RSS: %v", p.Name, err)
			}
			m, err := p.Metrics()
			if err != nil {
				fatalf(t, "%s metrics: %v", p.Name, err)
			}
			s.rss = append(s.rss, v)
			s.goroutines = append(s.goroutines, m["go_goroutines"])
		}
		s.conns, _ = r.concurrent()
		samples = append(samples, s)
		parts := make([]string, len(procs))
		for i, p := range procs {
			parts[i] = fmt.Sprintf("%s %.1f MiB %0.f goroutines", p.Name, mib(s.rss[i]), s.goroutines[i])
		}
		mu.Lock()
		t.Logf("%v: %s; %.0f connections; %d subscriptions checked, %d missing", s.at, strings.Join(parts, ", "),
			s.conns, checked, st.missing)
		mu.Unlock()
	}
	if !r.wait(2 * time.Minute) {
		fatalf(t, "clients did not finish within 2 min of the end (a hang)")
	}
	close(checkEnd)
	checkOnce(true)
	hs := checkHistory(r.names, r.log, r.histUsers)

	// Flatness: first third against last third of the samples.
	third := len(samples) / 3
	figs := map[string]any{
		"duration":         duration.String(),
		"interval":         interval.String(),
		"samples":          len(samples),
		"connection_slots": o.slots,
		"connections_made": r.sessions.Load(),
	}
	for i, p := range procs {
		var rssFirst, rssLast, gFirst, gLast []float64
		var series []string
		for k, s := range samples {
			if k < third {
				rssFirst = append(rssFirst, float64(s.rss[i]))
				gFirst = append(gFirst, s.goroutines[i])
			}
			if k >= len(samples)-third {
				rssLast = append(rssLast, float64(s.rss[i]))
				gLast = append(gLast, s.goroutines[i])
			}
			series = append(series, fmt.Sprintf("%.0f", mib(s.rss[i])))
		}
		rf, rl, gf, gl := median(rssFirst), median(rssLast), median(gFirst), median(gLast)
		if rl > rf*1.10+8<<20 {
			errorf(t, "%s RSS grew: median %.1f MiB in the first third, %.1f MiB in the last", p.Name, rf/(1<<20), rl/(1<<20))
		}
		if gl > gf*1.10+20 {
			errorf(t, "%s goroutines grew: median %.0f in the first third, %.0f in the last", p.Name, gf, gl)
		}
		figs[p.Name+"_rss_mib_first_last"] = fmt.Sprintf("%.1f → %.1f", rf/(1<<20), rl/(1<<20))
		figs[p.Name+"_goroutines_first_last"] = fmt.Sprintf("%.0f → %.0f", gf, gl)
		figs[p.Name+"_rss_mib_series"] = strings.Join(series, " ")
	}
	ratio := float64(st.delivered) / float64(max(st.expected, 1))
	for _, s := range st.missed {
		t.Logf("missed: %s", s)
	}
	for _, s := range hs.missed {
		t.Logf("history: %s", s)
	}
	for _, s := range r.errSamples {
		t.Logf("error: %s", s)
	}
	if ratio < 0.99999 || st.duplicates > 0 {
		errorf(t, "delivered %d of %d expected events (%.6f%%), %d duplicates", st.delivered, st.expected, 100*ratio, st.duplicates)
	}
	if hs.delivered != hs.expected || hs.dups > 0 || hs.failedRecoveries > 0 {
		errorf(t, "history: %d of %d delivered, %d duplicates, %d failed recoveries", hs.delivered, hs.expected, hs.dups, hs.failedRecoveries)
	}
	if n := r.cut.Load(); n > 0 {
		errorf(t, "%d connections were dropped by the server", n)
	}
	var conns []float64
	for _, s := range samples {
		conns = append(conns, s.conns)
	}
	sort.Float64s(conns)
	figs["connections_concurrent_median"] = median(conns)
	figs["deliveries_expected"] = st.expected
	figs["delivery_ratio"] = fmt.Sprintf("%.6f", ratio)
	figs["duplicates"] = st.duplicates
	figs["history_expected"] = hs.expected
	figs["history_delivery_ratio"] = fmt.Sprintf("%.6f", float64(hs.delivered)/float64(max(hs.expected, 1)))
	figs["history_recoveries"] = r.recoveries.Load()
	figs["dropped_by_server"] = r.cut.Load()
	figs["subscribe_errors"] = r.subErrs.Load()
	figs["publish_failures"] = r.pubFail.Load()
	record(t, figs, "Half of TestChurn's load; RSS series in MiB, one value per sample, for each process.")
}
