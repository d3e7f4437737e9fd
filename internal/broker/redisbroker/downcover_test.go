package redisbroker

import (
	"testing"
	"time"

	"github.com/heraldrt/herald/internal/redistest"
	"github.com/heraldrt/herald/internal/redisx"
)

// A topic subscribed while its home shard is marked Down although the
// node's connection to that shard is back (Redis restarted, the Monitor has
// not counted enough good probes yet) must be subscribed on that
// connection too: once the ring moves the topic back home, the home
// subscription is the only one left. Found by the chaos fault test (clients
// reconnecting to an edge during that window never got the channel's
// events again).
func TestSubscribeWhileHomeMarkedDownButConnected(t *testing.T) {
	s0, s1 := redistest.Start(t), redistest.Start(t)
	shards := []string{s0.URL(), s1.URL()}
	sub := newNode(t, shards, "", Options{})
	pub := newNode(t, shards, "", Options{})
	tps := topicsOn(sub.be, "app", 0, 2)
	sub.subscribe(t, tps[0]) // the shard-0 connection is live

	sub.be.Ring.SetHealth(0, redisx.Down)
	sub.subscribe(t, tps[1]) // covered by shard 1; shard 0 is connected
	sub.be.Ring.SetHealth(0, redisx.Up)

	eventually(t, 5*time.Second, "the topic's events through its home shard", func() bool {
		pub.publish(t, tps[1], "x")
		return sub.sink.tryRecv(tps[1], "x", 100*time.Millisecond)
	})
}
