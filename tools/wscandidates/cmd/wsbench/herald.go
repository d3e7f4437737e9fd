package main

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"
)

// heraldOpts says how to run and reach Herald.
type heraldOpts struct {
	bin                string
	appID, key, secret string
	cfgDir             string // where the generated config goes ("" = the bin dir)
}

// trigger publishes one event on channel through Herald's HTTP API, signed as
// Pusher specifies: HMAC-SHA256 over "POST\n<path>\n<sorted query>".
func (h heraldOpts) trigger(ctx context.Context, base, channel, data string) error {
	body, _ := json.Marshal(map[string]any{"name": "e", "channels": []string{channel}, "data": data})
	sum := md5.Sum(body)
	path := "/apps/" + h.appID + "/events"
	query := "auth_key=" + h.key + "&auth_timestamp=" + strconv.FormatInt(time.Now().Unix(), 10) +
		"&auth_version=1.0&body_md5=" + hex.EncodeToString(sum[:])
	mac := hmac.New(sha256.New, []byte(h.secret))
	mac.Write([]byte("POST\n" + path + "\n" + query))
	url := base + path + "?" + query + "&auth_signature=" + hex.EncodeToString(mac.Sum(nil))

	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("trigger: %s: %s", resp.Status, b)
	}
	return nil
}

// makeData returns n bytes of event data.
func makeData(n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = 'x'
	}
	return string(b)
}
