package testkit

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// BuildHerald builds cmd/herald from the module at root into out, with the
// race detector when race is set (a data race reached by a test then shows
// in the process log, which StartHerald checks).
func BuildHerald(root, out string, race bool) error {
	args := []string{"build"}
	if race {
		args = append(args, "-race")
	}
	args = append(args, "-o", out, "./cmd/herald")
	cmd := exec.Command("go", args...)
	cmd.Dir = root
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	return cmd.Run()
}

// Herald is one server process under test.
type Herald struct {
	t      testing.TB
	bin    string
	Addr   string // host:port
	Host   string
	Port   string
	TLS    *TLSCert // non-nil: the public listener serves TLS (StartHeraldTLS)
	config string
	env    []string

	mu   sync.Mutex
	cmd  *exec.Cmd
	log  *lockedBuffer
	done chan struct{}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// StartHerald runs `bin serve` with config (YAML) and env on a free loopback
// port and waits until /readyz answers. It is stopped, and its log checked
// for data races and panics, when the test ends.
func StartHerald(t testing.TB, bin, config string, env ...string) *Herald {
	t.Helper()
	return StartHeraldOn(t, bin, "127.0.0.1", config, env...)
}

// StartHeraldOn is StartHerald listening on another loopback address (such
// as 127.0.0.100), for tests that kill and restart Herald: on 127.0.0.1 its
// port may be taken, while it is down, by an outgoing connection's local
// port, and the restart would fail.
func StartHeraldOn(t testing.TB, bin, host, config string, env ...string) *Herald {
	t.Helper()
	return startHerald(t, bin, host, config, nil, env)
}

func startHerald(t testing.TB, bin, host, config string, cert *TLSCert, env []string) *Herald {
	t.Helper()
	path := filepath.Join(t.TempDir(), "herald.yaml")
	if err := os.WriteFile(path, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	host, port, _ := net.SplitHostPort(addr)
	h := &Herald{t: t, bin: bin, Addr: addr, Host: host, Port: port, config: path, env: env, TLS: cert}
	h.start()
	t.Cleanup(func() {
		h.Stop()
		h.checkLog()
	})
	return h
}

func (h *Herald) start() {
	h.t.Helper()
	h.mu.Lock()
	cmd := exec.Command(h.bin, "serve")
	cmd.Env = append(os.Environ(), "HERALD_ADDR="+h.Addr, "HERALD_CONFIG="+h.config, "HERALD_LOG_LEVEL=debug")
	cmd.Env = append(cmd.Env, h.env...)
	if h.log == nil {
		h.log = &lockedBuffer{}
	}
	cmd.Stdout, cmd.Stderr = h.log, h.log
	if err := cmd.Start(); err != nil {
		h.mu.Unlock()
		h.t.Fatalf("start herald: %v", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	h.cmd, h.done = cmd, done
	h.mu.Unlock()

	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := h.readyz()
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		select {
		case <-done:
			h.t.Fatalf("herald exited during start-up:\n%s", h.log.String())
		default:
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("herald not ready after 15s:\n%s", h.log.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Stop sends SIGINT (an immediate shutdown: every connection is closed with
// 4200 at once; SIGTERM would drain over drain_window) and waits.
func (h *Herald) Stop() {
	h.mu.Lock()
	cmd, done := h.cmd, h.done
	h.cmd = nil
	h.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		h.t.Errorf("herald did not stop within 20s of SIGINT")
	}
}

// Terminate sends SIGTERM (a drain: new connections refused, /readyz 503,
// open ones closed with 4200 over drain_window) and returns at once; Exited
// reports when the process is gone. Stop (at the end of the test) still
// waits for it.
func (h *Herald) Terminate() {
	h.mu.Lock()
	cmd := h.cmd
	h.mu.Unlock()
	if cmd != nil {
		_ = cmd.Process.Signal(syscall.SIGTERM)
	}
}

// Exited is closed when the process has exited (nil before it started).
func (h *Herald) Exited() <-chan struct{} {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.done
}

// Kill ends the process at once (SIGKILL), as a crash would.
func (h *Herald) Kill() {
	h.mu.Lock()
	cmd, done := h.cmd, h.done
	h.cmd = nil
	h.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Kill()
	<-done
}

// Restart stops Herald and starts it again on the same address.
func (h *Herald) Restart() {
	h.t.Helper()
	h.Stop()
	h.start()
}

// PID returns the process id of the running server, or 0 when it is stopped
// (chaos tests read its /proc/<pid>/status).
func (h *Herald) PID() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.cmd == nil || h.cmd.Process == nil {
		return 0
	}
	return h.cmd.Process.Pid
}

// Log returns everything the server printed so far.
func (h *Herald) Log() string { return h.log.String() }

func (h *Herald) checkLog() {
	out := h.log.String()
	for _, bad := range []string{"WARNING: DATA RACE", "panic:", "fatal error:"} {
		if strings.Contains(out, bad) {
			h.t.Errorf("herald log contains %q:\n%s", bad, out)
			return
		}
	}
	if h.t.Failed() || os.Getenv("HERALD_TEST_LOG") != "" {
		h.t.Logf("herald log:\n%s", tail(out, 200))
	}
}

func tail(s string, lines int) string {
	parts := strings.Split(s, "\n")
	if len(parts) > lines {
		parts = parts[len(parts)-lines:]
	}
	return strings.Join(parts, "\n")
}
