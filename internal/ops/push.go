package ops

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Direct push metrics, read from the push service's Stats at scrape time.
var (
	dPushRequests  = desc("herald_push_requests_total", "Direct pushes answered by this node (user and socket).")
	dPushTimedOut  = desc("herald_push_timed_out_total", "Direct pushes answered with timed_out: a target node did not answer in time.")
	dPushDelivered = desc("herald_push_delivered_total",
		"Connections that queued a direct push, as this node's receipts counted them.")
	dPushServed  = desc("herald_push_served_total", "Direct push requests from other nodes delivered to this node's connections.")
	dPushDropped = desc("herald_push_dropped_total",
		"Control messages dropped: reply (the reply queue was full or its publish failed), malformed.", "kind")
)

// pushCollector is the direct push part of the collector.
type pushCollector Metrics

func (c *pushCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{dPushRequests, dPushTimedOut, dPushDelivered, dPushServed, dPushDropped} {
		ch <- d
	}
}

func (c *pushCollector) Collect(ch chan<- prometheus.Metric) {
	p := c.src.Push
	if p == nil {
		return
	}
	st := p.Stats()
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	counter(dPushRequests, st.Requests)
	counter(dPushTimedOut, st.TimedOut)
	counter(dPushDelivered, st.Delivered)
	counter(dPushServed, st.Served)
	counter(dPushDropped, st.RepliesDropped, "reply")
	counter(dPushDropped, st.MalformedDropped, "malformed")
}
