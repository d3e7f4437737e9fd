// Package auth computes and verifies the HMAC-SHA256 signatures of the Pusher
// Channels protocol: channel authorization and user signin strings (§3, §4.1),
// HTTP API request signatures (§7.2) and webhook signatures (§8.1). Every
// signature is the lowercase hex HMAC-SHA256 of a message keyed with the app
// secret. It depends on the standard library only, and no function ever puts a
// secret into an error or a returned string other than a signature.
package auth

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"strings"
)

// Sign returns the lowercase hex HMAC-SHA256 of msg keyed with secret
// (64 characters).
func Sign(secret, msg string) string {
	return signBytes(secret, []byte(msg))
}

// WebhookSignature returns the X-Pusher-Signature value for a webhook body:
// the lowercase hex HMAC-SHA256 of the exact body bytes keyed with secret.
func WebhookSignature(secret string, body []byte) string {
	return signBytes(secret, body)
}

func signBytes(secret string, msg []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write(msg)
	var sum [sha256.Size]byte
	return hex.EncodeToString(m.Sum(sum[:0]))
}

// ChannelString returns the string signed to authorize a private or presence
// subscription: "socket_id:channel", or "socket_id:channel:channel_data" when
// channelData is non-empty. channelData must be the exact bytes the client
// sent; it is never re-serialised.
func ChannelString(socketID, channel, channelData string) string {
	if channelData == "" {
		return socketID + ":" + channel
	}
	return socketID + ":" + channel + ":" + channelData
}

// UserString returns the string signed for pusher:signin:
// "socket_id::user::user_data", with userData exactly as received.
func UserString(socketID, userData string) string {
	return socketID + "::user::" + userData
}

// VerifyAuth reports whether auth, of the form "key:hexsig", authorizes
// stringToSign for the app with appKey and secret. auth is split on the first
// ':'; the key part must equal appKey and the signature part must equal
// Sign(secret, stringToSign), compared in constant time. Malformed input yields
// false; VerifyAuth never panics.
func VerifyAuth(appKey, secret, auth, stringToSign string) bool {
	key, sig, ok := strings.Cut(auth, ":")
	if !ok || key != appKey {
		return false
	}
	return hmac.Equal([]byte(sig), []byte(Sign(secret, stringToSign)))
}
