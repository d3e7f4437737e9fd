//go:build chaos

package chaos

import (
	"fmt"
	"sync"
	"testing"
	"time"
)

// TestChurn keeps 5,000 connections (2 edge nodes, Redis with 2 shards)
// connecting and disconnecting while events flow to dense channels (about
// 500 subscribers each), to sparse ones (a few subscribers, so nodes keep
// subscribing to and releasing their Redis channels) and to history
// channels. Every event published after a connection's subscription
// succeeded and answered before the connection started to leave must
// arrive, once: at least 99.999% delivered, no duplicates, no connection
// dropped by the server. A fifth of the slots are history users, which
// resubscribe with the last serial they saw each time they reconnect: they
// must receive 100% of their channel's events from their first subscription
// to their last leave, exactly once.
func TestChurn(t *testing.T) {
	needFiles(t, 14000)
	o := churnOpts{
		slots: 5000, dense: 10, sparse: 1000, sparsePer: 100, histN: 10, histEvery: 5,
		ticks: 25, ramp: 5 * time.Second, minLife: 3 * time.Second, maxLife: 12 * time.Second,
	}
	const run = 30 * time.Second // publishing, ramp included
	f := startFleet(t, 2, 2, churnConfig)
	var mu sync.Mutex
	var allSubs []*subRec
	r := newChurnRun(f, o, func(s []*subRec) {
		mu.Lock()
		allSubs = append(allSubs, s...)
		mu.Unlock()
	})
	t0 := time.Now()
	r.start(t0.Add(run))

	// Concurrent connections, sampled on both edges.
	var peak, low float64 = 0, 1e9
	steadyFrom := t0.Add(o.ramp + 2*time.Second)
	for time.Now().Before(r.pubEnd) {
		time.Sleep(time.Second)
		n, err := r.concurrent()
		if err != nil {
			errorf(t, "%v", err)
			continue
		}
		peak = max(peak, n)
		if time.Now().After(steadyFrom) {
			low = min(low, n)
		}
	}
	if !r.wait(60 * time.Second) {
		fatalf(t, "clients did not finish within 60 s of the end (a hang)")
	}
	elapsed := time.Since(t0)

	st := checkDeliveries(r.names, r.log, allSubs)
	hs := checkHistory(r.names, r.log, r.histUsers)
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
	if st.expected < 100000 {
		errorf(t, "only %d deliveries expected; the test is not measuring much", st.expected)
	}
	if ratio < 0.99999 {
		errorf(t, "delivered %d of %d expected events (%.6f%%), below 99.999%%", st.delivered, st.expected, 100*ratio)
	}
	if st.duplicates > 0 {
		errorf(t, "%d duplicate deliveries", st.duplicates)
	}
	if hs.expected < 10000 {
		errorf(t, "only %d history deliveries expected; the test is not measuring much", hs.expected)
	}
	if hs.delivered != hs.expected || hs.dups > 0 || hs.failedRecoveries > 0 || hs.noSerial > 0 {
		errorf(t, "history channels with recovery: %d of %d delivered, %d duplicates, %d failed recoveries, %d events without serial; want all, exactly once",
			hs.delivered, hs.expected, hs.dups, hs.failedRecoveries, hs.noSerial)
	}
	if n := r.cut.Load(); n > 0 {
		errorf(t, "%d connections were dropped by the server", n)
	}
	if n := r.subErrs.Load(); n > 0 {
		errorf(t, "%d subscriptions failed", n)
	}
	if n := r.pubFail.Load(); n > 0 {
		errorf(t, "%d of %d publishes failed", n, r.pubCount.Load())
	}
	if peak < 0.8*float64(o.slots) {
		errorf(t, "at most %.0f connections at once; want about %d", peak, o.slots)
	}
	record(t, map[string]any{
		"connection_slots":              o.slots,
		"connections_made":              r.sessions.Load(),
		"connections_concurrent_peak":   peak,
		"connections_concurrent_low":    low,
		"dial_errors":                   r.dialErrs.Load(),
		"subscribe_errors":              r.subErrs.Load(),
		"dropped_by_server":             r.cut.Load(),
		"leave_fence_timeouts":          r.fenceTimeouts.Load(),
		"publishes":                     r.pubCount.Load(),
		"publish_failures":              r.pubFail.Load(),
		"deliveries_expected":           st.expected,
		"deliveries_received":           st.delivered,
		"deliveries_missing":            st.missing,
		"duplicates":                    st.duplicates,
		"delivery_ratio":                fmt.Sprintf("%.6f", ratio),
		"history_users":                 hs.users,
		"history_recoveries":            r.recoveries.Load(),
		"history_expected":              hs.expected,
		"history_delivered":             hs.delivered,
		"history_duplicates":            hs.dups,
		"history_failed_recoveries":     hs.failedRecoveries,
		"history_delivery_ratio":        fmt.Sprintf("%.6f", float64(hs.delivered)/float64(max(hs.expected, 1))),
		"duration_s":                    fmt.Sprintf("%.1f", elapsed.Seconds()),
		"channels_dense_sparse_history": fmt.Sprintf("%d/%d/%d", o.dense, o.sparse, o.histN),
		"connection_lifetime_s":         fmt.Sprintf("%.0f–%.0f", o.minLife.Seconds(), o.maxLife.Seconds()),
		"events_per_second":             fmt.Sprintf("%d dense, %d×100 sparse, %d history", o.ticks, o.ticks, o.ticks),
	}, "Each connection subscribes to one dense channel (about 500 subscribers) and one sparse one (about 5), "+
		"lives 3–12 s, then leaves; an event counts as expected when its API request started after the subscription "+
		"succeeded and was answered before the connection began to leave. A leaving connection reads on until an event "+
		"published after it began to leave arrived on each of its channels (per-channel order makes that a fence), "+
		"then closes. Every fifth connection slot is also a history user: it resubscribes with last_serial and must "+
		"see every event of its channel from its first subscription to its last leave.")
}
