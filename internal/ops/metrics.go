// Package ops is Herald's operations surface: Prometheus metrics, pprof and
// the live dashboard, served on the internal listener.
//
// Hot paths (fan-out, reads, writes) only add to atomics in their own
// packages; the collector here reads them when /metrics is scraped, so the
// cost of a metric is paid per scrape, not per message.
package ops

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/heraldrt/herald/internal/api"
	"github.com/heraldrt/herald/internal/apps"
	"github.com/heraldrt/herald/internal/broker/redisbroker"
	"github.com/heraldrt/herald/internal/edge"
	"github.com/heraldrt/herald/internal/hub"
	"github.com/heraldrt/herald/internal/push"
	"github.com/heraldrt/herald/internal/session"
	"github.com/heraldrt/herald/internal/webhooks"
)

// Sources are the parts of a server the metrics read. Nil fields are skipped.
type Sources struct {
	Apps     []*apps.App
	Node     *session.Node
	Edge     *edge.Server
	API      *api.API
	Webhooks *webhooks.Dispatcher
	Redis    *redisbroker.Broker
	Push     *push.Service
}

// Metrics holds the registry. Create it with NewMetrics before the API and
// webhooks (they report into it), then Bind the sources.
type Metrics struct {
	reg         *prometheus.Registry
	apiRequests *prometheus.CounterVec
	publishDur  prometheus.Histogram
	publishErrs prometheus.Counter
	webhookDur  *prometheus.HistogramVec
	src         Sources
}

// NewMetrics returns the metrics with Go runtime and process collectors.
func NewMetrics() *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry()}
	m.apiRequests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "herald_api_requests_total", Help: "HTTP API requests by route and status.",
	}, []string{"route", "status"})
	m.publishDur = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "herald_api_publish_duration_seconds", Help: "Broker publish latency of API triggers (one per channel).",
		Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
	})
	m.publishErrs = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "herald_broker_publish_errors_total", Help: "API publishes the broker failed.",
	})
	m.webhookDur = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "herald_webhook_request_duration_seconds", Help: "Webhook request latency by app and outcome.",
		Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
	}, []string{"app", "outcome"})
	m.reg.MustRegister(m.apiRequests, m.publishDur, m.publishErrs, m.webhookDur,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		(*collector)(m))
	m.reg.MustRegister((*ringCollector)(m)) // failover.go
	m.reg.MustRegister((*pushCollector)(m)) // push.go
	return m
}

// Registry is the Prometheus registry (/metrics serves it).
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Bind sets the sources; call it before the first scrape.
func (m *Metrics) Bind(s Sources) { m.src = s }

// Request implements api.Metrics.
func (m *Metrics) Request(route string, status int, _ time.Duration) {
	m.apiRequests.WithLabelValues(route, strconv.Itoa(status)).Inc()
}

// Publish implements api.Metrics.
func (m *Metrics) Publish(d time.Duration, err error) {
	m.publishDur.Observe(d.Seconds())
	if err != nil {
		m.publishErrs.Inc()
	}
}

// WebhookAttempt is webhooks.Config.OnAttempt.
func (m *Metrics) WebhookAttempt(app string, d time.Duration, ok bool) {
	outcome := "ok"
	if !ok {
		outcome = "error"
	}
	m.webhookDur.WithLabelValues(app, outcome).Observe(d.Seconds())
}

var _ api.Metrics = (*Metrics)(nil)

// collector reads the servers' atomics at scrape time.
type collector Metrics

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(name, help, labels, nil)
}

var (
	dConnections   = desc("herald_connections", "Open WebSocket connections.", "app")
	dOpened        = desc("herald_connections_opened_total", "WebSocket connections accepted.")
	dRejected      = desc("herald_connections_rejected_total", "WebSocket handshakes refused (unknown app, quota, …).")
	dClosed        = desc("herald_connections_closed_total", "WebSocket connections closed, by reason.", "reason")
	dSubs          = desc("herald_subscriptions", "Channel subscriptions of this node's connections, by channel type.", "type")
	dPublished     = desc("herald_messages_published_total", "Events published, by source (api: one per channel; client: client events).", "source")
	dDelivered     = desc("herald_messages_delivered_total", "Events written to connections: one per event per connection.")
	dClientEvents  = desc("herald_client_events_total", "Client events accepted.")
	dFramesIn      = desc("herald_websocket_messages_received_total", "WebSocket messages received from clients.")
	dBytesIn       = desc("herald_bytes_received_total", "Bytes read from WebSocket connections.")
	dBytesOut      = desc("herald_bytes_sent_total", "Bytes written to WebSocket connections.")
	dSlow          = desc("herald_slow_consumer_disconnects_total", "Connections closed because their queue passed max_queued_bytes.")
	dRateLimited   = desc("herald_rate_limited_total", "Requests refused by a rate limit (api: HTTP 429; client_event: 4301).", "kind")
	dWHQueued      = desc("herald_webhook_queue_depth", "Webhook events waiting in queues.", "app")
	dWHHeld        = desc("herald_webhook_held", "channel_vacated/member_removed events waiting out the hold.", "app")
	dWHSent        = desc("herald_webhook_events_sent_total", "Webhook events delivered (2xx).", "app")
	dWHFailed      = desc("herald_webhook_events_failed_total", "Webhook events given up after retries or at shutdown.", "app")
	dWHDropped     = desc("herald_webhook_events_dropped_total", "Webhook events dropped because a queue was full.", "app")
	dWHRetries     = desc("herald_webhook_retries_total", "Failed webhook attempts that were retried.", "app")
	dRedisPub      = desc("herald_redis_published_total", "Messages Redis accepted.")
	dRedisPubErr   = desc("herald_redis_publish_errors_total", "Redis publishes that failed.")
	dRedisDeliv    = desc("herald_redis_delivered_total", "Messages received from Redis pub/sub.")
	dRedisReconn   = desc("herald_redis_resubscribes_total", "Subscriptions restored after a lost connection or failed probe.")
	dRedisTopics   = desc("herald_redis_topics", "Redis pub/sub topics subscribed.")
	dRedisDropped  = desc("herald_redis_dropped_total", "Messages received from Redis for topics this node no longer subscribes (dropped).")
	dRedisProbeErr = desc("herald_redis_probe_failures_total", "Subscriber liveness probes that did not come back (each rebuilds the connection).")
	dHistPub       = desc("herald_history_published_total", "Events published with a serial on history channels.")
	dHistRecovery  = desc("herald_history_recoveries_total", "Resubscriptions with last_serial, by result (recovered or a recovery_failed reason).", "result")
	dHistEvents    = desc("herald_history_recovered_events_total", "Missed events sent by successful recoveries.")
	allDescriptors = []*prometheus.Desc{dConnections, dOpened, dRejected, dClosed, dSubs, dPublished, dDelivered,
		dClientEvents, dFramesIn, dBytesIn, dBytesOut, dSlow, dRateLimited, dWHQueued, dWHHeld, dWHSent, dWHFailed,
		dWHDropped, dWHRetries, dRedisPub, dRedisPubErr, dRedisDeliv, dRedisReconn, dRedisTopics, dRedisDropped, dRedisProbeErr,
		dHistPub, dHistRecovery, dHistEvents}
)

// Describe implements prometheus.Collector.
func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range allDescriptors {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *collector) Collect(ch chan<- prometheus.Metric) {
	s := &c.src
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	if n := s.Node; n != nil {
		for _, a := range s.Apps {
			gauge(dConnections, float64(n.Connections(a.ID)), a.ID)
		}
		nc := n.Counters()
		counter(dPublished, float64(nc.APIPublished), "api")
		counter(dPublished, float64(nc.ClientEvents), "client")
		counter(dClientEvents, float64(nc.ClientEvents))
		counter(dRateLimited, float64(nc.ClientEventsRateLimited), "client_event")
		hs := n.HistoryStats()
		counter(dHistPub, float64(hs.Published))
		counter(dHistRecovery, float64(hs.Recovered), "recovered")
		for reason, v := range hs.Failed {
			counter(dHistRecovery, float64(v), reason)
		}
		counter(dHistEvents, float64(hs.RecoveredEvents))
		if h := n.Hub; h != nil {
			counter(dDelivered, float64(h.Delivered()))
			for k, name := range hub.KindNames {
				gauge(dSubs, float64(h.Subscriptions(hub.ChannelKind(k))), name)
			}
		}
	}
	if e := s.Edge; e != nil {
		st := e.Stats()
		counter(dOpened, float64(st.Opened))
		counter(dRejected, float64(st.Rejected))
		for i, name := range edge.CloseReasonNames {
			if name != "" {
				counter(dClosed, float64(st.ClosedBy[i]), name)
			}
		}
		counter(dFramesIn, float64(st.MessagesIn))
		counter(dBytesIn, float64(st.BytesIn))
		counter(dBytesOut, float64(st.BytesOut))
		counter(dSlow, float64(st.SlowConsumers))
	}
	if a := s.API; a != nil {
		counter(dRateLimited, float64(a.RateLimited()), "api")
	}
	if w := s.Webhooks; w != nil {
		for _, a := range s.Apps {
			if len(a.Webhooks) == 0 {
				continue
			}
			st := w.Stats(a.ID)
			gauge(dWHQueued, float64(st.Queued), a.ID)
			gauge(dWHHeld, float64(st.Held), a.ID)
			counter(dWHSent, float64(st.Sent), a.ID)
			counter(dWHFailed, float64(st.Failed), a.ID)
			counter(dWHDropped, float64(st.Dropped), a.ID)
			counter(dWHRetries, float64(st.Retries), a.ID)
		}
	}
	if r := s.Redis; r != nil {
		st := r.Stats()
		counter(dRedisPub, float64(st.Published))
		counter(dRedisPubErr, float64(st.PublishErrors))
		counter(dRedisDeliv, float64(st.Delivered))
		counter(dRedisReconn, float64(st.Reconnects))
		gauge(dRedisTopics, float64(st.Topics))
		counter(dRedisDropped, float64(st.Dropped))
		counter(dRedisProbeErr, float64(st.ProbeFailures))
	}
}
