// Package protocol holds the Pusher Channels wire format (protocol 7): event
// names, error and close codes, channel classification and name rules, and the
// encoding of server frames. It depends on the standard library only.
package protocol

// Code is a Pusher error or close code. Codes 4000–4099 tell clients not to
// reconnect with the same parameters, 4100–4199 to back off, 4200–4299 to
// reconnect at once; 43xx are for pusher:error replies and must never be used
// to close a socket (pusher-js treats them as fatal).
type Code int

// The codes Herald sends. Messages are the documented ones where Pusher
// documents them.
const (
	CodeTLSOnly           Code = 4000 // app accepts only TLS connections
	CodeAppNotFound       Code = 4001 // application does not exist
	CodeAppDisabled       Code = 4003 // application disabled
	CodeOverQuota         Code = 4004 // over connection quota
	CodePathNotFound      Code = 4005 // path not found
	CodeInvalidVersion    Code = 4006 // invalid version string format
	CodeUnsupportedProto  Code = 4007 // unsupported protocol version
	CodeNoProtocol        Code = 4008 // no protocol version supplied
	CodeUnauthorized      Code = 4009 // connection is unauthorized (also terminate)
	CodeOverCapacity      Code = 4100 // server over capacity (slow consumer)
	CodeReconnect         Code = 4200 // generic reconnect (shutdown, bad message format)
	CodePongTimeout       Code = 4201 // pong reply not received
	CodeClientEventLimit  Code = 4301 // client event rejected (rate, size, disabled)
	CodeWatchlistTooLarge Code = 4302 // watchlist over its limit
)

var codeMessages = map[Code]string{
	CodeTLSOnly:           "Application only accepts SSL connections, reconnect using wss://",
	CodeAppNotFound:       "Application does not exist",
	CodeAppDisabled:       "Application disabled",
	CodeOverQuota:         "Application is over connection quota",
	CodePathNotFound:      "Path not found",
	CodeInvalidVersion:    "Invalid version string format",
	CodeUnsupportedProto:  "Unsupported protocol version",
	CodeNoProtocol:        "No protocol version supplied",
	CodeUnauthorized:      "Connection is unauthorized",
	CodeOverCapacity:      "Over capacity",
	CodeReconnect:         "Reconnect",
	CodePongTimeout:       "Pong reply not received",
	CodeClientEventLimit:  "Client event rejected due to rate limit",
	CodeWatchlistTooLarge: "Watchlist is over the limit",
}

// Message returns the documented human-readable text for c.
func (c Code) Message() string {
	if m, ok := codeMessages[c]; ok {
		return m
	}
	return "Error"
}

// Event names used on the wire.
const (
	EventConnectionEstablished = "pusher:connection_established"
	EventError                 = "pusher:error"
	EventPing                  = "pusher:ping"
	EventPong                  = "pusher:pong"
	EventSubscribe             = "pusher:subscribe"
	EventUnsubscribe           = "pusher:unsubscribe"
	EventSignin                = "pusher:signin"
	EventSigninSuccess         = "pusher:signin_success"
	EventCacheMiss             = "pusher:cache_miss"
	EventSubscriptionError     = "pusher:subscription_error"

	EventSubscriptionSucceeded = "pusher_internal:subscription_succeeded"
	EventSubscriptionCount     = "pusher_internal:subscription_count"
	EventMemberAdded           = "pusher_internal:member_added"
	EventMemberRemoved         = "pusher_internal:member_removed"
	EventWatchlist             = "pusher_internal:watchlist_events"

	// ClientEventPrefix starts every client event name.
	ClientEventPrefix = "client-"
)

// Protocol versions accepted on the WebSocket endpoint.
const (
	MinProtocol = 5
	MaxProtocol = 7
)
