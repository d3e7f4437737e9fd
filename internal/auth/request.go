package auth

import (
	"crypto/hmac"
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Names and values of the HTTP API authentication parameters (§7.2).
const (
	ParamKey       = "auth_key"
	ParamTimestamp = "auth_timestamp"
	ParamVersion   = "auth_version"
	ParamBodyMD5   = "body_md5"
	ParamSignature = "auth_signature"
	// Version is the only supported auth_version.
	Version = "1.0"
	// DefaultWindow is the tolerated clock difference between auth_timestamp
	// and the server clock; a difference of DefaultWindow or more fails.
	DefaultWindow = 600 * time.Second
)

// Request is the signed part of an HTTP API request.
type Request struct {
	// Method is the HTTP method; it is upper-cased before signing.
	Method string
	// Path is the decoded request path (Go: r.URL.Path) without any mount
	// prefix, e.g. "/apps/3/events".
	Path string
	// Query holds the decoded query parameters, auth parameters included.
	Query url.Values
	// Body is the raw request body; nil or empty for none.
	Body []byte
}

// VerifyRequest checks the signature of an HTTP API request (§7.2), in this
// order, and returns the first failure:
//
//  1. auth_version is present and equals "1.0" (else ErrVersion);
//  2. auth_key is present and lookup knows it (else ErrUnknownKey);
//  3. auth_timestamp is present, a base-10 integer, and within window of now:
//     |now − ts| < window, in whole seconds (else ErrTimestamp);
//  4. if the body is non-empty, body_md5 is present; if body_md5 is present
//     it equals the lowercase hex MD5 of the body (else ErrBodyMD5);
//  5. auth_signature equals Sign(secret, RequestString(...)), compared in
//     constant time (else ErrSignature).
//
// Parameter names are matched after lower-casing, as they are when signing;
// each auth parameter must appear exactly once. window <= 0 means
// DefaultWindow. A nil lookup knows no key. The returned error matches one
// sentinel with errors.Is and its text is a Pusher-style message that never
// contains the secret. VerifyRequest never panics.
func VerifyRequest(req Request, lookup func(key string) (secret string, ok bool), now time.Time, window time.Duration) error {
	if window <= 0 {
		window = DefaultWindow
	}
	params := canonical(req.Query)

	version, err := single(params, ParamVersion, ErrVersion, "Version required")
	if err != nil {
		return err
	}
	if version != Version {
		return fail(ErrVersion, fmt.Sprintf("Version not supported: auth_version must be %q, got %q", Version, version))
	}

	key, err := single(params, ParamKey, ErrUnknownKey, "Authentication key required")
	if err != nil {
		return err
	}
	var secret string
	ok := false
	if lookup != nil {
		secret, ok = lookup(key)
	}
	if !ok {
		return fail(ErrUnknownKey, fmt.Sprintf("Invalid authentication key: %q", key))
	}

	tsText, err := single(params, ParamTimestamp, ErrTimestamp, "Timestamp required")
	if err != nil {
		return err
	}
	ts, perr := strconv.ParseInt(tsText, 10, 64)
	if perr != nil {
		return fail(ErrTimestamp, fmt.Sprintf("Timestamp invalid: auth_timestamp must be integer Unix seconds, got %q", tsText))
	}
	if !withinWindow(now.Unix(), ts, window) {
		return fail(ErrTimestamp, fmt.Sprintf("Timestamp expired: Given timestamp (%s) not within %s of server time (%s)",
			formatUnix(ts), formatWindow(window), formatUnix(now.Unix())))
	}

	if err := checkBodyMD5(params, req.Body); err != nil {
		return err
	}

	sig, err := single(params, ParamSignature, ErrSignature, "Signature required")
	if err != nil {
		return err
	}
	toSign := buildString(req.Method, req.Path, params)
	if !hmac.Equal([]byte(sig), []byte(Sign(secret, toSign))) {
		return fail(ErrSignature, fmt.Sprintf("Invalid signature: you should have sent HmacSHA256Hex(%q, your_secret_key), but you sent %q", toSign, sig))
	}
	return nil
}

// SignRequest returns a copy of params with auth_key, auth_timestamp
// (ts in Unix seconds), auth_version "1.0", body_md5 (only when body is
// non-empty) and auth_signature set, so that VerifyRequest accepts the request
// with the same method, path and body. Any parameter whose lower-cased name is
// one of those five is dropped from params first. params is not modified.
func SignRequest(method, path string, params url.Values, body []byte, key, secret string, ts time.Time) url.Values {
	out := make(url.Values, len(params)+5)
	for k, v := range params {
		if isAuthParam(strings.ToLower(k)) {
			continue
		}
		out[k] = slices.Clone(v)
	}
	out.Set(ParamKey, key)
	out.Set(ParamTimestamp, strconv.FormatInt(ts.Unix(), 10))
	out.Set(ParamVersion, Version)
	if len(body) > 0 {
		out.Set(ParamBodyMD5, md5Hex(body))
	}
	out.Set(ParamSignature, Sign(secret, RequestString(method, path, out)))
	return out
}

// RequestString returns the string signed for an HTTP API request:
// UPPER(method) + "\n" + path + "\n" + params, where params are all query
// parameters except auth_signature, names lower-cased, sorted by name in byte
// order, joined as name=value with '&', values decoded (not URL-escaped).
//
// Repeated parameters, which Pusher does not specify (Appendix B), contribute
// one name=value pair whose value is all their values joined with ',' in
// order, as Laravel Reverb does; names that differ only in case are merged
// the same way, values of the byte-wise smaller original name first.
// Parameters with no values are skipped.
func RequestString(method, path string, params url.Values) string {
	return buildString(method, path, canonical(params))
}

// param is one lower-cased query parameter with all its values.
type param struct {
	name   string
	values []string
}

// canonical lower-cases, merges and sorts query parameters; auth_signature is
// kept (single needs it) and skipped by buildString.
func canonical(q url.Values) []param {
	type entry struct{ lower, orig string }
	entries := make([]entry, 0, len(q))
	for k, v := range q {
		if len(v) == 0 {
			continue
		}
		entries = append(entries, entry{strings.ToLower(k), k})
	}
	slices.SortFunc(entries, func(a, b entry) int {
		if c := strings.Compare(a.lower, b.lower); c != 0 {
			return c
		}
		return strings.Compare(a.orig, b.orig)
	})
	out := make([]param, 0, len(entries))
	for _, e := range entries {
		if n := len(out); n > 0 && out[n-1].name == e.lower {
			out[n-1].values = append(slices.Clip(out[n-1].values), q[e.orig]...)
			continue
		}
		out = append(out, param{name: e.lower, values: q[e.orig]})
	}
	return out
}

func buildString(method, path string, params []param) string {
	var b strings.Builder
	n := len(method) + len(path) + 2
	for _, p := range params {
		n += len(p.name) + 2
		for _, v := range p.values {
			n += len(v) + 1
		}
	}
	b.Grow(n)
	b.WriteString(strings.ToUpper(method))
	b.WriteByte('\n')
	b.WriteString(path)
	b.WriteByte('\n')
	first := true
	for _, p := range params {
		if p.name == ParamSignature {
			continue
		}
		if !first {
			b.WriteByte('&')
		}
		first = false
		b.WriteString(p.name)
		b.WriteByte('=')
		for i, v := range p.values {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(v)
		}
	}
	return b.String()
}

// lookupParam returns the values of the lower-cased name in sorted params.
func lookupParam(params []param, name string) []string {
	i, found := slices.BinarySearchFunc(params, name, func(p param, n string) int {
		return strings.Compare(p.name, n)
	})
	if !found {
		return nil
	}
	return params[i].values
}

// single returns the only value of name, or an error of kind: missingMsg when
// absent, a duplication message when repeated.
func single(params []param, name string, kind error, missingMsg string) (string, error) {
	v := lookupParam(params, name)
	switch len(v) {
	case 0:
		return "", fail(kind, missingMsg)
	case 1:
		return v[0], nil
	default:
		return "", fail(kind, fmt.Sprintf("Parameter %s given %d times; it must appear once", name, len(v)))
	}
}

func checkBodyMD5(params []param, body []byte) error {
	v := lookupParam(params, ParamBodyMD5)
	switch {
	case len(v) == 0 && len(body) == 0:
		return nil
	case len(v) == 0:
		return fail(ErrBodyMD5, "Body MD5 required: body_md5 must be the lowercase hex MD5 of the request body")
	case len(v) > 1:
		return fail(ErrBodyMD5, fmt.Sprintf("Parameter %s given %d times; it must appear once", ParamBodyMD5, len(v)))
	}
	if want := md5Hex(body); v[0] != want {
		return fail(ErrBodyMD5, fmt.Sprintf("Body MD5 mismatch: body_md5 is %q but the body's MD5 is %q", v[0], want))
	}
	return nil
}

func isAuthParam(lower string) bool {
	switch lower {
	case ParamKey, ParamTimestamp, ParamVersion, ParamBodyMD5, ParamSignature:
		return true
	}
	return false
}

func md5Hex(b []byte) string {
	sum := md5.Sum(b)
	return hex.EncodeToString(sum[:])
}

// withinWindow reports whether |now − ts| < window, in whole seconds, without
// overflow for any int64 inputs.
func withinWindow(now, ts int64, window time.Duration) bool {
	var diff uint64 // |now − ts| always fits in uint64
	if ts >= now {
		diff = uint64(ts) - uint64(now)
	} else {
		diff = uint64(now) - uint64(ts)
	}
	// |d| < window ⇔ d < ceil(window) for whole seconds d.
	limit := uint64(window / time.Second)
	if window%time.Second != 0 {
		limit++
	}
	return diff < limit
}

// Unix seconds of 0001-01-01 and 9999-12-31T23:59:59Z: the range RFC 3339 prints.
const minISO, maxISO = -62135596800, 253402300799

func formatUnix(s int64) string {
	if s < minISO || s > maxISO {
		return strconv.FormatInt(s, 10)
	}
	return time.Unix(s, 0).UTC().Format(time.RFC3339)
}

func formatWindow(w time.Duration) string {
	if w%time.Second == 0 {
		return strconv.FormatInt(int64(w/time.Second), 10) + "s"
	}
	return w.String()
}
