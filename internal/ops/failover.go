package ops

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/heraldrt/herald/internal/redisx"
)

// Shard failover metrics (Redis shards only), read from the broker's Stats
// at scrape time.
var (
	dShardUp = desc("herald_redis_shard_up",
		"1 while this node places channels on the shard (not Down), 0 while its channels are served by the next shards.", "shard")
	dShardHealth = desc("herald_redis_shard_health",
		"This node's view of the shard: 1 for its current state (up, suspect, down, recovering), 0 for the others.", "shard", "state")
	dFailovers = desc("herald_redis_failovers_total", "Times a shard became Down and its channels moved to the next shards.")
	dFailbacks = desc("herald_redis_failbacks_total", "Times a Down shard came back and its channels moved back.")
	dMoved     = desc("herald_redis_moved_subscriptions_total", "Subscriptions added on fallback shards by ring changes.")
)

// ringCollector is the shard failover part of the collector.
type ringCollector Metrics

func (c *ringCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{dShardUp, dShardHealth, dFailovers, dFailbacks, dMoved} {
		ch <- d
	}
}

func (c *ringCollector) Collect(ch chan<- prometheus.Metric) {
	r := c.src.Redis
	if r == nil {
		return
	}
	st := r.Stats()
	ch <- prometheus.MustNewConstMetric(dFailovers, prometheus.CounterValue, float64(st.Failovers))
	ch <- prometheus.MustNewConstMetric(dFailbacks, prometheus.CounterValue, float64(st.Failbacks))
	ch <- prometheus.MustNewConstMetric(dMoved, prometheus.CounterValue, float64(st.Moved))
	for _, sh := range st.Shards {
		up := 1.0
		if sh.Health == redisx.Down {
			up = 0
		}
		ch <- prometheus.MustNewConstMetric(dShardUp, prometheus.GaugeValue, up, sh.URL)
		for h := redisx.Up; h <= redisx.Recovering; h++ {
			v := 0.0
			if sh.Health == h {
				v = 1
			}
			ch <- prometheus.MustNewConstMetric(dShardHealth, prometheus.GaugeValue, v, sh.URL, h.String())
		}
	}
}
