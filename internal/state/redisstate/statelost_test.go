package redisstate

import (
	"testing"
	"time"

	"github.com/heraldrt/herald/internal/state"
)

// When the heartbeat finds the node's state lost but restoring its
// registry fails (the connection breaks between the two scripts, as it can
// right after a Redis restart), the loss is still reported: the first script
// has written the heartbeat again, so no later beat would ever see it, and
// the node's presence members would stay missing for good (found by the
// chaos fault test). The failure is forced with a registry key of the wrong
// type.
func TestStateLostReportedWhenRegistryRestoreFails(t *testing.T) {
	e := shards(t, 1)
	lost := make(chan int, 10)
	B := node(t, e.b, "B", Options{ReapInterval: -1, NodeTimeout: 2 * time.Hour, HeartbeatInterval: time.Hour, OnStateLost: func(s int) { lost <- s }})
	if _, err := B.Presence().Join(ctx, "app", "presence-x", state.Member{UserID: "u"}, "b.1", 0); err != nil {
		t.Fatal(err)
	}
	c := e.b.Clients[0]
	// The shard restarted empty, and restoring the registry will fail.
	if err := c.Do(ctx, c.B().Flushall().Build()).Error(); err != nil {
		t.Fatal(err)
	}
	if err := c.Do(ctx, c.B().Set().Key(regKeyName("B")).Value("not a set").Build()).Error(); err != nil {
		t.Fatal(err)
	}
	if err := B.Heartbeat(ctx); err == nil {
		t.Fatal("Heartbeat: no error although the registry could not be restored")
	}
	select {
	case s := <-lost:
		if s != 0 {
			t.Fatalf("OnStateLost(%d), want shard 0", s)
		}
	default:
		t.Fatal("OnStateLost not called: the loss would never be reported")
	}
}
