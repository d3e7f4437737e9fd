package testkit

import (
	"bytes"
	"io"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/heraldrt/herald/internal/auth"
)

// App is the credentials of one app for API calls and channel auth.
type App struct{ ID, Key, Secret string }

// API sends a signed HTTP API request for app to addr (host:port); path is
// relative to /apps/{id} (e.g. "/events"). body is sent as is (nil: none).
func API(t testing.TB, addr string, app App, method, path string, params url.Values, body []byte) (int, string) {
	t.Helper()
	full := "/apps/" + app.ID + path
	q := auth.SignRequest(method, full, params, body, app.Key, app.Secret, time.Now())
	req, err := http.NewRequest(method, "http://"+addr+full+"?"+q.Encode(), bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, full, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// ChannelAuth returns the auth string for a private or presence channel.
func ChannelAuth(app App, socketID, channel, channelData string) string {
	return app.Key + ":" + auth.Sign(app.Secret, auth.ChannelString(socketID, channel, channelData))
}

// UserAuth returns the auth string for pusher:signin with userData.
func UserAuth(app App, socketID, userData string) string {
	return app.Key + ":" + auth.Sign(app.Secret, auth.UserString(socketID, userData))
}
