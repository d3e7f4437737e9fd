package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"github.com/heraldrt/herald/internal/apps"
	"github.com/heraldrt/herald/internal/auth"
	"github.com/heraldrt/herald/internal/edge"
	"github.com/heraldrt/herald/internal/server"
	"github.com/heraldrt/herald/internal/testkit"
)

// startTLS starts the test apps (plus "slow", whose queue bound is 256 KiB)
// with TLS on the public listener, from a certificate generated now.
func startTLS(t *testing.T) (*env, *testkit.TLSCert) {
	t.Helper()
	cert := testkit.NewTLSCert(t)
	cfg := testConfig()
	slow := &apps.App{ID: "slow", Key: "slow-key", Secret: "slow-secret", MaxQueuedBytes: 256 << 10, APIRequestsPerSecond: -1}
	slow.ApplyDefaults()
	cfg.Apps = append(cfg.Apps, slow)
	cfg.TLSCert, cfg.TLSKey = cert.CertFile, cert.KeyFile
	e := startWith(t, server.Options{Config: cfg, Edge: edge.Config{PongTimeout: 1500 * time.Millisecond,
		SweepInterval: 100 * time.Millisecond, CloseGrace: time.Second}})
	return e, cert
}

// apiTLS sends a signed API request over https.
func apiTLS(t *testing.T, e *env, cert *testkit.TLSCert, app testkit.App, method, path string, body []byte) (int, string) {
	t.Helper()
	full := "/apps/" + app.ID + path
	q := auth.SignRequest(method, full, nil, body, app.Key, app.Secret, time.Now())
	req, err := http.NewRequest(method, "https://"+e.addr+full+"?"+q.Encode(), bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := cert.HTTPClient().Do(req)
	if err != nil {
		t.Fatalf("https %s %s: %v", method, full, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

var devApp = testkit.App{ID: "app-id", Key: "app-key", Secret: "app-secret"}

// wss:// and https:// on one TLS port: subscribe (public and private),
// publish through the API, client events between two TLS sockets, a large
// burst in order, and handshake refusals and close codes delivered over TLS.
func TestTLSWebSocketAndAPI(t *testing.T) {
	e, cert := startTLS(t)
	a := testkit.DialTLS(t, e.addr, "app-key", cert)
	b := testkit.DialTLS(t, e.addr, "app-key", cert)
	a.Subscribe("news")
	body, _ := json.Marshal(map[string]any{"name": "headline", "channel": "news", "data": "over TLS"})
	if st, rb := apiTLS(t, e, cert, devApp, "POST", "/events", body); st != 200 {
		t.Fatalf("https trigger: %d %s", st, rb)
	}
	a.ExpectEvent("headline", "news", "over TLS")

	for _, c := range []*testkit.WSClient{a, b} {
		c.SendSubscribe("private-room", testkit.ChannelAuth(devApp, c.SocketID, "private-room", ""), "")
		c.Expect("pusher_internal:subscription_succeeded", "private-room")
	}
	a.Send(`{"event":"client-hi","channel":"private-room","data":{"n":1}}`)
	if f := b.Expect("client-hi", "private-room"); !strings.Contains(f.Raw, `"n":1`) {
		t.Fatalf("client event over TLS: %s", f.Raw)
	}

	// A burst larger than one TLS record and the pair's buffer, in order.
	const n = 300
	payload := strings.Repeat("x", 2000)
	for i := 0; i < n; i++ {
		body, _ := json.Marshal(map[string]any{"name": "n", "channel": "news", "data": payload + string(rune('a'+i%26))})
		if st, rb := apiTLS(t, e, cert, devApp, "POST", "/events", body); st != 200 {
			t.Fatalf("trigger %d: %d %s", i, st, rb)
		}
	}
	for i := 0; i < n; i++ {
		a.ExpectEvent("n", "news", payload+string(rune('a'+i%26)))
	}

	// Refusals and server closes reach a TLS client as on TCP.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, br, _, err := ws.Dialer{TLSConfig: cert.ClientConfig()}.Dial(ctx, "wss://"+e.addr+"/app/nope?protocol=7")
	if err != nil {
		t.Fatal(err)
	}
	var r io.Reader = conn
	if br != nil {
		r = io.MultiReader(br, conn)
	}
	msg, _ := wsutil.ReadServerText(struct {
		io.Reader
		io.Writer
	}{r, conn})
	if !strings.Contains(string(msg), `"code":4001`) {
		t.Fatalf("unknown key over TLS: %s", msg)
	}
	conn.Close()

	tiny := testkit.DialTLS(t, e.addr, "tiny-key", cert) // max_frame_size 2048
	tiny.Send(`{"event":"pusher:ping","data":"` + strings.Repeat("x", 2100) + `"}`)
	tiny.ExpectClose(1009)

	// Plain HTTP on the TLS port is refused; the TLS clients are unaffected.
	if resp, err := http.Get("http://" + e.addr + "/healthz"); err == nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("plain HTTP on the TLS port: %d", resp.StatusCode)
		}
	}
	a.Ping()
	b.Ping()
}

// A TLS client that stops reading is closed as a slow consumer like a TCP
// one, its bridge goroutines end within the close grace, and other TLS
// clients keep receiving.
func TestTLSSlowConsumer(t *testing.T) {
	e, cert := startTLS(t)
	slowApp := testkit.App{ID: "slow", Key: "slow-key", Secret: "slow-secret"}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// A small receive buffer, so that the kernel does not absorb megabytes.
	small := func(ctx context.Context, network, addr string) (net.Conn, error) {
		d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
			return rc.Control(func(fd uintptr) { _ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
		}}
		return d.DialContext(ctx, network, addr)
	}
	conn, _, _, err := ws.Dialer{TLSConfig: cert.ClientConfig(), NetDial: small}.Dial(ctx, "wss://"+e.addr+"/app/slow-key?protocol=7")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := wsutil.WriteClientText(conn, []byte(`{"event":"pusher:subscribe","data":{"channel":"flood"}}`)); err != nil {
		t.Fatal(err)
	}
	good := testkit.DialTLS(t, e.addr, "slow-key", cert)
	good.Subscribe("flood")
	// From here the first connection never reads again.
	data := strings.Repeat("y", 8000)
	batch := make([]map[string]any, 10)
	for i := range batch {
		batch[i] = map[string]any{"name": "big", "channel": "flood", "data": data}
	}
	body, _ := json.Marshal(map[string]any{"batch": batch})
	deadline := time.Now().Add(20 * time.Second)
	sent := 0
	for e.srv.Edge().Stats().SlowConsumers == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no slow consumer after %d events of 8 KB", sent)
		}
		if st, rb := apiTLS(t, e, cert, slowApp, "POST", "/batch_events", body); st != 200 {
			t.Fatalf("trigger: %d %s", st, rb)
		}
		sent += len(batch)
		for range batch {
			good.ExpectEvent("big", "flood", data)
		}
	}
	t.Logf("slow consumer closed after %d events of 8 KB", sent)
	waitFor(t, "the slow TLS connection to be closed", func() bool { return e.srv.Edge().Connections() == 1 })
	waitFor(t, "its bridge goroutines to end", func() bool { return e.srv.Edge().TLSBridgeGoroutines() == 2 })
	body, _ = json.Marshal(map[string]any{"name": "after", "channel": "flood", "data": "still here"})
	if st, rb := apiTLS(t, e, cert, slowApp, "POST", "/events", body); st != 200 {
		t.Fatalf("trigger: %d %s", st, rb)
	}
	good.ExpectEvent("after", "flood", "still here")
	good.Close()
	waitFor(t, "every bridge goroutine to end", func() bool { return e.srv.Edge().TLSBridgeGoroutines() == 0 })
}

// Shutdown closes TLS connections with 4200 like TCP ones, and the edge
// waits for their bridges.
func TestTLSShutdown(t *testing.T) {
	cert := testkit.NewTLSCert(t)
	cfg := testConfig()
	cfg.TLSCert, cfg.TLSKey = cert.CertFile, cert.KeyFile
	srv, err := server.New(server.Options{Addr: "127.0.0.1:0", Config: cfg, Log: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	c := testkit.DialTLS(t, srv.Addr().String(), "app-key", cert)
	c.Subscribe("x")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- srv.Shutdown(ctx) }()
	c.ExpectClose(4200)
	if err := <-done; err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	if n := srv.Edge().TLSBridgeGoroutines(); n != 0 {
		t.Fatalf("%d bridge goroutines after shutdown", n)
	}
}

// A missing or unreadable certificate stops the server at start-up with an
// error naming TLS.
func TestTLSBadCertificate(t *testing.T) {
	cfg := testConfig()
	cfg.TLSCert, cfg.TLSKey = "/nonexistent/cert.pem", "/nonexistent/key.pem"
	if _, err := server.New(server.Options{Addr: "127.0.0.1:0", Config: cfg}); err == nil || !strings.Contains(err.Error(), "tls") {
		t.Fatalf("missing certificate: %v", err)
	}
}
