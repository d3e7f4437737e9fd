package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/heraldrt/herald/internal/auth"
	"github.com/heraldrt/herald/internal/edge"
	"github.com/heraldrt/herald/internal/server"
)

// syncBuffer is a bytes.Buffer safe for the server's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// closedLines returns the "connection closed" lines of a JSON log by socket id.
func closedLines(t *testing.T, log string) map[string]map[string]any {
	t.Helper()
	out := map[string]map[string]any{}
	for _, line := range strings.Split(strings.TrimSpace(log), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line is not JSON: %q", line)
		}
		if m["msg"] == "connection closed" {
			id, _ := m["socket_id"].(string)
			if out[id] != nil {
				t.Errorf("two close lines for %s", id)
			}
			out[id] = m
		}
	}
	return out
}

// TestLogConnectionClose: one debug line per closed connection with its
// category (the metrics' reason label) and close code; the debug log carries
// no secret or signature.
func TestLogConnectionClose(t *testing.T) {
	var buf syncBuffer
	srv, err := server.New(server.Options{
		Addr: "127.0.0.1:0", Config: testConfig(),
		Log:  slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Edge: edge.Config{PongTimeout: 1500 * time.Millisecond, SweepInterval: 100 * time.Millisecond},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, srv: srv, addr: srv.Addr().String()}
	shutdown := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	}
	done := false
	t.Cleanup(func() {
		if !done {
			shutdown()
		}
	})

	bye, term, down := e.connect("app-key"), e.connect("app-key"), e.connect("app-key")
	term.signin(`{"id":"u1"}`)
	sig := auth.Sign("app-secret", auth.UserString(term.socketID, `{"id":"u1"}`))
	down.subscribePrivate("private-logs")

	// The client closes with 1000.
	if err := ws.WriteFrame(bye.conn, ws.MaskFrame(ws.NewCloseFrame(ws.NewCloseFrameBody(ws.StatusNormalClosure, "bye")))); err != nil {
		t.Fatal(err)
	}
	bye.expectClose(1000)
	// The app terminates u1: 4009.
	if st, body := e.api("POST", "/users/u1/terminate_connections", nil, map[string]any{}); st != 200 {
		t.Fatalf("terminate: %d %s", st, body)
	}
	term.expectError(4009)
	term.expectClose(4009)
	// Shutdown: 4200.
	shutdown()
	done = true

	log := buf.String()
	lines := closedLines(t, log)
	for _, tc := range []struct {
		c        *client
		category string
		code     float64
	}{{bye, "client", 1000}, {term, "terminated", 4009}, {down, "shutdown", 4200}} {
		m := lines[tc.c.socketID]
		if m == nil {
			t.Errorf("no connection closed line for %s (%s) in:\n%s", tc.c.socketID, tc.category, log)
			continue
		}
		if m["level"] != "DEBUG" || m["app"] != "app-id" || m["category"] != tc.category || m["code"] != tc.code || m["reason"] == "" {
			t.Errorf("close line of the %s connection: %v", tc.category, m)
		}
	}
	for _, secret := range []string{"app-secret", sig, channelAuth("app-key", "app-secret", down.socketID, "private-logs", "")} {
		if strings.Contains(log, secret) {
			t.Errorf("the log contains a secret (%q)", secret)
		}
	}
}
