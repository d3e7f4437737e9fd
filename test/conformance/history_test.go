package conformance

import (
	"os"
	"testing"
)

// historyConfig is DefaultConfig with history on app-id's chat-* (1000
// events) and short-* (5 events) channels.
const historyConfig = `apps:
  - id: app-id
    key: app-key
    secret: app-secret
    client_events: true
    history:
      - channels: ["chat-*"]
        max_events: 1000
      - channels: ["short-*"]
        max_events: 5
`

// The JavaScript history helper (clients/js/herald-history.js) with the real
// pusher-js in Node: automatic resume after a network drop and after
// disconnect/connect (every missed event once, in order, then live ones),
// recovery failures surfaced, resumeFrom, unsubscribe, detach.
func TestHistoryJSHelper(t *testing.T) {
	h := StartHerald(t, historyConfig)
	RunNode(t, h, "node/history.test.mjs")
}

// The same helper as a browser ES module (<script type="module">, no build
// step) with the browser build of pusher-js in headless Chromium.
func TestHistoryJSHelperBrowser(t *testing.T) {
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Fatalf("chromium not found (%v); run `make deps` (scripts/deps.sh installs it)", err)
	}
	h := StartHerald(t, historyConfig)
	RunNode(t, h, "browser/history.test.mjs", "CHROMIUM="+chromiumPath)
}
