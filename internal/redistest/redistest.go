// Package redistest starts real redis-server processes for tests: single
// servers on random loopback ports, and Redis Clusters built with
// redis-cli --cluster create. It never skips: a missing redis-server fails the
// test with a hint (make deps installs it).
package redistest

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Server is one redis-server process.
type Server struct {
	tb   testing.TB
	Host string // listen address, 127.0.0.1 unless StartOn chose another
	Port int
	dir  string
	args []string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

// Start runs redis-server on a free 127.0.0.1 port (persistence off) and
// waits until it answers PING. It is killed when the test ends.
func Start(tb testing.TB, extraArgs ...string) *Server {
	tb.Helper()
	return StartOn(tb, "127.0.0.1", extraArgs...)
}

// StartOn is Start on another loopback address (such as 127.0.0.100). Tests
// that kill and restart servers use it: on 127.0.0.1 the port may be taken,
// while the server is down, by some process's outgoing connection (which
// takes its local ports from the same range as free ports), and the restart
// would fail.
func StartOn(tb testing.TB, host string, extraArgs ...string) *Server {
	tb.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		tb.Fatalf("redis-server not found in PATH (run `make deps`): %v", err)
	}
	s := &Server{tb: tb, Host: host, dir: tb.TempDir(), args: extraArgs}
	tb.Cleanup(s.Kill)
	// Another process may take the free port before redis-server binds it:
	// try a few ports.
	for attempt := 0; ; attempt++ {
		s.Port = freePort(tb, host)
		err := s.tryStart()
		if err == nil {
			return s
		}
		if !errors.Is(err, errPortTaken) || attempt == 4 {
			tb.Fatal(err)
		}
	}
}

var errPortTaken = errors.New("redistest: port taken")

// Addr is host:port.
func (s *Server) Addr() string { return net.JoinHostPort(s.Host, strconv.Itoa(s.Port)) }

// URL is redis://host:port.
func (s *Server) URL() string { return "redis://" + s.Addr() }

func (s *Server) start() {
	s.tb.Helper()
	if err := s.tryStart(); err != nil {
		s.tb.Fatal(err)
	}
}

// tryStart starts redis-server on s.Port and waits for PING.
func (s *Server) tryStart() error {
	args := []string{"--port", strconv.Itoa(s.Port), "--bind", s.Host, "--save", "", "--appendonly", "no",
		"--dir", s.dir, "--protected-mode", "no", "--loglevel", "warning"}
	args = append(args, s.args...)
	cmd := exec.Command("redis-server", args...)
	log, err := os.Create(filepath.Join(s.dir, "redis.log"))
	if err != nil {
		return err
	}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start redis-server: %w", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); log.Close(); close(done) }()
	s.mu.Lock()
	s.cmd, s.done = cmd, done
	s.mu.Unlock()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if out, err := s.Do("PING"); err == nil && out == "PONG" {
			// The answer may come from another process that took the port
			// first; ours then exits at once.
			select {
			case <-done:
			case <-time.After(50 * time.Millisecond):
				return nil
			}
		}
		select {
		case <-done:
			s.mu.Lock()
			s.cmd = nil
			s.mu.Unlock()
			b, _ := os.ReadFile(filepath.Join(s.dir, "redis.log"))
			if strings.Contains(string(b), "Address already in use") {
				return fmt.Errorf("%w: %d", errPortTaken, s.Port)
			}
			return fmt.Errorf("redis-server exited during start-up:\n%s", b)
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("redis-server on %s not answering after 10s", s.Addr())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Kill stops the server at once (SIGKILL) and waits for it to exit.
func (s *Server) Kill() { s.signal(syscall.SIGKILL) }

// Stop shuts the server down with SIGTERM and waits.
func (s *Server) Stop() { s.signal(syscall.SIGTERM) }

func (s *Server) signal(sig syscall.Signal) {
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(sig)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
}

// Restart starts the server again on the same port (after Stop or Kill).
func (s *Server) Restart() {
	s.tb.Helper()
	s.start()
}

// Do sends one command (inline protocol, arguments without spaces) and
// returns the first line of the reply without its type byte.
func (s *Server) Do(args ...string) (string, error) {
	c, err := net.DialTimeout("tcp", s.Addr(), time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := c.Write([]byte(b.String())); err != nil {
		return "", err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return "", err
	}
	line = strings.TrimRight(line, "\r\n")
	if line == "" {
		return "", fmt.Errorf("empty reply")
	}
	if line[0] == '-' {
		return "", fmt.Errorf("redis: %s", line[1:])
	}
	return line[1:], nil
}

// Cluster is a Redis Cluster of masters only.
type Cluster struct {
	Nodes []*Server
}

// Seed is the URL of the first node.
func (c *Cluster) Seed() string { return c.Nodes[0].URL() }

// StartCluster starts n cluster-enabled servers, joins them with
// `redis-cli --cluster create` (no replicas) and waits for cluster_state:ok.
func StartCluster(tb testing.TB, n int) *Cluster {
	tb.Helper()
	if _, err := exec.LookPath("redis-cli"); err != nil {
		tb.Fatalf("redis-cli not found in PATH (run `make deps`): %v", err)
	}
	c := &Cluster{}
	addrs := []string{}
	for i := 0; i < n; i++ {
		s := Start(tb, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "2000")
		c.Nodes = append(c.Nodes, s)
		addrs = append(addrs, s.Addr())
	}
	args := append([]string{"--cluster", "create"}, addrs...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	out, err := exec.Command("redis-cli", args...).CombinedOutput()
	if err != nil {
		tb.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	deadline := time.Now().Add(20 * time.Second)
	for _, s := range c.Nodes {
		for {
			info, err := exec.Command("redis-cli", "-p", strconv.Itoa(s.Port), "cluster", "info").CombinedOutput()
			if err == nil && strings.Contains(string(info), "cluster_state:ok") {
				break
			}
			if time.Now().After(deadline) {
				tb.Fatalf("cluster not ok after 20s: %s", info)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	return c
}

func freePort(tb testing.TB, host string) int {
	tb.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		tb.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
