// Package apps defines Herald's tenants (apps), their limits and defaults, the
// YAML configuration that lists them, and lookup by id and key.
package apps

import "time"

// App is one tenant. Fields mirror the snake_case YAML keys; every limit
// documents its default, applied by (*App).applyDefaults when zero.
type App struct {
	// ID identifies the app in the HTTP API (/apps/{id}/…). Required.
	ID string `yaml:"id"`
	// Key is the public key in the WebSocket URL (/app/{key}) and auth strings. Required.
	Key string `yaml:"key"`
	// Secret signs and verifies HMACs. Required; never logged.
	Secret string `yaml:"secret"`
	// Enabled: a disabled app refuses connections (4003) and API calls (403).
	// Default true (a nil pointer means true).
	Enabled *bool `yaml:"enabled"`
	// ClientEvents allows client- events on private and presence channels.
	// Default false, except for the built-in development app.
	ClientEvents bool `yaml:"client_events"`
	// MaxConnections caps concurrent connections (4004 past it). 0 = unlimited (default).
	MaxConnections int `yaml:"max_connections"`
	// AllowedOrigins, when set, lists the browser origins that may open
	// WebSockets to the app: "*", "https://app.example.com",
	// "https://*.example.com" (any subdomain), "http://localhost:3000", or a
	// bare host ("example.com": any scheme and port). Other origins are
	// refused with 4009; a handshake without Origin (not a browser) is
	// allowed. Default none: every origin.
	AllowedOrigins []string `yaml:"allowed_origins"`
	// MaxEventSize caps the data of one event in bytes, from the API (413) or a
	// client (4301). Default 10240.
	MaxEventSize int `yaml:"max_event_size"`
	// ActivityTimeout is the activity_timeout, in seconds, sent to clients; the
	// server pings a socket silent for this long and closes it (4201) 30 s later.
	// Default 120.
	ActivityTimeout int `yaml:"activity_timeout"`
	// MaxFrameSize caps one WebSocket message from a client in bytes; larger
	// frames close the connection with 1009. Default 32768.
	MaxFrameSize int `yaml:"max_frame_size"`
	// MaxChannelNameLength caps channel names. Default 164 (the documented limit); at most 200.
	MaxChannelNameLength int `yaml:"max_channel_name_length"`
	// MaxEventNameLength caps event names. Default 200.
	MaxEventNameLength int `yaml:"max_event_name_length"`
	// MaxChannelsPerEvent caps the channels of one API trigger. Default 100.
	MaxChannelsPerEvent int `yaml:"max_channels_per_event"`
	// MaxBatchSize caps the events of one batch_events call. Default 10.
	MaxBatchSize int `yaml:"max_batch_size"`
	// MaxPresenceMembers caps distinct users in a presence channel. Default 100.
	MaxPresenceMembers int `yaml:"max_presence_members"`
	// MaxUserInfoSize caps a presence member's user_info in bytes. Default 1024.
	MaxUserInfoSize int `yaml:"max_user_info_size"`
	// MaxUserIDLength caps user ids. Default 128.
	MaxUserIDLength int `yaml:"max_user_id_length"`
	// MaxChannelsPerConnection caps the channels one socket may join. Default 100.
	MaxChannelsPerConnection int `yaml:"max_channels_per_connection"`
	// ClientEventRate is client events per second per connection (burst of the
	// same size); past it, pusher:error 4301. Default 10.
	ClientEventRate int `yaml:"client_event_rate"`
	// MaxWatchlist caps a signed-in user's watchlist (4302 past it). Default 100.
	MaxWatchlist int `yaml:"max_watchlist"`
	// CacheTTL is how long cache channels keep their last event, in seconds. Default 1800.
	CacheTTL int `yaml:"cache_ttl"`
	// SubscriptionErrors also sends pusher:subscription_error (with channel) when
	// a subscription fails, besides pusher:error. Default true.
	SubscriptionErrors *bool `yaml:"subscription_errors"`
	// AuthorizedConnectionsTimeout, in seconds, when > 0 closes (4009) sockets
	// that neither sign in nor join a private/presence channel in time. Default 0 (off).
	AuthorizedConnectionsTimeout int `yaml:"authorized_connections_timeout"`
	// MaxQueuedBytes caps the bytes queued to one slow connection; past it the
	// connection is closed as a slow consumer (4100). Default 1048576.
	MaxQueuedBytes int `yaml:"max_queued_bytes"`
	// SubscriptionCount turns on subscription counting for non-presence
	// channels: pusher_internal:subscription_count to the channel's subscribers
	// on every subscribe and unsubscribe (above 100 subscribers at most one
	// broadcast per 5 s, the new subscriber is always told) and the
	// subscription_count webhook. Default false.
	SubscriptionCount bool `yaml:"subscription_count"`
	// APIRequestsPerSecond caps signed HTTP API requests per second for the
	// app on this node (token bucket, burst of the same size); past it, 429
	// with Retry-After. Default 1000; -1 = unlimited.
	APIRequestsPerSecond int `yaml:"api_requests_per_second"`
	// PushTimeout bounds how long a direct push (POST
	// /apps/{id}/users/{user_id}/events, …/sockets/{socket_id}/events) waits
	// for the nodes holding the connections before it answers with what it
	// knows (e.g. "2s"; a bare number is milliseconds; at most 10s). A
	// request may set its own with timeout_ms. Default 2s.
	PushTimeout Duration `yaml:"push_timeout"`
	// Webhooks lists the receivers of the app's webhooks (PROTOCOL.md §8);
	// see Webhook. Default none.
	Webhooks []Webhook `yaml:"webhooks"`
	// WebhookBatching, when > 0, lets one webhook request carry every event
	// queued within this window after the first (e.g. "50ms"; a bare number
	// is milliseconds; at most 1m). Default 0: exactly one event per request.
	WebhookBatching Duration `yaml:"webhook_batching"`
	// History opts channels into history and recovery: per-channel serials
	// on API events, the last events kept, replay on resubscribe (see
	// HistoryRule). The first rule whose patterns match a channel applies.
	// Default none.
	History []HistoryRule `yaml:"history"`
}

// Defaults for App limits.
const (
	DefaultMaxEventSize         = 10 * 1024
	DefaultActivityTimeout      = 120
	DefaultMaxFrameSize         = 32 * 1024
	DefaultMaxChannelNameLength = 164
	MaxChannelNameLengthCeiling = 200
	DefaultMaxEventNameLength   = 200
	DefaultMaxChannelsPerEvent  = 100
	DefaultMaxBatchSize         = 10
	DefaultMaxPresenceMembers   = 100
	DefaultMaxUserInfoSize      = 1024
	DefaultMaxUserIDLength      = 128
	DefaultMaxChannelsPerConn   = 100
	DefaultClientEventRate      = 10
	DefaultMaxWatchlist         = 100
	DefaultCacheTTL             = 1800
	DefaultMaxQueuedBytes       = 1 << 20
	DefaultAPIRequestsPerSecond = 1000
	// SubscriptionCountSmall is the largest channel whose every subscription
	// change is broadcast; larger channels broadcast at most once per
	// SubscriptionCountInterval (pusher-subscription-count seed).
	SubscriptionCountSmall       = 100
	SubscriptionCountInterval    = 5 * time.Second
	PongTimeout                  = 30 * time.Second
	DefaultAuthorizedConnTimeout = 0
)

// IsEnabled reports whether the app accepts connections and API calls.
func (a *App) IsEnabled() bool { return a.Enabled == nil || *a.Enabled }

// SendSubscriptionErrors reports whether pusher:subscription_error is sent too.
func (a *App) SendSubscriptionErrors() bool {
	return a.SubscriptionErrors == nil || *a.SubscriptionErrors
}

// ActivityTimeoutDuration returns ActivityTimeout as a duration.
func (a *App) ActivityTimeoutDuration() time.Duration {
	return time.Duration(a.ActivityTimeout) * time.Second
}

// ApplyDefaults fills every zero limit with its default.
func (a *App) ApplyDefaults() {
	def := func(p *int, v int) {
		if *p == 0 {
			*p = v
		}
	}
	def(&a.MaxEventSize, DefaultMaxEventSize)
	def(&a.ActivityTimeout, DefaultActivityTimeout)
	def(&a.MaxFrameSize, DefaultMaxFrameSize)
	def(&a.MaxChannelNameLength, DefaultMaxChannelNameLength)
	def(&a.MaxEventNameLength, DefaultMaxEventNameLength)
	def(&a.MaxChannelsPerEvent, DefaultMaxChannelsPerEvent)
	def(&a.MaxBatchSize, DefaultMaxBatchSize)
	def(&a.MaxPresenceMembers, DefaultMaxPresenceMembers)
	def(&a.MaxUserInfoSize, DefaultMaxUserInfoSize)
	def(&a.MaxUserIDLength, DefaultMaxUserIDLength)
	def(&a.MaxChannelsPerConnection, DefaultMaxChannelsPerConn)
	def(&a.ClientEventRate, DefaultClientEventRate)
	def(&a.MaxWatchlist, DefaultMaxWatchlist)
	def(&a.CacheTTL, DefaultCacheTTL)
	def(&a.MaxQueuedBytes, DefaultMaxQueuedBytes)
	def(&a.APIRequestsPerSecond, DefaultAPIRequestsPerSecond)
	a.applyHistoryDefaults()
}
