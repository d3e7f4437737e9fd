package conformance

import "testing"

// Laravel Echo (laravel-echo, ES module build) over pusher-js (Node build),
// configured as a Laravel app does, with a local /broadcasting/auth endpoint
// signing through the `pusher` npm library.
func TestLaravelEcho(t *testing.T) {
	h := StartHerald(t, "")
	RunNode(t, h, "echo/echo.test.mjs")
}
