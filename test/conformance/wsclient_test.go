package conformance

import (
	"testing"

	"github.com/heraldrt/herald/internal/testkit"
)

// The raw protocol client lives in internal/testkit (shared with the cluster
// tests); these names keep the conformance tests short.
type (
	WSClient = testkit.WSClient
	WSFrame  = testkit.WSFrame
	WSClose  = testkit.WSClose
)

// ExpectQuiet checks that none of clients receives anything for d.
var ExpectQuiet = testkit.ExpectQuiet

// DialWS connects to app key on h and waits for pusher:connection_established.
func DialWS(t *testing.T, h *Herald, key string) *WSClient {
	t.Helper()
	return testkit.Dial(t, h.Addr, key)
}
