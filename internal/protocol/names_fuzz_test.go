package protocol

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"
)

// nameRe is the documented channel and user id charset, written
// independently of validNameByte.
var nameRe = regexp.MustCompile(`^[A-Za-z0-9_\-=@,.;]+$`)

// FuzzNames checks channel names, user ids and event names against an
// independent statement of the rules: ValidChannelName accepts exactly the
// charset and length limit (the only '#' being the #server-to-user- prefix
// of a valid user id), its verdict matches the classification, and a valid
// channel or any event name survives the frame encoding unchanged.
func FuzzNames(f *testing.F) {
	for _, s := range []string{"my-channel", "private-a", "presence-cache-r", "private-encrypted-x",
		"#server-to-user-42", "#server-to-user-", "#x", "a b", "é", "private-\x00", strings.Repeat("a", 165),
		"#server-to-user-" + strings.Repeat("u", 164), "client-typing", "pusher:subscribe", "\ufffd"} {
		f.Add(s, uint8(164))
	}
	f.Fuzz(func(t *testing.T, name string, limit uint8) {
		max := int(limit)
		err := ValidChannelName(name, max)
		c := Classify(name)
		if c.Name != name {
			t.Fatalf("Classify(%q).Name = %q", name, c.Name)
		}
		body, isUser := strings.CutPrefix(name, PrefixUser)
		if !isUser {
			body = name
		}
		want := body != "" && len(body) <= max && nameRe.MatchString(body)
		if (err == nil) != want {
			t.Fatalf("ValidChannelName(%q, %d) = %v, want valid=%v", name, max, err, want)
		}
		if err == nil {
			if strings.ContainsAny(name, "#") && c.Type != ChannelUser {
				t.Fatalf("valid %q has '#' but is not a user channel", name)
			}
			if c.Type == ChannelUser && ValidUserID(c.UserID(), max) != nil {
				t.Fatalf("valid user channel %q has an invalid user id %q", name, c.UserID())
			}
			if c.Type == ChannelUser && UserChannel(c.UserID()) != name {
				t.Fatalf("UserChannel(UserID(%q)) = %q", name, UserChannel(c.UserID()))
			}
		}
		if got, wantID := ValidUserID(name, max) == nil, name != "" && len(name) <= max && nameRe.MatchString(name); got != wantID {
			t.Fatalf("ValidUserID(%q, %d) valid=%v, want %v", name, max, got, wantID)
		}
		// A name checked on one path is the same name on every other: the
		// frame carries it back byte for byte (valid names are ASCII).
		var fr struct{ Event, Channel, Data string }
		if err := json.Unmarshal(Event(name, name, "{}"), &fr); err != nil {
			t.Fatalf("frame with %q: %v", name, err)
		}
		if err == nil && (fr.Channel != name || fr.Event != name) {
			t.Fatalf("valid %q came back as event %q channel %q", name, fr.Event, fr.Channel)
		}
		if c.NeedsAuth() != (c.Type == ChannelPrivate || c.Type == ChannelPresence || c.Type == ChannelEncrypted) {
			t.Fatalf("NeedsAuth of %q", name)
		}
		if c.AllowsClientEvents() && !c.NeedsAuth() {
			t.Fatalf("client events allowed on unauthenticated %q", name)
		}
	})
}
