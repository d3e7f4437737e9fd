package conformance

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// pusher-js reconnects by itself after Herald restarts (close 4200), gets a
// new socket_id, resubscribes and receives events published afterwards.
func TestPusherJSReconnectAfter4200(t *testing.T) {
	h := StartHerald(t, "")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", "node/reconnect.mjs")
	cmd.Dir = suiteDir
	cmd.Env = append(os.Environ(), NodeEnv(h)...)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 16)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	var got []string
	restarted := false
	for line := range lines {
		got = append(got, line)
		t.Log("node:", line)
		if strings.HasPrefix(line, "READY ") && !restarted {
			restarted = true
			h.Restart()
		}
	}
	err = cmd.Wait()
	if !restarted {
		t.Fatalf("client never got ready: %q", got)
	}
	if err != nil || len(got) == 0 || !strings.HasPrefix(got[len(got)-1], "OK ") {
		t.Fatalf("reconnect failed (%v): %q", err, got)
	}
	if !strings.Contains(h.Log(), "4200") && !strings.Contains(h.Log(), "shutting down") {
		t.Logf("server log: %s", h.Log())
	}
}
