package auth

import (
	"errors"
	"net/url"
	"strings"
	"testing"
	"time"
)

func FuzzVerifyAuth(f *testing.F) {
	f.Add(testKey, testSecret, testKey+":58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4", ChannelString(testSocket, "private-foobar", ""))
	f.Add(testKey, testSecret, testKey+":4708d583dada6a56435fb8bc611c77c359a31eebde13337c16ab43aa6de336ba", UserString(testSocket, `{"id":"12345"}`))
	f.Add(testKey, testSecret, testKey+":31935e7d86dba64c2a90aed31fdc61869f9b22ba9d8863bba239c03ca481bc80",
		ChannelString(testSocket, "presence-foobar", `{"user_id":10,"user_info":{"name":"Mr. Channels"}}`))
	f.Add("", "", ":", "")
	f.Add("k", "s", "k::", "a:b")
	f.Fuzz(func(t *testing.T, key, secret, auth, msg string) {
		got := VerifyAuth(key, secret, auth, msg)
		// auth splits on its first ':', so a key containing ':' never matches.
		keyOK := !strings.Contains(key, ":")
		want := keyOK && auth == key+":"+Sign(secret, msg)
		if got != want {
			t.Fatalf("VerifyAuth(%q, _, %q, %q) = %v, want %v", key, auth, msg, got, want)
		}
		if keyOK && !VerifyAuth(key, secret, key+":"+Sign(secret, msg), msg) {
			t.Fatal("VerifyAuth rejected its own signature")
		}
	})
}

func FuzzVerifyRequest(f *testing.F) {
	for _, r := range []Request{postEventsVector(), getChannelsVector()} {
		f.Add(r.Method, r.Path, r.Query.Encode(), r.Body, int64(0))
	}
	f.Add("GET", "/apps/3/channels", "filter_by_prefix=presence-a+b%26c&info=user_count&info=x&INFO=y", []byte(nil), int64(599))
	f.Add("post", "/", "auth_signature=&AUTH_KEY=x&auth_version=2.0&body_md5=", []byte("{}"), int64(-600))
	f.Add("", "", "%zz&a;b=c&&=", []byte{0xff}, int64(1<<62))
	f.Fuzz(func(t *testing.T, method, path, rawQuery string, body []byte, skew int64) {
		now := vectorTime.Add(time.Duration(skew) * time.Second)
		q, _ := url.ParseQuery(rawQuery) // keep what parsed, like net/http does

		// Arbitrary input: must not panic, and any error is one of ours.
		err := VerifyRequest(Request{Method: method, Path: path, Query: q, Body: body}, lookupTest, now, 0)
		if err != nil && !isSentinel(err) {
			t.Fatalf("VerifyRequest returned a foreign error: %v", err)
		}

		// Whatever was in the query, a request signed with SignRequest verifies,
		// directly and after a trip through the wire encoding.
		signed := SignRequest(method, path, q, body, testKey, testSecret, now)
		req := Request{Method: method, Path: path, Query: signed, Body: body}
		if err := VerifyRequest(req, lookupTest, now, 0); err != nil {
			t.Fatalf("signed request rejected: %v\nquery: %q", err, signed.Encode())
		}
		wire, perr := url.ParseQuery(signed.Encode())
		if perr != nil {
			t.Fatalf("re-parse of encoded query: %v", perr)
		}
		req.Query = wire
		if err := VerifyRequest(req, lookupTest, now, 0); err != nil {
			t.Fatalf("signed request rejected after encoding: %v\nquery: %q", err, signed.Encode())
		}
		// Signed with the wrong secret, it must not verify.
		req.Query = SignRequest(method, path, q, body, testKey, "other-secret", now)
		if err := VerifyRequest(req, lookupTest, now, 0); !errors.Is(err, ErrSignature) {
			t.Fatalf("request signed with another secret: error = %v, want ErrSignature", err)
		}
	})
}

func isSentinel(err error) bool {
	for _, s := range []error{ErrVersion, ErrUnknownKey, ErrTimestamp, ErrBodyMD5, ErrSignature} {
		if errors.Is(err, s) {
			return true
		}
	}
	return false
}
