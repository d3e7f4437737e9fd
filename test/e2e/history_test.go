package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heraldrt/herald/internal/apps"
	"github.com/heraldrt/herald/internal/auth"
	"github.com/heraldrt/herald/internal/server"
)

// historyConfig: "hist" keeps history on chat-*, private-orders-*,
// presence-room-*, cache-feed-* (100 events, 10 minutes), on short-* (10
// events) and long-* (1000 events); the development app keeps none.
func historyConfig() *apps.Config {
	h := &apps.App{ID: "hist", Key: "hist-key", Secret: "hist-secret", ClientEvents: true, History: []apps.HistoryRule{
		{Channels: []string{"chat-*", "private-orders-*", "presence-room-*", "cache-feed-*"}},
		{Channels: []string{"short-*"}, MaxEvents: 10},
		{Channels: []string{"long-*"}, MaxEvents: 1000},
	}}
	cfg := &apps.Config{Apps: []*apps.App{apps.DefaultApp("app-id", "app-key", "app-secret"), h}}
	for _, a := range cfg.Apps {
		a.ApplyDefaults()
	}
	return cfg
}

func startHistory(t *testing.T) *env {
	t.Helper()
	return startWith(t, server.Options{Config: historyConfig()})
}

func (e *env) histAPI(method, path string, params url.Values, body any) (int, string) {
	e.t.Helper()
	return e.apiCall("hist", "hist-key", "hist-secret", method, path, params, body)
}

func (e *env) histTrigger(channel, event, data string) {
	e.t.Helper()
	if st, body := e.histAPI("POST", "/events", nil, map[string]any{"name": event, "channel": channel, "data": data}); st != 200 {
		e.t.Fatalf("trigger %s: %d %s", channel, st, body)
	}
}

// serialOf returns a frame's top-level serial (0 and false when absent).
func serialOf(t *testing.T, f frame) (uint64, bool) {
	t.Helper()
	var v struct {
		Serial *uint64 `json:"serial"`
	}
	if err := json.Unmarshal([]byte(f.raw), &v); err != nil {
		t.Fatalf("frame %s: %v", f.raw, err)
	}
	if v.Serial == nil {
		return 0, false
	}
	return *v.Serial, true
}

// subscribeFrom subscribes with last_serial (raw JSON) and waits for success.
func (c *client) subscribeFrom(channel string, lastSerial any) {
	c.t.Helper()
	c.send(map[string]any{"event": "pusher:subscribe", "data": map[string]any{"channel": channel, "last_serial": lastSerial}})
	c.expectOn("pusher_internal:subscription_succeeded", channel)
}

// recoveryFailed waits for herald:recovery_failed on channel and returns its data.
func (c *client) recoveryFailed(channel string) map[string]any {
	c.t.Helper()
	f := c.expectOn("herald:recovery_failed", channel)
	return f.dataMap(c.t)
}

// Every event published on a history channel carries a serial, increasing;
// other channels' frames are unchanged.
func TestHistorySerialOnDeliveredEvents(t *testing.T) {
	e := startHistory(t)
	c := e.connect("hist-key")
	c.subscribe("chat-1")
	c.subscribe("news")
	var prev uint64
	for i := 0; i < 5; i++ {
		e.histTrigger("chat-1", "msg", strconv.Itoa(i))
		f := c.expectOn("msg", "chat-1")
		s, ok := serialOf(t, f)
		if !ok || s <= prev || f.dataString() != strconv.Itoa(i) {
			t.Fatalf("event %d: %s (previous serial %d)", i, f.raw, prev)
		}
		want := `{"event":"msg","data":"` + strconv.Itoa(i) + `","channel":"chat-1","serial":` + strconv.FormatUint(s, 10) + `}`
		if f.raw != want {
			t.Fatalf("frame %s\nwant  %s", f.raw, want)
		}
		prev = s
	}
	e.histTrigger("news", "msg", "x")
	if f := c.expectOn("msg", "news"); f.raw != `{"event":"msg","data":"x","channel":"news"}` {
		t.Fatalf("non-history frame changed: %s", f.raw)
	}
	// batch_events stamp serials too.
	st, body := e.histAPI("POST", "/batch_events", nil, map[string]any{"batch": []map[string]any{
		{"name": "b1", "channel": "chat-1", "data": "1"}, {"name": "b2", "channel": "chat-1", "data": "2"}}})
	if st != 200 {
		t.Fatalf("batch: %d %s", st, body)
	}
	for _, ev := range []string{"b1", "b2"} {
		s, ok := serialOf(t, c.expectOn(ev, "chat-1"))
		if !ok || s <= prev {
			t.Fatalf("%s serial %d after %d", ev, s, prev)
		}
		prev = s
	}
}

// The scenario: a client sees some events, is disconnected while 100
// are published, and resubscribes with the last serial it saw on a new
// connection while publishing goes on. It receives every event exactly once,
// in publish order: the 100 it missed (from the history) and then the live
// ones, with no gap and no duplicate where the two meet.
func TestHistoryRecoveryAfterDisconnect(t *testing.T) {
	e := startHistory(t)
	const ch = "long-recovery"
	a := e.connect("hist-key")
	a.subscribe(ch)
	var last uint64
	for i := 0; i < 5; i++ {
		e.histTrigger(ch, "msg", strconv.Itoa(i))
		last, _ = serialOf(t, a.expectOn("msg", ch))
	}
	a.conn.Close()

	for i := 5; i < 105; i++ {
		e.histTrigger(ch, "msg", strconv.Itoa(i))
	}
	// Keep publishing while the client resubscribes, so that live events
	// arrive during the recovery.
	var wg sync.WaitGroup
	wg.Add(1)
	const total = 165
	errs := make(chan string, total)
	go func() {
		defer wg.Done()
		for i := 105; i < total; i++ {
			body, _ := json.Marshal(map[string]any{"name": "msg", "channel": ch, "data": strconv.Itoa(i)})
			if st, rb := e.apiCallNoFatal("hist", "hist-key", "hist-secret", "POST", "/events", body); st != 200 {
				errs <- fmt.Sprintf("trigger %d: %d %s", i, st, rb)
				return
			}
		}
	}()
	defer func() {
		wg.Wait()
		close(errs)
		for e := range errs {
			t.Error(e)
		}
	}()
	b := e.connect("hist-key")
	b.subscribeFrom(ch, last)
	prev := last
	for want := 5; want < total; want++ {
		f := b.next()
		if f.Event != "msg" || f.Channel != ch {
			t.Fatalf("expected event %d, got %s", want, f.raw)
		}
		s, ok := serialOf(t, f)
		if !ok || s <= prev {
			t.Fatalf("event %d has serial %d after %d: %s", want, s, prev, f.raw)
		}
		if f.dataString() != strconv.Itoa(want) {
			t.Fatalf("got event %s, want %d (gap or duplicate)", f.dataString(), want)
		}
		prev = s
	}
	b.expectNothing(200 * time.Millisecond)
	e.histTrigger(ch, "msg", "after")
	if f := b.expectOn("msg", ch); f.dataString() != "after" {
		t.Fatalf("live event after recovery: %s", f.raw)
	}
	st := e.srv.Node().HistoryStats()
	if st.Recovered != 1 || st.RecoveredEvents < 100 || st.Published != total+1 {
		t.Fatalf("stats %+v", st)
	}
}

// last_serial as a string, 0 (everything retained), the newest serial
// (nothing missed), and on private and presence channels.
func TestHistoryRecoveryForms(t *testing.T) {
	e := startHistory(t)
	c := e.connect("hist-key")
	c.subscribe("chat-forms")
	var serials []uint64
	for i := 0; i < 3; i++ {
		e.histTrigger("chat-forms", "msg", strconv.Itoa(i))
		s, _ := serialOf(t, c.expectOn("msg", "chat-forms"))
		serials = append(serials, s)
	}
	expectData := func(c *client, ch string, want ...string) {
		t.Helper()
		for _, w := range want {
			if f := c.expectOn("msg", ch); f.dataString() != w {
				t.Fatalf("got %s, want data %s", f.raw, w)
			}
		}
		c.expectNothing(150 * time.Millisecond)
	}
	d := e.connect("hist-key")
	d.subscribeFrom("chat-forms", strconv.FormatUint(serials[0], 10)) // a string
	expectData(d, "chat-forms", "1", "2")
	z := e.connect("hist-key")
	z.subscribeFrom("chat-forms", 0) // everything retained
	expectData(z, "chat-forms", "0", "1", "2")
	u := e.connect("hist-key")
	u.subscribeFrom("chat-forms", serials[2]) // up to date
	expectData(u, "chat-forms")

	// Private channel: the signature does not cover last_serial.
	p := e.connect("hist-key")
	const priv = "private-orders-1"
	p.send(map[string]any{"event": "pusher:subscribe", "data": map[string]any{"channel": priv,
		"auth": channelAuth("hist-key", "hist-secret", p.socketID, priv, "")}})
	p.expectOn("pusher_internal:subscription_succeeded", priv)
	e.histTrigger(priv, "msg", "p0")
	ps, _ := serialOf(t, p.expectOn("msg", priv))
	e.histTrigger(priv, "msg", "p1")
	p2 := e.connect("hist-key")
	p2.send(map[string]any{"event": "pusher:subscribe", "data": map[string]any{"channel": priv, "last_serial": ps,
		"auth": channelAuth("hist-key", "hist-secret", p2.socketID, priv, "")}})
	p2.expectOn("pusher_internal:subscription_succeeded", priv)
	expectData(p2, priv, "p1")

	// Presence: members first (subscription_succeeded), then the missed events.
	const room = "presence-room-1"
	e.histTrigger(room, "msg", "r0")
	e.histTrigger(room, "msg", "r1")
	m := e.connect("hist-key")
	cd := `{"user_id":"u1","user_info":{"name":"one"}}`
	m.send(map[string]any{"event": "pusher:subscribe", "data": map[string]any{"channel": room, "last_serial": 0,
		"auth": channelAuth("hist-key", "hist-secret", m.socketID, room, cd), "channel_data": cd}})
	if f := m.expectOn("pusher_internal:subscription_succeeded", room); !strings.Contains(f.dataString(), `"u1"`) {
		t.Fatalf("presence succeeded: %s", f.raw)
	}
	expectData(m, room, "r0", "r1")
}

// Failures are explicit: a gap, a channel without history, an invalid
// last_serial. The subscription itself succeeds and live events follow.
func TestHistoryRecoveryFailed(t *testing.T) {
	e := startHistory(t)
	const ch = "short-1" // keeps 10 events
	a := e.connect("hist-key")
	a.subscribe(ch)
	e.histTrigger(ch, "msg", "seen")
	last, _ := serialOf(t, a.expectOn("msg", ch))
	a.conn.Close()
	for i := 0; i < 20; i++ {
		e.histTrigger(ch, "msg", strconv.Itoa(i))
	}
	b := e.connect("hist-key")
	b.subscribeFrom(ch, last)
	d := b.recoveryFailed(ch)
	if d["reason"] != "gap" || d["last_serial"] != float64(last) || !strings.Contains(d["message"].(string), "no longer retained") {
		t.Fatalf("recovery_failed data: %v", d)
	}
	b.expectNothing(150 * time.Millisecond) // none of the retained events: the client must reload
	e.histTrigger(ch, "msg", "live")
	if f := b.expectOn("msg", ch); f.dataString() != "live" {
		t.Fatalf("live after failure: %s", f.raw)
	}

	// A serial from the future (or from another channel) is a gap too.
	c := e.connect("hist-key")
	c.subscribeFrom(ch, last+1)
	if d := c.recoveryFailed(ch); d["reason"] != "gap" {
		t.Fatalf("unknown serial: %v", d)
	}

	// A channel without history.
	n := e.connect("hist-key")
	n.subscribeFrom("news", 5)
	if d := n.recoveryFailed("news"); d["reason"] != "not_enabled" || !strings.Contains(d["message"].(string), "news keeps no history") {
		t.Fatalf("not enabled: %v", d)
	}
	// Invalid values.
	for i, v := range []any{-1, 1.5, "abc", true, map[string]any{}, float64(1 << 53), "12345678901234567"} {
		x := e.connect("hist-key")
		ch := "chat-invalid-" + strconv.Itoa(i)
		x.subscribeFrom(ch, v)
		if d := x.recoveryFailed(ch); d["reason"] != "invalid" || d["last_serial"] != nil {
			t.Fatalf("last_serial %v: %v", v, d)
		}
	}
	// null means no recovery at all.
	y := e.connect("hist-key")
	y.subscribeFrom("chat-null", nil)
	y.expectNothing(150 * time.Millisecond)

	st := e.srv.Node().HistoryStats()
	if st.Failed["gap"] != 2 || st.Failed["not_enabled"] != 1 || st.Failed["invalid"] != 7 {
		t.Fatalf("stats %+v", st)
	}
	// The same counts on /metrics.
	families, err := e.srv.Metrics().Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, f := range families {
		if f.GetName() != "herald_history_recoveries_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			got[m.GetLabel()[0].GetValue()] = m.GetCounter().GetValue()
		}
	}
	if got["gap"] != 2 || got["not_enabled"] != 1 || got["invalid"] != 7 || got["recovered"] != 0 {
		t.Fatalf("herald_history_recoveries_total: %v", got)
	}
}

// Cache channels: a client brought up to date by recovery gets no cached
// event; without recovery (or when it fails) the cache works as before.
func TestHistoryCacheChannel(t *testing.T) {
	e := startHistory(t)
	const ch = "cache-feed-1"
	a := e.connect("hist-key")
	a.subscribe(ch)
	a.expectOn("pusher:cache_miss", ch)
	e.histTrigger(ch, "msg", "1")
	s1, _ := serialOf(t, a.expectOn("msg", ch))
	e.histTrigger(ch, "msg", "2")

	b := e.connect("hist-key")
	b.subscribeFrom(ch, s1)
	if f := b.expectOn("msg", ch); f.dataString() != "2" {
		t.Fatalf("recovered: %s", f.raw)
	}
	b.expectNothing(150 * time.Millisecond) // not the cached "2" again

	c := e.connect("hist-key")
	c.subscribe(ch) // plain: the cached event
	if f := c.expectOn("msg", ch); f.dataString() != "2" {
		t.Fatalf("cached: %s", f.raw)
	}
	d := e.connect("hist-key")
	d.subscribeFrom(ch, s1+1) // failed: then the cached event
	d.recoveryFailed(ch)
	if f := d.expectOn("msg", ch); f.dataString() != "2" {
		t.Fatalf("cached after a failed recovery: %s", f.raw)
	}
}

func TestHistoryEndpoint(t *testing.T) {
	e := startHistory(t)
	type resp struct {
		Channel    string `json:"channel"`
		LastSerial uint64 `json:"last_serial"`
		Complete   *bool  `json:"complete"`
		Truncated  bool   `json:"truncated"`
		Events     []struct {
			Serial uint64 `json:"serial"`
			Event  string `json:"event"`
			Data   string `json:"data"`
		} `json:"events"`
	}
	get := func(ch string, q url.Values) resp {
		t.Helper()
		st, body := e.histAPI("GET", "/channels/"+ch+"/history", q, nil)
		if st != 200 {
			t.Fatalf("history %s %v: %d %s", ch, q, st, body)
		}
		var r resp
		if err := json.Unmarshal([]byte(body), &r); err != nil || r.Events == nil {
			t.Fatalf("body %s: %v", body, err)
		}
		return r
	}
	if r := get("chat-api", nil); len(r.Events) != 0 || r.LastSerial != 0 || r.Channel != "chat-api" || r.Complete != nil {
		t.Fatalf("empty history: %+v", r)
	}
	for i := 0; i < 5; i++ {
		e.histTrigger("chat-api", "ev"+strconv.Itoa(i), fmt.Sprintf(`{"n":%d}`, i))
	}
	r := get("chat-api", nil)
	if len(r.Events) != 5 || r.LastSerial != r.Events[4].Serial || r.Truncated {
		t.Fatalf("all: %+v", r)
	}
	for i, ev := range r.Events {
		if ev.Event != "ev"+strconv.Itoa(i) || ev.Data != fmt.Sprintf(`{"n":%d}`, i) || (i > 0 && ev.Serial <= r.Events[i-1].Serial) {
			t.Fatalf("event %d: %+v", i, ev)
		}
	}
	all := r.Events
	if r := get("chat-api", url.Values{"limit": {"2"}}); len(r.Events) != 2 || r.Events[0].Serial != all[3].Serial || !r.Truncated {
		t.Fatalf("limit 2 (the newest): %+v", r)
	}
	since := strconv.FormatUint(all[1].Serial, 10)
	if r := get("chat-api", url.Values{"since": {since}}); len(r.Events) != 3 || r.Events[0].Serial != all[2].Serial || r.Complete == nil || !*r.Complete {
		t.Fatalf("since: %+v", r)
	}
	if r := get("chat-api", url.Values{"since": {since}, "limit": {"1"}}); len(r.Events) != 1 || r.Events[0].Serial != all[2].Serial || !r.Truncated {
		t.Fatalf("since+limit (the oldest after since): %+v", r)
	}
	if r := get("chat-api", url.Values{"since": {strconv.FormatUint(all[1].Serial+1, 10)}}); r.Complete == nil || *r.Complete {
		t.Fatalf("since a serial never issued: %+v", r)
	}
	for _, tt := range []struct {
		ch     string
		q      url.Values
		status int
		msg    string
	}{
		{"news", nil, 404, "keeps no history"},
		{"chat-api", url.Values{"since": {"-1"}}, 400, "since"},
		{"chat-api", url.Values{"since": {"9007199254740992"}}, 400, "since"},
		{"chat-api", url.Values{"limit": {"0"}}, 400, "limit"},
		{"chat-api", url.Values{"limit": {"x"}}, 400, "limit"},
		{"bad!name", nil, 400, "Invalid channel name"},
	} {
		st, body := e.histAPI("GET", "/channels/"+tt.ch+"/history", tt.q, nil)
		if st != tt.status || !strings.Contains(body, tt.msg) {
			t.Fatalf("%s %v: %d %s, want %d %q", tt.ch, tt.q, st, body, tt.status, tt.msg)
		}
	}
	// herald: event names are Herald's (herald:recovery_failed).
	if st, body := e.histAPI("POST", "/events", nil, map[string]any{"name": "herald:recovery_failed", "channel": "chat-api", "data": "{}"}); st != 400 || !strings.Contains(body, "herald: are reserved") {
		t.Fatalf("herald: event name: %d %s", st, body)
	}
	// Signed like every API call; another app's credentials see nothing.
	if st, _ := e.apiCall("hist", "hist-key", "wrong-secret", "GET", "/channels/chat-api/history", nil, nil); st != 401 {
		t.Fatalf("bad signature: %d", st)
	}
	if st, body := e.apiCall("app-id", "app-key", "app-secret", "GET", "/channels/chat-api/history", nil, nil); st != 404 {
		t.Fatalf("another app: %d %s", st, body)
	}
}

// apiCallNoFatal is a signed API POST usable from any goroutine: it reports
// failures in its result instead of failing the test.
func (e *env) apiCallNoFatal(appID, key, secret, method, path string, body []byte) (int, string) {
	full := "/apps/" + appID + path
	q := auth.SignRequest(method, full, nil, body, key, secret, time.Now())
	req, err := http.NewRequest(method, "http://"+e.addr+full+"?"+q.Encode(), bytes.NewReader(body))
	if err != nil {
		return 0, err.Error()
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	rb, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(rb)
}
