package conformance

import "testing"

// pusher-js (Node build) with the `pusher` npm server library.
func TestPusherJSNode(t *testing.T) {
	h := StartHerald(t, "")
	RunNode(t, h, "node/pusher-js.test.mjs")
}
