package conformance

import "testing"

// Direct push with the `pusher` npm library's post() and pusher-js: receipts,
// pusher.user.bind for user pushes, pusher.bind for socket pushes, errors.
func TestDirectPushNode(t *testing.T) {
	h := StartHerald(t, "")
	RunNode(t, h, "node/push.test.mjs")
}
