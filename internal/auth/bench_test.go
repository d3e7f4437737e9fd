package auth

import "testing"

func BenchmarkVerifyAuth(b *testing.B) {
	msg := ChannelString(testSocket, "presence-foobar", `{"user_id":10,"user_info":{"name":"Mr. Channels"}}`)
	auth := testKey + ":31935e7d86dba64c2a90aed31fdc61869f9b22ba9d8863bba239c03ca481bc80"
	b.ReportAllocs()
	for b.Loop() {
		if !VerifyAuth(testKey, testSecret, auth, msg) {
			b.Fatal("rejected")
		}
	}
}

func BenchmarkVerifyRequest(b *testing.B) {
	req := postEventsVector()
	b.ReportAllocs()
	for b.Loop() {
		if err := VerifyRequest(req, lookupTest, vectorTime, 0); err != nil {
			b.Fatal(err)
		}
	}
}
