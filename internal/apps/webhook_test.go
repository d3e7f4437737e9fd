package apps

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestLoadWebhooks(t *testing.T) {
	c, err := Load("testdata/webhooks.yaml")
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	a, m, off := c.Apps[0], c.Apps[1], c.Apps[2]
	if a.WebhookBatching.Duration != 50*time.Millisecond || m.WebhookBatching.Duration != 250*time.Millisecond || off.WebhookBatching.Duration != 0 {
		t.Errorf("webhook_batching = %v, %v, %v; want 50ms, 250ms, 0", a.WebhookBatching, m.WebhookBatching, off.WebhookBatching)
	}
	want := []Webhook{
		{URL: "https://example.com/pusher/webhooks"},
		{URL: "http://user:pass@127.0.0.1:8080/hooks?source=herald",
			EventTypes: []string{"channel_occupied", "channel_vacated"},
			Headers:    map[string]string{"Authorization": "Bearer t0ken", "X-Custom": "v"}},
	}
	if !reflect.DeepEqual(a.Webhooks, want) {
		t.Errorf("webhooks = %+v\nwant %+v", a.Webhooks, want)
	}
	if !a.Webhooks[0].Wants(WebhookClientEvent) || a.Webhooks[1].Wants(WebhookClientEvent) || !a.Webhooks[1].Wants(WebhookChannelVacated) {
		t.Error("Wants does not follow event_types")
	}
	if len(m.Webhooks) != 1 || len(m.Webhooks[0].EventTypes) != 5 || len(off.Webhooks) != 0 {
		t.Errorf("apps[1] webhooks = %+v, apps[2] = %+v", m.Webhooks, off.Webhooks)
	}
}

func TestLoadWebhookErrors(t *testing.T) {
	_, err := Load("testdata/webhook_errors.yaml")
	if !errors.Is(err, ErrInvalid) {
		t.Fatalf("error = %v, want ErrInvalid", err)
	}
	wants := []string{
		`apps[0] (id "w"): webhook_batching must be a duration such as "50ms" or a number of milliseconds; got "soon"`,
		`apps[0] (id "w"): webhooks[0].url must be an absolute http:// or https:// URL; got "ftp://example.com/x"`,
		`apps[0] (id "w"): webhooks[0].event_types[1] "channel_destroyed" is not a webhook event type (one of channel_occupied, channel_vacated, member_added, member_removed, client_event, cache_miss, subscription_count)`,
		`apps[0] (id "w"): webhooks[0].headers "content-type" is set by Herald and cannot be overridden`,
		`apps[0] (id "w"): webhooks[0].headers "X-Pusher-Signature" is set by Herald and cannot be overridden`,
		`apps[0] (id "w"): webhooks[0].headers "Bad Header" is not a valid HTTP header name`,
		`apps[0] (id "w"): webhooks[1].url is required`,
		`apps[0] (id "w"): webhooks[2].url must be an absolute http:// or https:// URL; got "https://admin:xxxxx@/nohost"`,
		`apps[1] (id "v"): webhook_batching must be between 0 (off) and 1m0s; got -5ms`,
	}
	for _, w := range wants {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error does not report %q:\n%v", w, err)
		}
	}
	if n := strings.Count(err.Error(), "\n"); n != len(wants) { // the "invalid config:" line + one per problem
		t.Errorf("got %d problems, want %d:\n%v", n, len(wants), err)
	}
	if strings.Contains(err.Error(), "hunter2") || strings.Contains(err.Error(), "forged") {
		t.Errorf("error leaks a credential or header value:\n%v", err)
	}
}

func TestValidateWebhooks(t *testing.T) {
	tests := []struct {
		name    string
		batch   string
		hooks   []Webhook
		wantErr string // substring; empty means valid
	}{
		{"none", "", nil, ""},
		{"all types", "", []Webhook{{URL: "http://h/"}}, ""},
		{"every type listed", "", []Webhook{{URL: "https://h/x", EventTypes: WebhookEventTypes()}}, ""},
		{"batching max", "1m", nil, ""},
		{"batching over max", "61s", nil, "webhook_batching must be between 0 (off) and 1m0s; got 1m1s"},
		{"batching ms", "1000", nil, ""},
		{"relative url", "", []Webhook{{URL: "/hooks"}}, `webhooks[0].url must be an absolute http:// or https:// URL; got "/hooks"`},
		{"no host", "", []Webhook{{URL: "http:///x"}}, "webhooks[0].url must be an absolute"},
		{"bad url", "", []Webhook{{URL: "http://a b/%zz"}}, "webhooks[0].url must be an absolute"},
		{"bad url with password", "", []Webhook{{URL: "http://u:secret@h/%zz"}}, "(redacted: it contains '@')"},
		{"event type case", "", []Webhook{{URL: "http://h/", EventTypes: []string{"Channel_Occupied"}}}, `"Channel_Occupied" is not a webhook event type`},
		{"x-pusher-key", "", []Webhook{{URL: "http://h/", Headers: map[string]string{"x-pusher-key": "k"}}}, `"x-pusher-key" is set by Herald`},
		{"host", "", []Webhook{{URL: "http://h/", Headers: map[string]string{"Host": "k"}}}, `"Host" is set by Herald`},
		{"duplicate header", "", []Webhook{{URL: "http://h/", Headers: map[string]string{"X-A": "1", "x-a": "2"}}}, `"x-a" duplicates "X-A"`},
		{"header newline", "", []Webhook{{URL: "http://h/", Headers: map[string]string{"X-A": "1\r\nX-B: 2"}}}, `value of "X-A" contains a control character`},
		{"header ok", "", []Webhook{{URL: "http://h/", Headers: map[string]string{"Authorization": "Bearer x", "User-Agent": "me"}}}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := &App{ID: "a", Key: "k", Secret: "s", Webhooks: tt.hooks}
			if tt.batch != "" {
				d, err := ParseDuration(tt.batch)
				if err != nil {
					t.Fatal(err)
				}
				a.WebhookBatching.Duration = d
			}
			err := (&Config{Apps: []*App{a}}).Validate()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), `apps[0] (id "a"): `) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error = %v, want %q", err, tt.wantErr)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("more than one problem:\n%v", err)
			}
			if strings.Contains(err.Error(), "secret@") {
				t.Errorf("error leaks a password:\n%v", err)
			}
		})
	}
}

func TestParseDuration(t *testing.T) {
	for in, want := range map[string]time.Duration{
		"": 0, " 0 ": 0, "50": 50 * time.Millisecond, "50ms": 50 * time.Millisecond, "1.5s": 1500 * time.Millisecond,
		"2m": 2 * time.Minute, "-3": -3 * time.Millisecond,
	} {
		got, err := ParseDuration(in)
		if err != nil || got != want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"soon", "1.5", "5 ms", "9223372036854775807", "1e3"} {
		if _, err := ParseDuration(in); err == nil {
			t.Errorf("ParseDuration(%q) accepted", in)
		}
	}
}

func TestDurationYAMLShapes(t *testing.T) {
	for doc, want := range map[string]string{
		"webhook_batching: [1]":    `got "a YAML list"`,
		"webhook_batching: {a: 1}": `got "a YAML mapping"`,
		"webhook_batching: 1.5":    `got "1.5"`,
		"webhook_batching: ~":      "",
		"webhook_batching: 0":      "",
		`webhook_batching: "20"`:   "",
	} {
		_, err := Parse([]byte("apps:\n  - id: a\n    key: k\n    secret: s\n    " + doc + "\n"))
		if want == "" {
			if err != nil {
				t.Errorf("%s: %v", doc, err)
			}
			continue
		}
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: error = %v, want %q", doc, err, want)
		}
	}
}

// FuzzParseDuration: no panics; an accepted duration's String() parses back
// to the same value.
func FuzzParseDuration(f *testing.F) {
	for _, s := range []string{"", "0", "50", "50ms", "1.5s", "-1h", "soon", "9223372036854", "1e3", " 7 "} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := ParseDuration(s)
		if err != nil {
			return
		}
		back, err := ParseDuration(d.String())
		if err != nil || back != d {
			t.Fatalf("ParseDuration(%q) = %v; String() %q parses to %v, %v", s, d, d.String(), back, err)
		}
	})
}
