package apps

import (
	"fmt"
	"math"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Webhook event names (PROTOCOL.md §8.3): the values of Webhook.EventTypes
// and of "name" in a webhook body.
const (
	WebhookChannelOccupied   = "channel_occupied"
	WebhookChannelVacated    = "channel_vacated"
	WebhookMemberAdded       = "member_added"
	WebhookMemberRemoved     = "member_removed"
	WebhookClientEvent       = "client_event"
	WebhookCacheMiss         = "cache_miss"
	WebhookSubscriptionCount = "subscription_count"
)

// webhookEventTypes lists every webhook event name, in documentation order.
var webhookEventTypes = []string{
	WebhookChannelOccupied, WebhookChannelVacated, WebhookMemberAdded, WebhookMemberRemoved,
	WebhookClientEvent, WebhookCacheMiss, WebhookSubscriptionCount,
}

// WebhookEventTypes returns every webhook event name, in a new slice.
func WebhookEventTypes() []string { return slices.Clone(webhookEventTypes) }

// MaxWebhookBatching is the longest accepted webhook_batching window.
const MaxWebhookBatching = time.Minute

// Webhook is one receiver of an app's webhooks (YAML: an entry of the app's
// webhooks list).
type Webhook struct {
	// URL receives the POST requests; http or https. Required. Credentials in
	// the URL are sent as basic auth and never logged.
	URL string `yaml:"url"`
	// EventTypes selects the events sent to URL (channel_occupied,
	// channel_vacated, member_added, member_removed, client_event, cache_miss,
	// subscription_count). Default: empty, meaning every type.
	EventTypes []string `yaml:"event_types"`
	// Headers are added to every request, e.g. an authorization token. They
	// cannot replace Content-Type, X-Pusher-Key, X-Pusher-Signature or the
	// transport headers (Host, Content-Length, Transfer-Encoding). Values are
	// never logged. Default none.
	Headers map[string]string `yaml:"headers"`
}

// Wants reports whether the webhook takes events named name (always true
// without event_types).
func (w *Webhook) Wants(name string) bool {
	return len(w.EventTypes) == 0 || slices.Contains(w.EventTypes, name)
}

// Duration is a length of time in the config: a Go duration string ("50ms",
// "1.5s") or a bare integer, read as milliseconds. Empty or null is 0. Text
// that is neither is kept for Validate to report with the app and field.
type Duration struct {
	time.Duration
	invalid string
}

// UnmarshalYAML implements yaml.Unmarshaler.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	*d = Duration{}
	if n.Kind != yaml.ScalarNode {
		d.invalid = "a YAML " + nodeKind(n.Kind)
		return nil
	}
	if n.Tag == "!!null" {
		return nil
	}
	v, err := ParseDuration(n.Value)
	if err != nil {
		d.invalid = n.Value
		return nil
	}
	d.Duration = v
	return nil
}

func nodeKind(k yaml.Kind) string {
	switch k {
	case yaml.SequenceNode:
		return "list"
	case yaml.MappingNode:
		return "mapping"
	case yaml.AliasNode:
		return "alias"
	}
	return "document"
}

// ParseDuration parses a config duration: a bare integer is milliseconds,
// anything else goes through time.ParseDuration. Surrounding spaces are
// ignored; the empty string is 0.
func ParseDuration(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, nil
	}
	if ms, err := strconv.ParseInt(s, 10, 64); err == nil {
		if ms > math.MaxInt64/int64(time.Millisecond) || ms < -math.MaxInt64/int64(time.Millisecond) {
			return 0, fmt.Errorf("apps: duration %q out of range", s)
		}
		return time.Duration(ms) * time.Millisecond, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("apps: %w", err)
	}
	return d, nil
}

// reservedWebhookHeaders are set by Herald on every webhook request.
var reservedWebhookHeaders = []string{
	"Content-Type", "X-Pusher-Key", "X-Pusher-Signature", "Host", "Content-Length", "Transfer-Encoding",
}

// validateWebhooks reports problems with a's webhooks and webhook_batching
// through add(field, problem).
func validateWebhooks(a *App, add func(field, problem string)) {
	if a.WebhookBatching.invalid != "" {
		add("webhook_batching", fmt.Sprintf(`must be a duration such as "50ms" or a number of milliseconds; got %q`, a.WebhookBatching.invalid))
	} else if d := a.WebhookBatching.Duration; d < 0 || d > MaxWebhookBatching {
		add("webhook_batching", fmt.Sprintf("must be between 0 (off) and %s; got %s", MaxWebhookBatching, d))
	}
	for i, w := range a.Webhooks {
		field := func(name string) string { return fmt.Sprintf("webhooks[%d].%s", i, name) }
		switch u, err := url.Parse(w.URL); {
		case w.URL == "":
			add(field("url"), "is required")
		case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
			shown := w.URL
			if err == nil {
				shown = u.Redacted()
			} else if strings.Contains(shown, "@") {
				shown = "(redacted: it contains '@')"
			}
			add(field("url"), fmt.Sprintf("must be an absolute http:// or https:// URL; got %q", shown))
		}
		for j, t := range w.EventTypes {
			if !slices.Contains(webhookEventTypes, t) {
				add(fmt.Sprintf("%s[%d]", field("event_types"), j),
					fmt.Sprintf("%q is not a webhook event type (one of %s)", t, strings.Join(webhookEventTypes, ", ")))
			}
		}
		seen := map[string]string{}
		names := make([]string, 0, len(w.Headers))
		for name := range w.Headers {
			names = append(names, name)
		}
		slices.Sort(names) // stable messages
		for _, name := range names {
			canon := http.CanonicalHeaderKey(name)
			switch {
			case !validHeaderName(name):
				add(field("headers"), fmt.Sprintf("%q is not a valid HTTP header name", name))
			case slices.Contains(reservedWebhookHeaders, canon):
				add(field("headers"), fmt.Sprintf("%q is set by Herald and cannot be overridden", name))
			case seen[canon] != "":
				add(field("headers"), fmt.Sprintf("%q duplicates %q (header names are case-insensitive)", name, seen[canon]))
			case !validHeaderValue(w.Headers[name]):
				add(field("headers"), fmt.Sprintf("value of %q contains a control character", name))
			}
			if seen[canon] == "" {
				seen[canon] = name
			}
		}
	}
}

// validHeaderName reports whether s is an RFC 9110 token.
func validHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' {
			continue
		}
		if !strings.ContainsRune("!#$%&'*+-.^_`|~", rune(c)) {
			return false
		}
	}
	return true
}

// validHeaderValue reports whether s has no control characters other than tab.
func validHeaderValue(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}
