package apps

import (
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strings"
)

// ErrInvalid matches every problem reported by (*Config).Validate and
// NewRegistry.
var ErrInvalid = errors.New("apps: invalid config")

// ErrDuplicate matches problems about two apps sharing an id or a key. Such
// problems match ErrInvalid too.
var ErrDuplicate = errors.New("apps: duplicate app id or key")

// Limits on config values beyond those of App's own documentation.
const (
	// MaxActivityTimeout is the largest accepted activity_timeout, in seconds.
	MaxActivityTimeout = 3600
)

// validName is the charset of app ids and keys: they appear in URLs unescaped.
var validName = regexp.MustCompile(`^[A-Za-z0-9_\-.]+$`)

// FieldError is one validation problem. Error() reads
// `apps[1] (id "b"): key is required`, or `log_level must be …` for a
// top-level field. errors.Is matches ErrInvalid, and ErrDuplicate for
// duplicate ids and keys. Messages never contain a secret.
type FieldError struct {
	// Where locates the app, e.g. `apps[1] (id "b")`; empty for top-level fields.
	Where string
	// Field is the YAML key at fault, e.g. "key"; empty when the whole entry is.
	Field string
	// Problem says what is wrong, e.g. "is required".
	Problem string

	duplicate bool
}

// Error implements error.
func (e *FieldError) Error() string {
	var b strings.Builder
	if e.Where != "" {
		b.WriteString(e.Where)
		b.WriteString(": ")
	}
	if e.Field != "" {
		b.WriteString(e.Field)
		b.WriteByte(' ')
	}
	b.WriteString(e.Problem)
	return b.String()
}

// Is reports whether target is ErrInvalid, or ErrDuplicate for a duplicate.
func (e *FieldError) Is(target error) bool {
	return target == ErrInvalid || (e.duplicate && target == ErrDuplicate)
}

// Validate checks the config and reports every problem at once, joined with
// errors.Join (nil when valid): at least one app; per app, id, key and secret
// present, id and key matching ^[A-Za-z0-9_\-.]+$ and unique across apps, no
// negative limit, max_channel_name_length ≤ 200, activity_timeout in 1..3600
// when set; log_level and log_format empty or valid; path_prefix empty or
// starting, but not ending, with '/'; webhooks with an http(s) URL, known
// event types and headers that do not replace Herald's own, webhook_batching
// between 0 and 1m; history rules with channel patterns, max_events in 1..10000
// and max_age in 1s..24h. Zero limits are valid (they mean the default). Validate
// does not modify c.
func (c *Config) Validate() error {
	var errs []error
	add := func(e *FieldError) { errs = append(errs, e) }

	switch c.LogLevel {
	case "", "debug", "info", "warn", "error":
	default:
		add(&FieldError{Field: "log_level", Problem: fmt.Sprintf("must be one of debug, info, warn, error; got %q", c.LogLevel)})
	}
	switch c.LogFormat {
	case "", "text", "json":
	default:
		add(&FieldError{Field: "log_format", Problem: fmt.Sprintf("must be text or json; got %q", c.LogFormat)})
	}
	if p := c.PathPrefix; p != "" && (p[0] != '/' || p[len(p)-1] == '/') {
		add(&FieldError{Field: "path_prefix", Problem: fmt.Sprintf("must start with '/' and not end with '/' (e.g. \"/ws\"); got %q", p)})
	}
	if len(c.Apps) == 0 {
		add(&FieldError{Field: "apps", Problem: "must list at least one app"})
	}
	switch c.Role {
	case "", RoleAll, RoleEdge, RoleAPI:
	default:
		add(&FieldError{Field: "role", Problem: fmt.Sprintf("must be all, edge or api; got %q", c.Role)})
	}
	if len(c.Redis) > 0 && c.RedisCluster != "" {
		add(&FieldError{Field: "redis_cluster", Problem: "cannot be combined with redis (a list of independent shards); choose one"})
	}
	for i, u := range c.Redis {
		if !strings.HasPrefix(u, "redis://") && !strings.HasPrefix(u, "rediss://") {
			add(&FieldError{Field: fmt.Sprintf("redis[%d]", i), Problem: fmt.Sprintf("must be a redis:// or rediss:// URL; got %q", redactURL(u))})
		}
	}
	if u := c.RedisCluster; u != "" && !strings.HasPrefix(u, "redis://") && !strings.HasPrefix(u, "rediss://") {
		add(&FieldError{Field: "redis_cluster", Problem: fmt.Sprintf("must be a redis:// or rediss:// URL; got %q", redactURL(u))})
	}
	if t := c.AdminToken; t != "" && (len(t) < 16 || strings.ContainsAny(t, " \t\r\n")) {
		// Never echo the token itself.
		add(&FieldError{Field: "admin_token", Problem: fmt.Sprintf("must be at least 16 characters without spaces; got %d characters", len(t))})
	}
	validateSecurity(c, add)
	validateDrain(c, add)
	if c.NodeTimeout < 0 {
		add(&FieldError{Field: "node_timeout", Problem: fmt.Sprintf("must not be negative; got %d", c.NodeTimeout)})
	}

	ids := map[string]string{}  // id → where it was first seen
	keys := map[string]string{} // key → where it was first seen
	for i, a := range c.Apps {
		errs = append(errs, validateApp(i, a, ids, keys)...)
	}
	return errors.Join(errs...)
}

// Roles of a process.
const (
	RoleAll  = "all"
	RoleEdge = "edge"
	RoleAPI  = "api"
)

// where names app i for messages.
func where(i int, a *App) string {
	if a == nil || a.ID == "" {
		return fmt.Sprintf("apps[%d]", i)
	}
	return fmt.Sprintf("apps[%d] (id %q)", i, a.ID)
}

// checkIdentity checks id and key of app i (presence, charset, uniqueness
// against ids and keys, which it updates). Shared with NewRegistry.
func checkIdentity(i int, a *App, ids, keys map[string]string) []error {
	w := where(i, a)
	if a == nil {
		return []error{&FieldError{Where: w, Problem: "is empty"}}
	}
	var errs []error
	for _, f := range []struct {
		name, value string
		seen        map[string]string
	}{{"id", a.ID, ids}, {"key", a.Key, keys}} {
		switch {
		case f.value == "":
			errs = append(errs, &FieldError{Where: w, Field: f.name, Problem: "is required"})
		case !validName.MatchString(f.value):
			errs = append(errs, &FieldError{Where: w, Field: f.name,
				Problem: fmt.Sprintf("%q may only contain letters, digits, '_', '-' and '.'", f.value)})
		default:
			if first, dup := f.seen[f.value]; dup {
				errs = append(errs, &FieldError{Where: w, Field: f.name, duplicate: true,
					Problem: fmt.Sprintf("%q duplicates %s", f.value, first)})
			} else {
				f.seen[f.value] = w
			}
		}
	}
	return errs
}

func validateApp(i int, a *App, ids, keys map[string]string) []error {
	errs := checkIdentity(i, a, ids, keys)
	if a == nil {
		return errs
	}
	w := where(i, a)
	add := func(field, problem string) {
		errs = append(errs, &FieldError{Where: w, Field: field, Problem: problem})
	}
	if a.Secret == "" {
		add("secret", "is required")
	}
	for _, l := range limits(a) {
		if l.value < 0 {
			add(l.name, fmt.Sprintf("must not be negative; got %d", l.value))
		}
	}
	if a.APIRequestsPerSecond < -1 {
		add("api_requests_per_second", fmt.Sprintf("must be -1 (unlimited) or positive; got %d", a.APIRequestsPerSecond))
	}
	if a.MaxChannelNameLength > MaxChannelNameLengthCeiling {
		add("max_channel_name_length", fmt.Sprintf("must be at most %d; got %d", MaxChannelNameLengthCeiling, a.MaxChannelNameLength))
	}
	if a.ActivityTimeout > MaxActivityTimeout {
		add("activity_timeout", fmt.Sprintf("must be between 1 and %d seconds; got %d", MaxActivityTimeout, a.ActivityTimeout))
	}
	validateOrigins(a, add)
	validatePush(a, add)
	validateWebhooks(a, add)
	validateHistory(a, add)
	return errs
}

type limit struct {
	name  string
	value int
}

// limits lists every integer field of a with its YAML key.
func limits(a *App) []limit {
	return []limit{
		{"max_connections", a.MaxConnections},
		{"max_event_size", a.MaxEventSize},
		{"activity_timeout", a.ActivityTimeout},
		{"max_frame_size", a.MaxFrameSize},
		{"max_channel_name_length", a.MaxChannelNameLength},
		{"max_event_name_length", a.MaxEventNameLength},
		{"max_channels_per_event", a.MaxChannelsPerEvent},
		{"max_batch_size", a.MaxBatchSize},
		{"max_presence_members", a.MaxPresenceMembers},
		{"max_user_info_size", a.MaxUserInfoSize},
		{"max_user_id_length", a.MaxUserIDLength},
		{"max_channels_per_connection", a.MaxChannelsPerConnection},
		{"client_event_rate", a.ClientEventRate},
		{"max_watchlist", a.MaxWatchlist},
		{"cache_ttl", a.CacheTTL},
		{"authorized_connections_timeout", a.AuthorizedConnectionsTimeout},
		{"max_queued_bytes", a.MaxQueuedBytes},
	}
}

// redactURL hides the password of a URL quoted in an error message; any
// other URL that contains '@' (it does not parse, or the '@' is not where
// user info goes) is not shown at all.
func redactURL(u string) string {
	p, err := url.Parse(u)
	switch {
	case err == nil && p.User != nil:
		return p.Redacted()
	case strings.Contains(u, "@"):
		return "(redacted: it contains '@')"
	}
	return u
}
