package webhooks

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	pusher "github.com/pusher/pusher-http-go/v5"

	"github.com/heraldrt/herald/internal/apps"
	"github.com/heraldrt/herald/internal/auth"
)

// FuzzBody: whatever the strings, the body is valid JSON that decodes to
// them (invalid UTF-8 becomes U+FFFD) and has exactly the fields of its type;
// its X-Pusher-Signature is the HMAC-SHA256 of the exact bytes, which the
// official pusher-http-go validator accepts, and which fails for another
// secret or a body changed by one byte.
func FuzzBody(f *testing.F) {
	f.Add("presence-room", "client-typing", `{"on":true}`, "1.2", "42", 3, "secret")
	f.Add("c\x00\"\\", "e\u2028", "\xff\xfe", "", "", -1, "")
	f.Fuzz(func(t *testing.T, channel, name, data, socketID, userID string, count int, secret string) {
		for _, typ := range apps.WebhookEventTypes() {
			ev := &event{name: typ, channel: channel, event: name, data: data, socketID: socketID,
				userID: userID, count: count, at: time.UnixMilli(1327078148132)}
			b := body([]*event{ev, ev})
			checkSigned(t, b, secret)
			var p struct {
				TimeMs int64            `json:"time_ms"`
				Events []map[string]any `json:"events"`
			}
			if err := json.Unmarshal(b, &p); err != nil {
				t.Fatalf("%s: invalid JSON %q: %v", typ, b, err)
			}
			if p.TimeMs != 1327078148132 || len(p.Events) != 2 {
				t.Fatalf("%s: body %s", typ, b)
			}
			got := p.Events[0]
			want := map[string]any{"name": typ, "channel": valid(channel)}
			switch typ {
			case apps.WebhookMemberAdded, apps.WebhookMemberRemoved:
				want["user_id"] = valid(userID)
			case apps.WebhookClientEvent:
				want["event"], want["data"], want["socket_id"] = valid(name), valid(data), valid(socketID)
				if userID != "" {
					want["user_id"] = valid(userID)
				}
			case apps.WebhookSubscriptionCount:
				want["subscription_count"] = float64(count)
			}
			if len(got) != len(want) {
				t.Fatalf("%s: fields %v, want %v", typ, got, want)
			}
			for k, v := range want {
				if got[k] != v {
					t.Fatalf("%s: %s = %#v, want %#v", typ, k, got[k], v)
				}
			}
		}
	})
}

// checkSigned verifies the webhook signature of body against an independent
// HMAC and the official Go SDK's validator.
func checkSigned(t *testing.T, body []byte, secret string) {
	t.Helper()
	sig := auth.WebhookSignature(secret, body)
	m := hmac.New(sha256.New, []byte(secret))
	m.Write(body)
	if want := hex.EncodeToString(m.Sum(nil)); sig != want {
		t.Fatalf("signature %s, want %s", sig, want)
	}
	sdk := pusher.Client{Key: "key", Secret: secret}
	h := http.Header{"X-Pusher-Key": {"key"}, "X-Pusher-Signature": {sig}}
	if _, err := sdk.Webhook(h, body); err != nil && !strings.Contains(string(body), "private-encrypted-") {
		t.Fatalf("pusher-http-go rejects the webhook: %v", err)
	}
	if _, err := (&pusher.Client{Key: "key", Secret: secret + "x"}).Webhook(h, body); err == nil {
		t.Fatal("pusher-http-go accepts the signature with another secret")
	}
	changed := append([]byte(nil), body...)
	changed[len(changed)/2] ^= 1
	if auth.WebhookSignature(secret, changed) == sig {
		t.Fatal("a one-byte change keeps the signature")
	}
}

// valid replaces each invalid UTF-8 byte with U+FFFD, as encoding/json does.
func valid(s string) string {
	var b strings.Builder
	for _, r := range s { // ranging over a string yields U+FFFD per invalid byte
		b.WriteRune(r)
	}
	return b.String()
}

func BenchmarkBody(b *testing.B) {
	ev := &event{name: apps.WebhookClientEvent, channel: "presence-room", event: "client-typing",
		data: `{"on":true,"text":"hello there"}`, socketID: "123.456", userID: "42", at: time.Now()}
	b.ReportAllocs()
	for b.Loop() {
		_ = body([]*event{ev})
	}
}

// BenchmarkObserveNoWebhooks is the cost for apps without webhooks: every
// client event of every app pays it.
func BenchmarkObserveNoWebhooks(b *testing.B) {
	d := New(Config{}, []*apps.App{{ID: "a", Key: "k", Secret: "s"}}, nil)
	defer d.Close(b.Context())
	b.ReportAllocs()
	for b.Loop() {
		d.ClientEvent("a", "private-c", "client-e", "x", "1.1", "")
	}
}
