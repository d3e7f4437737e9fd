package auth

import (
	"errors"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"
)

var (
	vectorTime = time.Unix(1353088179, 0)
	vectorBody = []byte(`{"name":"foo","channels":["project-3"],"data":"{\"some\":\"data\"}"}`)
)

func lookupTest(key string) (string, bool) {
	if key == testKey {
		return testSecret, true
	}
	return "", false
}

// postEventsVector is the §7.2 worked example as a Request.
func postEventsVector() Request {
	return Request{
		Method: "POST",
		Path:   "/apps/3/events",
		Query: url.Values{
			"auth_key":       {testKey},
			"auth_timestamp": {"1353088179"},
			"auth_version":   {"1.0"},
			"body_md5":       {"ec365a775a4cd0599faeb73354201b6f"},
			"auth_signature": {"da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c"},
		},
		Body: vectorBody,
	}
}

func getChannelsVector() Request {
	return Request{
		Method: "GET",
		Path:   "/apps/3/channels",
		Query: url.Values{
			"auth_key":         {testKey},
			"auth_timestamp":   {"1353088179"},
			"auth_version":     {"1.0"},
			"filter_by_prefix": {"presence-"},
			"info":             {"user_count"},
			"auth_signature":   {"16819168891cb5dfd72b5c7a5d3d602605b26c6ba1930033b5e2eeeb65010291"},
		},
	}
}

func TestVerifyRequestVectors(t *testing.T) {
	for name, req := range map[string]Request{"POST /events": postEventsVector(), "GET /channels": getChannelsVector()} {
		t.Run(name, func(t *testing.T) {
			if err := VerifyRequest(req, lookupTest, vectorTime, 0); err != nil {
				t.Fatalf("VerifyRequest: %v", err)
			}
			// Lower-case method and shuffled construction must not matter.
			req.Method = strings.ToLower(req.Method)
			if err := VerifyRequest(req, lookupTest, vectorTime, 0); err != nil {
				t.Fatalf("VerifyRequest with lower-case method: %v", err)
			}
		})
	}
}

func TestRequestStringVector(t *testing.T) {
	q := postEventsVector().Query
	want := "POST\n/apps/3/events\nauth_key=278d425bdf160c739803&auth_timestamp=1353088179&auth_version=1.0&body_md5=ec365a775a4cd0599faeb73354201b6f"
	if got := RequestString("post", "/apps/3/events", q); got != want {
		t.Errorf("RequestString = %q, want %q", got, want)
	}
}

func TestSignRequestVectors(t *testing.T) {
	got := SignRequest("POST", "/apps/3/events", nil, vectorBody, testKey, testSecret, vectorTime)
	want := postEventsVector().Query
	if got.Encode() != want.Encode() {
		t.Errorf("SignRequest = %s, want %s", got.Encode(), want.Encode())
	}
	got = SignRequest("GET", "/apps/3/channels", url.Values{"filter_by_prefix": {"presence-"}, "info": {"user_count"}}, nil, testKey, testSecret, vectorTime)
	if want := getChannelsVector().Query; got.Encode() != want.Encode() {
		t.Errorf("SignRequest = %s, want %s", got.Encode(), want.Encode())
	}
}

func TestVerifyRequestWindow(t *testing.T) {
	sec := int64(1353088179)
	tests := []struct {
		name   string
		now    int64
		window time.Duration
		ok     bool
	}{
		{"same second", sec, 0, true},
		{"599 s late", sec + 599, 0, true},
		{"600 s late", sec + 600, 0, false},
		{"601 s late", sec + 601, 0, false},
		{"599 s early", sec - 599, 0, true},
		{"600 s early (timestamp in the future)", sec - 600, 0, false},
		{"explicit window 600 s, 599 late", sec + 599, 600 * time.Second, true},
		{"explicit window 600 s, 600 late", sec + 600, 600 * time.Second, false},
		{"window 30 s, 29 late", sec + 29, 30 * time.Second, true},
		{"window 30 s, 30 late", sec + 30, 30 * time.Second, false},
		{"window 30.5 s, 30 late", sec + 30, 30*time.Second + time.Second/2, true},
		{"window 30.5 s, 31 late", sec + 31, 30*time.Second + time.Second/2, false},
		{"negative window means default", sec + 599, -1, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Sub-second parts of now must not matter.
			now := time.Unix(tt.now, 999_999_999)
			err := VerifyRequest(postEventsVector(), lookupTest, now, tt.window)
			if tt.ok && err != nil {
				t.Fatalf("want ok, got %v", err)
			}
			if !tt.ok && !errors.Is(err, ErrTimestamp) {
				t.Fatalf("want ErrTimestamp, got %v", err)
			}
		})
	}
}

func TestVerifyRequestTimestampMessage(t *testing.T) {
	err := VerifyRequest(postEventsVector(), lookupTest, vectorTime.Add(time.Hour), 0)
	want := "Timestamp expired: Given timestamp (2012-11-16T17:49:39Z) not within 600s of server time (2012-11-16T18:49:39Z)"
	if err == nil || err.Error() != want {
		t.Errorf("error = %v, want %q", err, want)
	}
}

func TestVerifyRequestSignatureMessage(t *testing.T) {
	req := getChannelsVector()
	req.Query.Set("auth_signature", "deadbeef")
	err := VerifyRequest(req, lookupTest, vectorTime, 0)
	want := `Invalid signature: you should have sent HmacSHA256Hex("GET\n/apps/3/channels\nauth_key=278d425bdf160c739803&auth_timestamp=1353088179&auth_version=1.0&filter_by_prefix=presence-&info=user_count", your_secret_key), but you sent "deadbeef"`
	if !errors.Is(err, ErrSignature) || err.Error() != want {
		t.Errorf("error = %v, want %q", err, want)
	}
}

func TestVerifyRequestFailures(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(r *Request)
		want   error
	}{
		{"missing auth_version", func(r *Request) { r.Query.Del("auth_version") }, ErrVersion},
		{"auth_version 2.0", func(r *Request) { r.Query.Set("auth_version", "2.0") }, ErrVersion},
		{"auth_version empty", func(r *Request) { r.Query.Set("auth_version", "") }, ErrVersion},
		{"auth_version repeated", func(r *Request) { r.Query.Add("auth_version", "1.0") }, ErrVersion},
		{"missing auth_key", func(r *Request) { r.Query.Del("auth_key") }, ErrUnknownKey},
		{"wrong auth_key", func(r *Request) { r.Query.Set("auth_key", "nope") }, ErrUnknownKey},
		{"auth_key repeated", func(r *Request) { r.Query.Add("auth_key", testKey) }, ErrUnknownKey},
		{"missing auth_timestamp", func(r *Request) { r.Query.Del("auth_timestamp") }, ErrTimestamp},
		{"non-integer auth_timestamp", func(r *Request) { r.Query.Set("auth_timestamp", "1353088179.5") }, ErrTimestamp},
		{"huge auth_timestamp", func(r *Request) { r.Query.Set("auth_timestamp", "9223372036854775807") }, ErrTimestamp},
		{"tiny auth_timestamp", func(r *Request) { r.Query.Set("auth_timestamp", "-9223372036854775808") }, ErrTimestamp},
		{"overflowing auth_timestamp", func(r *Request) { r.Query.Set("auth_timestamp", "99999999999999999999") }, ErrTimestamp},
		{"missing body_md5", func(r *Request) { r.Query.Del("body_md5") }, ErrBodyMD5},
		{"bad body_md5", func(r *Request) { r.Query.Set("body_md5", "99914b932bd37a50b983c5e7c90ae93b") }, ErrBodyMD5},
		{"upper-case body_md5", func(r *Request) { r.Query.Set("body_md5", "EC365A775A4CD0599FAEB73354201B6F") }, ErrBodyMD5},
		{"tampered body", func(r *Request) { r.Body = []byte(`{}`) }, ErrBodyMD5},
		{"body removed", func(r *Request) { r.Body = nil }, ErrBodyMD5},
		{"missing auth_signature", func(r *Request) { r.Query.Del("auth_signature") }, ErrSignature},
		{"auth_signature repeated", func(r *Request) { r.Query.Add("auth_signature", "x") }, ErrSignature},
		{"upper-case auth_signature", func(r *Request) {
			r.Query.Set("auth_signature", strings.ToUpper(r.Query.Get("auth_signature")))
		}, ErrSignature},
		{"added query param", func(r *Request) { r.Query.Set("info", "user_count") }, ErrSignature},
		{"other path", func(r *Request) { r.Path = "/apps/4/events" }, ErrSignature},
		{"other method", func(r *Request) { r.Method = "PUT" }, ErrSignature},
		{"prefixed path", func(r *Request) { r.Path = "/pusher/apps/3/events" }, ErrSignature},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := postEventsVector()
			tt.mutate(&req)
			err := VerifyRequest(req, lookupTest, vectorTime, 0)
			if !errors.Is(err, tt.want) {
				t.Fatalf("error = %v, want %v", err, tt.want)
			}
			if strings.Contains(err.Error(), testSecret) {
				t.Fatalf("error message leaks the secret: %v", err)
			}
		})
	}
}

func TestVerifyRequestTamperedQuery(t *testing.T) {
	req := getChannelsVector()
	req.Query.Set("filter_by_prefix", "private-")
	if err := VerifyRequest(req, lookupTest, vectorTime, 0); !errors.Is(err, ErrSignature) {
		t.Errorf("error = %v, want ErrSignature", err)
	}
}

func TestVerifyRequestNilLookup(t *testing.T) {
	if err := VerifyRequest(postEventsVector(), nil, vectorTime, 0); !errors.Is(err, ErrUnknownKey) {
		t.Errorf("error = %v, want ErrUnknownKey", err)
	}
}

func TestVerifyRequestEmptyBodyMD5(t *testing.T) {
	// An empty body with the MD5 of the empty string is accepted…
	q := SignRequest("GET", "/apps/3/channels", url.Values{"body_md5": {"ignored"}}, nil, testKey, testSecret, vectorTime)
	if q.Has("body_md5") {
		t.Fatalf("SignRequest kept body_md5 for an empty body: %v", q)
	}
	q.Set("body_md5", "d41d8cd98f00b204e9800998ecf8427e")
	q.Set("auth_signature", Sign(testSecret, RequestString("GET", "/apps/3/channels", q)))
	req := Request{Method: "GET", Path: "/apps/3/channels", Query: q}
	if err := VerifyRequest(req, lookupTest, vectorTime, 0); err != nil {
		t.Fatalf("empty body with empty MD5: %v", err)
	}
	// …any other body_md5 is not, even if signed.
	q.Set("body_md5", "99914b932bd37a50b983c5e7c90ae93b")
	q.Set("auth_signature", Sign(testSecret, RequestString("GET", "/apps/3/channels", q)))
	if err := VerifyRequest(req, lookupTest, vectorTime, 0); !errors.Is(err, ErrBodyMD5) {
		t.Fatalf("error = %v, want ErrBodyMD5", err)
	}
}

func TestRepeatedParams(t *testing.T) {
	params := url.Values{"channels[]": {"b", "a"}, "name": {"x"}}
	want := "POST\n/p\nchannels[]=b,a&name=x"
	if got := RequestString("POST", "/p", params); got != want {
		t.Errorf("RequestString = %q, want %q", got, want)
	}
	q := SignRequest("POST", "/apps/3/events", params, nil, testKey, testSecret, vectorTime)
	req := Request{Method: "POST", Path: "/apps/3/events", Query: q}
	if err := VerifyRequest(req, lookupTest, vectorTime, 0); err != nil {
		t.Fatalf("repeated params round trip: %v", err)
	}
	// Value order is significant.
	q["channels[]"] = []string{"a", "b"}
	if err := VerifyRequest(req, lookupTest, vectorTime, 0); !errors.Is(err, ErrSignature) {
		t.Fatalf("reordered values: error = %v, want ErrSignature", err)
	}
}

func TestKeyCaseFolding(t *testing.T) {
	// Names are lower-cased; names equal after folding are merged, values of
	// the byte-wise smaller original name first.
	params := url.Values{"Info": {"a"}, "info": {"b"}, "ZZ": {"z"}}
	if got, want := RequestString("get", "/p", params), "GET\n/p\ninfo=a,b&zz=z"; got != want {
		t.Errorf("RequestString = %q, want %q", got, want)
	}
	// Upper-case auth parameter names are honoured, as the signer folds them.
	q := postEventsVector().Query
	q["AUTH_KEY"] = q["auth_key"]
	delete(q, "auth_key")
	req := postEventsVector()
	req.Query = q
	if err := VerifyRequest(req, lookupTest, vectorTime, 0); err != nil {
		t.Errorf("upper-case AUTH_KEY: %v", err)
	}
	// An upper-case AUTH_SIGNATURE is excluded from the signed string too.
	q["AUTH_SIGNATURE"] = q["auth_signature"]
	delete(q, "auth_signature")
	if err := VerifyRequest(req, lookupTest, vectorTime, 0); err != nil {
		t.Errorf("upper-case AUTH_SIGNATURE: %v", err)
	}
}

func TestPercentEncodedValuesAreSignedDecoded(t *testing.T) {
	ts := strconv.FormatInt(vectorTime.Unix(), 10)
	decoded := "GET\n/apps/3/channels\nauth_key=" + testKey + "&auth_timestamp=" + ts +
		"&auth_version=1.0&filter_by_prefix=presence-a b&c/d"
	raw := "auth_key=" + testKey + "&auth_timestamp=" + ts +
		"&auth_version=1.0&filter_by_prefix=presence-a+b%26c%2Fd&auth_signature=" + Sign(testSecret, decoded)
	q, err := url.ParseQuery(raw)
	if err != nil {
		t.Fatal(err)
	}
	req := Request{Method: "GET", Path: "/apps/3/channels", Query: q}
	if err := VerifyRequest(req, lookupTest, vectorTime, 0); err != nil {
		t.Fatalf("decoded form should verify: %v", err)
	}
	// Signing the escaped form instead must fail.
	escaped := strings.Replace(decoded, "presence-a b&c/d", "presence-a+b%26c%2Fd", 1)
	q.Set("auth_signature", Sign(testSecret, escaped))
	if err := VerifyRequest(req, lookupTest, vectorTime, 0); !errors.Is(err, ErrSignature) {
		t.Fatalf("escaped form: error = %v, want ErrSignature", err)
	}
}

func TestSignRequestRoundTrip(t *testing.T) {
	params := url.Values{
		"info":             {"user_count,subscription_count"},
		"filter_by_prefix": {"presence-ü"},
		"auth_key":         {"stale"},
		"Auth_Signature":   {"stale"},
		"empty":            {""},
	}
	orig := params.Encode()
	bodies := [][]byte{nil, {}, []byte("{}"), vectorBody}
	for _, body := range bodies {
		q := SignRequest("post", "/apps/3/events", params, body, testKey, testSecret, vectorTime)
		if params.Encode() != orig {
			t.Fatal("SignRequest modified its params")
		}
		// Through the wire form and back.
		parsed, err := url.ParseQuery(q.Encode())
		if err != nil {
			t.Fatal(err)
		}
		req := Request{Method: "POST", Path: "/apps/3/events", Query: parsed, Body: body}
		if err := VerifyRequest(req, lookupTest, vectorTime.Add(10*time.Second), 0); err != nil {
			t.Errorf("body %q: %v", body, err)
		}
	}
}

func TestSignRequestDoesNotAlias(t *testing.T) {
	params := url.Values{"a": {"1", "2"}}
	q := SignRequest("GET", "/", params, nil, testKey, testSecret, vectorTime)
	q["a"][0] = "changed"
	if params["a"][0] != "1" {
		t.Error("SignRequest result shares value slices with params")
	}
}

func TestCanonicalDoesNotMutateQuery(t *testing.T) {
	q := url.Values{"A": make([]string, 1, 4), "a": {"2"}}
	q["A"][0] = "1"
	_ = RequestString("GET", "/", q)
	if got := q["A"][:2][1]; got != "" {
		t.Errorf("canonical wrote into the caller's backing array: %q", got)
	}
}
