package conformance

import (
	"net"
	"os"
	"path/filepath"
	"testing"
)

// chromiumPath is Debian's Chromium, installed by scripts/deps.sh.
const chromiumPath = "/usr/bin/chromium"

// pusher-js (browser build, dist/web/pusher.min.js) in headless Chromium,
// driven by playwright-core, with the `pusher` npm library as app server.
func TestPusherJSBrowser(t *testing.T) {
	// Never skip: a missing browser would silently drop the suite.
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Fatalf("chromium not found (%v); run `make deps` (scripts/deps.sh installs it)", err)
	}
	h := StartHerald(t, "")
	RunNode(t, h, "browser/browser.test.mjs", "CHROMIUM="+chromiumPath)
}

// The operations dashboard in headless Chromium: delivered counter, charts,
// token check; saves test-output/dashboard.png.
func TestDashboardBrowser(t *testing.T) {
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Fatalf("chromium not found (%v); run `make deps` (scripts/deps.sh installs it)", err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	internal := l.Addr().String()
	l.Close()
	const token = "conformance-admin-token-0123"
	h := StartHerald(t, "", "HERALD_INTERNAL_ADDR="+internal, "HERALD_ADMIN_TOKEN="+token)
	out := filepath.Join(suiteDir, "test-output")
	if err := os.MkdirAll(out, 0o755); err != nil {
		t.Fatal(err)
	}
	RunNode(t, h, "dashboard/dashboard.test.mjs", "CHROMIUM="+chromiumPath, "HERALD_INTERNAL="+internal,
		"HERALD_ADMIN_TOKEN="+token, "DASHBOARD_SCREENSHOT="+filepath.Join(out, "dashboard.png"))
}
