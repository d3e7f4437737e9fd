package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/heraldrt/herald/internal/apps"
	"github.com/heraldrt/herald/internal/auth"
	"github.com/heraldrt/herald/internal/edge"
	"github.com/heraldrt/herald/internal/server"
	"github.com/heraldrt/herald/internal/webhooks"
)

// dialOrigin opens a WebSocket to path with an Origin header ("" = none).
func (e *env) dialOrigin(path, origin string) *client {
	e.t.Helper()
	d := ws.Dialer{}
	if origin != "" {
		d.Header = ws.HandshakeHeaderHTTP(http.Header{"Origin": {origin}})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, br, _, err := d.Dial(ctx, "ws://"+e.addr+path)
	if err != nil {
		e.t.Fatalf("dial %s: %v", path, err)
	}
	c := &client{t: e.t, conn: conn, r: conn, msgs: make(chan frame, 1024), closed: make(chan closeInfo, 1)}
	if br != nil {
		c.r = io.MultiReader(br, conn)
	}
	go c.readLoop()
	e.t.Cleanup(func() { conn.Close() })
	return c
}

// allowed_origins: a browser page of another origin is refused with
// pusher:error 4009 and close 4009; listed origins, wildcard subdomains and
// handshakes without Origin connect; apps without a list take any origin.
func TestOriginAllowList(t *testing.T) {
	cfg := testConfig()
	cfg.Apps[0].AllowedOrigins = []string{"https://app.example.com", "https://*.example.org", "http://localhost:3000"}
	e := startWith(t, server.Options{Config: cfg})
	for _, origin := range []string{"https://app.example.com", "https://a.b.example.org", "http://localhost:3000", ""} {
		c := e.dialOrigin("/app/app-key?protocol=7", origin)
		c.expect("pusher:connection_established")
	}
	for _, origin := range []string{"https://evil.example", "https://example.org", "http://app.example.com",
		"https://app.example.com.evil.example", "null", "http://localhost:3001"} {
		c := e.dialOrigin("/app/app-key?protocol=7", origin)
		f := c.expectError(4009)
		if !strings.Contains(f.raw, "Origin not allowed") {
			t.Errorf("origin %q: %s", origin, f.raw)
		}
		c.expectClose(4009)
	}
	// Another app, without a list, takes any origin.
	c := e.dialOrigin("/app/other-key?protocol=7", "https://evil.example")
	c.expect("pusher:connection_established")
	// The refused handshakes cost nothing: the app's connections are the four accepted.
	if n := e.srv.Node().Connections("app-id"); n != 4 {
		t.Errorf("app-id has %d connections, want 4", n)
	}
}

// lockedBuf is a bytes.Buffer safe for concurrent writes.
type lockedBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// teeHandler sends every record to each handler.
type teeHandler []slog.Handler

func (t teeHandler) Enabled(context.Context, slog.Level) bool { return true }
func (t teeHandler) Handle(ctx context.Context, r slog.Record) error {
	for _, h := range t {
		_ = h.Handle(ctx, r.Clone())
	}
	return nil
}
func (t teeHandler) WithAttrs(a []slog.Attr) slog.Handler {
	out := make(teeHandler, len(t))
	for i, h := range t {
		out[i] = h.WithAttrs(a)
	}
	return out
}
func (t teeHandler) WithGroup(g string) slog.Handler {
	out := make(teeHandler, len(t))
	for i, h := range t {
		out[i] = h.WithGroup(g)
	}
	return out
}

// Secrets never reach the logs: with debug logging in text and JSON, every
// code path that handles a secret runs (good and bad channel and user
// signatures, good and bad API signatures, expired timestamps, the
// dashboard with right and wrong admin tokens, webhooks with a secret
// header and a password in their URL that fail and are retried), and the
// log then contains no app secret, no admin token, no webhook header value
// or URL password, and none of the signatures that were sent.
func TestSecretsNeverLogged(t *testing.T) {
	const (
		secretA   = "s3cret-app-A-0f9e8d7c6b5a"
		secretB   = "s3cret-app-B-1a2b3c4d5e6f"
		token     = "s3cret-admin-token-77aa88bb"
		hookValue = "Bearer s3cret-hook-header-99cc"
		hookPass  = "s3cret-url-password-55dd"
	)
	var attempts atomic.Int64
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		if attempts.Add(1) <= 2 {
			http.Error(w, "try again", http.StatusInternalServerError)
			return
		}
		w.WriteHeader(http.StatusOK)
	}))
	defer hook.Close()
	hookURL, _ := url.Parse(hook.URL + "/hooks")
	hookURL.User = url.UserPassword("herald", hookPass)

	var text, js lockedBuf
	log := slog.New(teeHandler{
		slog.NewTextHandler(&text, &slog.HandlerOptions{Level: slog.LevelDebug}),
		slog.NewJSONHandler(&js, &slog.HandlerOptions{Level: slog.LevelDebug}),
	})
	a := &apps.App{ID: "a", Key: "a-key", Secret: secretA, ClientEvents: true,
		Webhooks: []apps.Webhook{{URL: hookURL.String(), Headers: map[string]string{"Authorization": hookValue}}}}
	b := &apps.App{ID: "b", Key: "b-key", Secret: secretB}
	a.ApplyDefaults()
	b.ApplyDefaults()
	cfg := &apps.Config{Apps: []*apps.App{a, b}, AdminToken: token}
	srv, err := server.New(server.Options{Addr: "127.0.0.1:0", InternalAddr: "127.0.0.1:0", Config: cfg, Log: log,
		Edge:     edge.Config{PongTimeout: time.Second, SweepInterval: 100 * time.Millisecond},
		Webhooks: webhooks.Config{Delay: -1, RetryMin: 20 * time.Millisecond, RetryMax: 50 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, srv: srv, addr: srv.Addr().String()}
	var sigs []string // every signature sent
	sign := func(secret, msg string) string {
		s := auth.Sign(secret, msg)
		sigs = append(sigs, s)
		return s
	}

	c := e.connect("a-key")
	d := e.connect("a-key")
	for _, x := range []*client{c, d} {
		x.send(map[string]any{"event": "pusher:subscribe", "data": map[string]any{
			"channel": "private-x", "auth": "a-key:" + sign(secretA, auth.ChannelString(x.socketID, "private-x", ""))}})
		x.expectOn("pusher_internal:subscription_succeeded", "private-x")
	}
	c.send(map[string]any{"event": "pusher:subscribe", "data": map[string]any{
		"channel": "private-y", "auth": "a-key:" + sign(secretB, auth.ChannelString(c.socketID, "private-y", ""))}})
	c.expectError(4009)
	c.expect("pusher:subscription_error")
	cd := `{"user_id":"u1"}`
	c.send(map[string]any{"event": "pusher:subscribe", "data": map[string]any{"channel": "presence-p",
		"auth": "a-key:" + sign(secretA, auth.ChannelString(c.socketID, "presence-p", cd)), "channel_data": cd}})
	c.expectOn("pusher_internal:subscription_succeeded", "presence-p")
	ud := `{"id":"u1"}`
	c.send(map[string]any{"event": "pusher:signin", "data": map[string]any{
		"auth": "a-key:" + sign(secretB, auth.UserString(c.socketID, ud)), "user_data": ud}})
	c.expectError(4009)
	c.send(map[string]any{"event": "pusher:signin", "data": map[string]any{
		"auth": "a-key:" + sign(secretA, auth.UserString(c.socketID, ud)), "user_data": ud}})
	c.expect("pusher:signin_success")
	c.send(`{"event":"client-x","channel":"private-x","data":{"k":1}}`)
	d.expectOn("client-x", "private-x")

	// API: good, wrong secret, expired, other app's credentials.
	body := []byte(`{"name":"e","channel":"private-x","data":"d"}`)
	path := "/apps/a/events"
	for _, tc := range []struct {
		secret string
		ts     time.Time
		want   int
	}{{secretA, time.Now(), 200}, {secretB, time.Now(), 401}, {secretA, time.Now().Add(-time.Hour), 401}} {
		q := auth.SignRequest("POST", path, nil, body, "a-key", tc.secret, tc.ts)
		sigs = append(sigs, q.Get("auth_signature"))
		if st, rb := e.raw("POST", path, q.Encode(), body); st != tc.want {
			t.Fatalf("API with %v: %d %s", tc, st, rb)
		}
	}
	q := auth.SignRequest("GET", "/apps/a/channels", nil, nil, "b-key", secretB, time.Now())
	sigs = append(sigs, q.Get("auth_signature"))
	if st, _ := e.raw("GET", "/apps/a/channels", q.Encode(), nil); st != 401 {
		t.Fatalf("app b's credentials on app a: %d", st)
	}
	// Dashboard and pprof with the right and a wrong token.
	base := "http://" + srv.InternalAddr().String()
	for _, tok := range []string{token, "wrong-token-value-123456", ""} {
		_ = getStatus(t, base+"/dashboard?token="+url.QueryEscape(tok), "")
		_ = getStatus(t, base+"/debug/pprof/cmdline", tok)
	}
	// Webhooks (two refusals, then delivered) and closes.
	waitFor(t, "a webhook delivered after retries", func() bool { return srv.Webhooks().Stats("").Sent > 0 })
	c.conn.Close()
	d.conn.Close()
	waitFor(t, "the connections to close", func() bool { return srv.Node().Connections("") == 0 })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}

	for name, out := range map[string]string{"text": text.String(), "json": js.String()} {
		for _, want := range []string{"connection closed", "herald listening", "webhook"} {
			if !strings.Contains(out, want) {
				t.Errorf("%s log has no %q line: the paths under test did not log\n%s", name, want, out)
			}
		}
		secrets := append([]string{secretA, secretB, token, "wrong-token-value-123456", hookValue, "s3cret-hook-header", hookPass}, sigs...)
		for _, s := range secrets {
			if strings.Contains(out, s) {
				t.Errorf("%s log contains the secret %q:\n%s", name, s, out)
			}
		}
		// JSON-escaped forms too (a secret with special characters would be escaped).
		for _, s := range secrets {
			q, _ := json.Marshal(s)
			if strings.Contains(out, string(q[1:len(q)-1])) {
				t.Errorf("%s log contains the escaped secret %q", name, s)
			}
		}
	}
}
