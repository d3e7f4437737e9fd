// Package conformance runs the official Pusher clients and SDKs against a
// real Herald process: pusher-js (Node build and browser build in Chromium),
// Laravel Echo, the `pusher` npm server library and pusher-http-go.
//
// TestMain builds the herald binary (with -race, so a data race reached by a
// real client fails the suite) and installs the Node packages from the
// committed lockfile when they are missing. Each test starts its own Herald
// on a random loopback port with the YAML config below.
package conformance

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/heraldrt/herald/internal/testkit"
)

// Apps every conformance test can use. app-id is the development-style app
// (client events on); other-id must never see app-id's traffic.
const (
	AppID     = "app-id"
	AppKey    = "app-key"
	AppSecret = "app-secret"

	OtherID     = "other-id"
	OtherKey    = "other-key"
	OtherSecret = "other-secret"

	DisabledKey = "disabled-key"
)

// DefaultConfig is the YAML each Herald under test starts with.
const DefaultConfig = `apps:
  - id: app-id
    key: app-key
    secret: app-secret
    client_events: true
  - id: other-id
    key: other-key
    secret: other-secret
    client_events: true
  - id: disabled-id
    key: disabled-key
    secret: disabled-secret
    enabled: false
`

var (
	heraldBin string
	suiteDir  string // this directory (test/conformance)
)

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	var err error
	suiteDir, err = os.Getwd()
	if err != nil {
		fmt.Fprintln(os.Stderr, "conformance:", err)
		return 1
	}
	tmp, err := os.MkdirTemp("", "herald-conformance-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "conformance:", err)
		return 1
	}
	defer os.RemoveAll(tmp)
	heraldBin = filepath.Join(tmp, "herald")
	if err := testkit.BuildHerald(filepath.Join(suiteDir, "..", ".."), heraldBin, true); err != nil {
		fmt.Fprintln(os.Stderr, "conformance: building herald:", err)
		return 1
	}
	if err := ensureNodeModules(); err != nil {
		fmt.Fprintln(os.Stderr, "conformance:", err)
		return 1
	}
	return m.Run()
}

// ensureNodeModules runs `npm ci` when node_modules is missing or older than
// the lockfile. It never skips: without npm the suite fails.
func ensureNodeModules() error {
	lock := filepath.Join(suiteDir, "package-lock.json")
	installed := filepath.Join(suiteDir, "node_modules", ".package-lock.json")
	li, err := os.Stat(lock)
	if err != nil {
		return err
	}
	if ii, err := os.Stat(installed); err == nil && !li.ModTime().After(ii.ModTime()) {
		return nil
	}
	cmd := exec.Command("npm", "ci", "--no-audit", "--no-fund", "--loglevel=error")
	cmd.Dir = suiteDir
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("npm ci in %s failed (run `make deps`): %w", suiteDir, err)
	}
	return nil
}

// Herald is one server process under test (see testkit.Herald).
type Herald = testkit.Herald

// StartHerald starts the suite's herald binary with config (YAML;
// DefaultConfig when empty) on a free loopback port; see testkit.StartHerald.
func StartHerald(t *testing.T, config string, env ...string) *Herald {
	t.Helper()
	if config == "" {
		config = DefaultConfig
	}
	return testkit.StartHerald(t, heraldBin, config, env...)
}

// NodeEnv is the environment a Node test file reads to find Herald.
func NodeEnv(h *Herald) []string {
	return []string{
		"HERALD_HOST=" + h.Host, "HERALD_PORT=" + h.Port,
		"HERALD_APP_ID=" + AppID, "HERALD_APP_KEY=" + AppKey, "HERALD_APP_SECRET=" + AppSecret,
		"HERALD_OTHER_APP_ID=" + OtherID, "HERALD_OTHER_APP_KEY=" + OtherKey, "HERALD_OTHER_APP_SECRET=" + OtherSecret,
		"HERALD_DISABLED_APP_KEY=" + DisabledKey,
	}
}

// RunNode runs `node --test file` (relative to test/conformance) against h and
// fails the test when any Node case fails. Node's output is logged.
func RunNode(t *testing.T, h *Herald, file string, extraEnv ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	// --test-force-exit: after a refused close (40xx) pusher-js leaves a 30 s
	// timer behind that would otherwise keep the finished test process alive.
	cmd := exec.CommandContext(ctx, "node", "--test", "--test-concurrency=1", "--test-force-exit", "--test-reporter=spec", file)
	cmd.Dir = suiteDir
	cmd.Env = append(append(os.Environ(), NodeEnv(h)...), extraEnv...)
	out, err := cmd.CombinedOutput()
	t.Logf("node --test %s:\n%s", file, out)
	if err != nil {
		t.Fatalf("node --test %s failed: %v", file, err)
	}
	if !bytes.Contains(out, []byte("pass ")) {
		t.Fatalf("node --test %s reported no passing case", file)
	}
	if !bytes.Contains(out, []byte("ℹ fail 0")) {
		t.Fatalf("node --test %s: failures reported", file)
	}
	// Pending cases are test.todo with the issue that turns them on; a skipped
	// case would hide a missing tool or feature, so none is allowed.
	if !bytes.Contains(out, []byte("ℹ skipped 0")) {
		t.Fatalf("node --test %s: skipped cases reported", file)
	}
}
