package e2e

import (
	"encoding/json"
	"net/url"
	"testing"
	"time"
)

// countOf waits for pusher_internal:subscription_count on channel and returns
// the count. Its data is a JSON string, like every server event's.
func (c *client) countOf(channel string) int {
	c.t.Helper()
	f := c.expectOn("pusher_internal:subscription_count", channel)
	var d struct {
		Count *int `json:"subscription_count"`
	}
	if err := json.Unmarshal([]byte(f.dataString()), &d); err != nil || d.Count == nil {
		c.t.Fatalf("bad subscription_count data: %s", f.raw)
	}
	return *d.Count
}

func (c *client) expectCount(channel string, want int) {
	c.t.Helper()
	if got := c.countOf(channel); got != want {
		c.t.Fatalf("subscription_count on %s: got %d, want %d", channel, got, want)
	}
}

func (c *client) unsubscribe(channel string) {
	c.send(map[string]any{"event": "pusher:unsubscribe", "data": map[string]any{"channel": channel}})
}

// Small channels: every subscribe and unsubscribe is broadcast to every
// subscriber, the new one included, after its subscription_succeeded.
func TestSubscriptionCountSmallChannel(t *testing.T) {
	e := start(t)
	a := e.connect("counted-key")
	b := e.connect("counted-key")
	a.subscribe("room")
	a.expectCount("room", 1)
	b.subscribe("room")
	b.expectCount("room", 2)
	a.expectCount("room", 2)
	b.unsubscribe("room")
	a.expectCount("room", 1)
	b.expectNothing(200 * time.Millisecond)

	// A socket closing counts as an unsubscribe.
	c := e.connect("counted-key")
	c.subscribe("room")
	c.expectCount("room", 2)
	a.expectCount("room", 2)
	c.conn.Close()
	a.expectCount("room", 1)

	// The API reports the same count.
	var ch struct {
		Occupied bool `json:"occupied"`
		Count    int  `json:"subscription_count"`
	}
	status, body := e.apiCall("counted", "counted-key", "counted-secret", "GET", "/channels/room",
		url.Values{"info": {"subscription_count"}}, nil)
	if status != 200 || json.Unmarshal([]byte(body), &ch) != nil || !ch.Occupied || ch.Count != 1 {
		t.Fatalf("channel info: %d %s", status, body)
	}
}

// Not on presence channels, nor for apps without the flag.
func TestSubscriptionCountNotSent(t *testing.T) {
	e := start(t)
	a := e.connect("app-key") // flag off
	a.subscribe("room")
	b := e.connect("app-key")
	b.subscribe("room")
	a.expectNothing(200 * time.Millisecond)
	b.expectNothing(10 * time.Millisecond)

	p := e.connect("counted-key")
	cd := `{"user_id":"u1"}`
	p.send(map[string]any{"event": "pusher:subscribe", "data": map[string]any{
		"channel": "presence-room", "auth": channelAuth("counted-key", "counted-secret", p.socketID, "presence-room", cd),
		"channel_data": cd}})
	p.expectOn("pusher_internal:subscription_succeeded", "presence-room")
	p.expectNothing(200 * time.Millisecond)
}

// 150 subscribers (seed pusher-subscription-count): up to 100 every change is
// broadcast; the 101st change is broadcast and takes the 5 s lock; while it is
// held, each new subscriber is told the count directly and nobody else hears
// of it. After the lock expires the next change is broadcast again.
func TestSubscriptionCountThrottledAbove100(t *testing.T) {
	e := start(t)
	const n = 150
	const ch = "big"
	cs := make([]*client, n)
	var lockedAt time.Time
	for i := 0; i < n; i++ {
		c := e.connect("counted-key")
		cs[i] = c
		c.subscribe(ch)
		count := i + 1
		if count <= 101 {
			// Broadcast: the newcomer and everyone before it.
			for j := 0; j <= i; j++ {
				cs[j].expectCount(ch, count)
			}
			if count == 101 {
				lockedAt = time.Now()
			}
			continue
		}
		// Direct to the newcomer only.
		c.expectCount(ch, count)
	}
	if time.Since(lockedAt) > 4*time.Second {
		t.Fatalf("subscribing 49 clients took %v: too slow to observe the 5 s throttle", time.Since(lockedAt))
	}
	for _, i := range []int{0, 50, 100, 101, 120, 149} {
		cs[i].expectNothing(50 * time.Millisecond)
	}

	// Lock expired: the next change (an unsubscribe) is broadcast to all.
	time.Sleep(time.Until(lockedAt.Add(5*time.Second + 300*time.Millisecond)))
	cs[n-1].unsubscribe(ch)
	for i := 0; i < n-1; i++ {
		cs[i].expectCount(ch, n-1)
	}
	// ... and takes the lock again: the following change is not broadcast.
	cs[n-2].unsubscribe(ch)
	for _, i := range []int{0, 100, 147} {
		cs[i].expectNothing(100 * time.Millisecond)
	}
	cs[n-2].expectNothing(10 * time.Millisecond)
}
