package auth

import "errors"

// Sentinels for HTTP API request verification failures. VerifyRequest returns
// an error that matches exactly one of them with errors.Is; its Error() text is
// a Pusher-style message, suitable for a 401 response body, that names the
// offending parameter and never contains the secret.
var (
	// ErrVersion: auth_version is missing, repeated or not "1.0".
	ErrVersion = errors.New("auth: bad auth_version")
	// ErrUnknownKey: auth_key is missing, repeated or not known to the lookup.
	ErrUnknownKey = errors.New("auth: unknown auth_key")
	// ErrTimestamp: auth_timestamp is missing, repeated, not an integer, or
	// not within the allowed window of the server clock.
	ErrTimestamp = errors.New("auth: bad auth_timestamp")
	// ErrBodyMD5: body_md5 is missing for a non-empty body, repeated, or not
	// the lowercase hex MD5 of the body.
	ErrBodyMD5 = errors.New("auth: bad body_md5")
	// ErrSignature: auth_signature is missing, repeated or wrong.
	ErrSignature = errors.New("auth: bad auth_signature")
)

// requestError carries a client-facing message and unwraps to a sentinel.
type requestError struct {
	kind error
	msg  string
}

func (e *requestError) Error() string { return e.msg }
func (e *requestError) Unwrap() error { return e.kind }

func fail(kind error, msg string) error { return &requestError{kind: kind, msg: msg} }
