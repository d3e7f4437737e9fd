package auth

import "testing"

// Credentials and socket id from the official docs (PROTOCOL.md Appendix A).
const (
	testKey    = "278d425bdf160c739803"
	testSecret = "7ad3773142a6692b25b8"
	testSocket = "1234.1234"
)

func TestSignVectors(t *testing.T) {
	tests := []struct {
		name, msg, want string
	}{
		{"private channel", ChannelString(testSocket, "private-foobar", ""),
			"58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4"},
		{"user signin", UserString(testSocket, `{"id":"12345"}`),
			"4708d583dada6a56435fb8bc611c77c359a31eebde13337c16ab43aa6de336ba"},
		{"presence", ChannelString(testSocket, "presence-foobar", `{"user_id":10,"user_info":{"name":"Mr. Channels"}}`),
			"31935e7d86dba64c2a90aed31fdc61869f9b22ba9d8863bba239c03ca481bc80"},
		{"presence doc value", ChannelString(testSocket, "presence-foobar", `{"user_id":10,"user_info":{"name":"Mr. Pusher"}}`),
			"afaed3695da2ffd16931f457e338e6c9f2921fa133ce7dac49f529792be6304c"},
		{"http post events", "POST\n/apps/3/events\nauth_key=278d425bdf160c739803&auth_timestamp=1353088179&auth_version=1.0&body_md5=ec365a775a4cd0599faeb73354201b6f",
			"da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c"},
		{"http get channels", "GET\n/apps/3/channels\nauth_key=278d425bdf160c739803&auth_timestamp=1353088179&auth_version=1.0&filter_by_prefix=presence-&info=user_count",
			"16819168891cb5dfd72b5c7a5d3d602605b26c6ba1930033b5e2eeeb65010291"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Sign(testSecret, tt.msg); got != tt.want {
				t.Errorf("Sign(%q) = %s, want %s", tt.msg, got, tt.want)
			}
			if !VerifyAuth(testKey, testSecret, testKey+":"+tt.want, tt.msg) {
				t.Errorf("VerifyAuth rejected the vector")
			}
		})
	}
}

func TestStrings(t *testing.T) {
	if got, want := ChannelString("1.2", "private-a", ""), "1.2:private-a"; got != want {
		t.Errorf("ChannelString = %q, want %q", got, want)
	}
	if got, want := ChannelString("1.2", "private-a", `{"x": 1}`), `1.2:private-a:{"x": 1}`; got != want {
		t.Errorf("ChannelString with data = %q, want %q", got, want)
	}
	if got, want := UserString("1.2", `{"id":"u"}`), `1.2::user::{"id":"u"}`; got != want {
		t.Errorf("UserString = %q, want %q", got, want)
	}
}

func TestWebhookSignature(t *testing.T) {
	body := []byte(`{"time_ms":1327078148132,"events":[{"name":"channel_occupied","channel":"my-channel"}]}`)
	const want = "c19001ae3963ccb13bf618e5b16ba9848e7e74df0993aa0689168e341c6833cf"
	if got := WebhookSignature(testSecret, body); got != want {
		t.Errorf("WebhookSignature = %s, want %s", got, want)
	}
	if got := Sign(testSecret, string(body)); got != want {
		t.Errorf("Sign(body) = %s, want %s", got, want)
	}
}

func TestVerifyAuthRejects(t *testing.T) {
	msg := ChannelString(testSocket, "private-foobar", "")
	good := "58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4"
	tests := []struct{ name, auth string }{
		{"empty", ""},
		{"no colon", testKey + good},
		{"signature only", good},
		{"colon then signature", ":" + good},
		{"wrong key", "someotherkey:" + good},
		{"key with trailing space", testKey + " :" + good},
		{"uppercase hex", testKey + ":" + "58DF8B0C36D6982B82C3ECF6B4662E34FE8C25BBA48F5369F135BF843651C3A4"},
		{"truncated", testKey + ":" + good[:63]},
		{"extra byte", testKey + ":" + good + "0"},
		{"extra colon segment", testKey + ":" + good + ":x"},
		{"old doc form", testKey + "::user::" + good},
		{"flipped digit", testKey + ":" + "68df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if VerifyAuth(testKey, testSecret, tt.auth, msg) {
				t.Errorf("VerifyAuth(%q) = true, want false", tt.auth)
			}
		})
	}
	if VerifyAuth(testKey, "wrong-secret", testKey+":"+good, msg) {
		t.Error("VerifyAuth accepted a signature made with another secret")
	}
	if VerifyAuth(testKey, testSecret, testKey+":"+good, msg+"x") {
		t.Error("VerifyAuth accepted a signature for another string")
	}
}
