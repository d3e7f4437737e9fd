package protocol

import (
	"errors"
	"strings"
	"testing"
)

func TestClassify(t *testing.T) {
	tests := []struct {
		name      string
		typ       ChannelType
		cache     bool
		needsAuth bool
		presence  bool
	}{
		{"my-channel", ChannelPublic, false, false, false},
		{"", ChannelPublic, false, false, false},
		{"cache-prices", ChannelPublic, true, false, false},
		{"private-orders", ChannelPrivate, false, true, false},
		{"private-cache-orders", ChannelPrivate, true, true, false},
		{"private-encrypted-x", ChannelEncrypted, false, true, false},
		{"private-encrypted-cache-x", ChannelEncrypted, true, true, false},
		{"presence-room", ChannelPresence, false, true, true},
		{"presence-cache-x", ChannelPresence, true, true, true},
		{"#server-to-user-1", ChannelUser, false, false, false},
		{"#server-to-user-", ChannelUser, false, false, false},

		// Prefixes must match exactly, dash included, at the start only.
		{"foo-private-x", ChannelPublic, false, false, false},
		{"foo-presence-x", ChannelPublic, false, false, false},
		{"foo-cache-x", ChannelPublic, false, false, false},
		{"privatex", ChannelPublic, false, false, false},
		{"private", ChannelPublic, false, false, false},
		{"presence", ChannelPublic, false, false, false},
		{"presencex-1", ChannelPublic, false, false, false},
		{"Private-x", ChannelPublic, false, false, false},
		{"PRESENCE-x", ChannelPublic, false, false, false},
		{"cache", ChannelPublic, false, false, false},
		{"private-", ChannelPrivate, false, true, false},
		{"presence-", ChannelPresence, false, true, true},
		{"cache-", ChannelPublic, true, false, false},
		{"private-encrypted", ChannelPrivate, false, true, false}, // no trailing dash: plain private
		{"private-encryptedcache-x", ChannelPrivate, false, true, false},
		{"private-encrypted-", ChannelEncrypted, false, true, false},
		{"private-encrypted-cache", ChannelEncrypted, false, true, false}, // "cache" without dash is the rest of the name
		{"private-cache", ChannelPrivate, false, true, false},
		{"presence-cache", ChannelPresence, false, true, true},
		{"private-presence-x", ChannelPrivate, false, true, false},
		{"presence-private-x", ChannelPresence, false, true, true},
		{"cache-private-x", ChannelPublic, true, false, false},
		{"cache-presence-x", ChannelPublic, true, false, false},
		{"server-to-user-1", ChannelPublic, false, false, false},
		{"#server-to-user1", ChannelPublic, false, false, false},
		{"x#server-to-user-1", ChannelPublic, false, false, false},
	}
	for _, tt := range tests {
		c := Classify(tt.name)
		if c.Name != tt.name {
			t.Errorf("Classify(%q).Name = %q", tt.name, c.Name)
		}
		if c.Type != tt.typ || c.Cache != tt.cache {
			t.Errorf("Classify(%q) = {Type:%d Cache:%v}, want {Type:%d Cache:%v}", tt.name, c.Type, c.Cache, tt.typ, tt.cache)
		}
		if got := c.NeedsAuth(); got != tt.needsAuth {
			t.Errorf("Classify(%q).NeedsAuth() = %v, want %v", tt.name, got, tt.needsAuth)
		}
		if got := c.AllowsClientEvents(); got != tt.needsAuth {
			t.Errorf("Classify(%q).AllowsClientEvents() = %v, want %v", tt.name, got, tt.needsAuth)
		}
		if got := c.IsPresence(); got != tt.presence {
			t.Errorf("Classify(%q).IsPresence() = %v, want %v", tt.name, got, tt.presence)
		}
	}
}

// A type needs a signature iff the name starts with "private-" or "presence-"
// (PROTOCOL.md §2.5).
func TestNeedsAuthIffAuthorizedPrefix(t *testing.T) {
	names := []string{"a", "private-", "presence-", "private-x", "presence-x", "cache-x", "#server-to-user-x",
		"private-encrypted-cache-x", "xprivate-", "-private-", " private-x", "presence_x"}
	for _, n := range names {
		want := strings.HasPrefix(n, "private-") || strings.HasPrefix(n, "presence-")
		if got := Classify(n).NeedsAuth(); got != want {
			t.Errorf("Classify(%q).NeedsAuth() = %v, want %v", n, got, want)
		}
	}
}

func TestUserChannel(t *testing.T) {
	for _, id := range []string{"1", "abc", "a-b_c=d@e,f.g;h", ""} {
		name := UserChannel(id)
		if name != "#server-to-user-"+id {
			t.Fatalf("UserChannel(%q) = %q", id, name)
		}
		c := Classify(name)
		if c.Type != ChannelUser {
			t.Fatalf("Classify(UserChannel(%q)).Type = %d, want ChannelUser", id, c.Type)
		}
		if got := c.UserID(); got != id {
			t.Fatalf("UserID() = %q, want %q", got, id)
		}
	}
}

func TestValidName(t *testing.T) {
	const allowed = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-=@,.;"
	for i := 0; i < 256; i++ {
		b := byte(i)
		want := strings.IndexByte(allowed, b) >= 0
		err := ValidName("a"+string([]byte{b})+"z", DefaultMaxChannelName)
		if want && err != nil {
			t.Errorf("byte %#x %q: got %v, want nil", b, b, err)
		}
		if !want && !errors.Is(err, ErrNameChars) {
			t.Errorf("byte %#x %q: got %v, want ErrNameChars", b, b, err)
		}
	}
	if err := ValidName(allowed, 200); err != nil {
		t.Errorf("whole charset: %v", err)
	}
}

func TestValidChannelName(t *testing.T) {
	max := DefaultMaxChannelName
	tests := []struct {
		name string
		max  int
		want error
	}{
		{"my-channel", max, nil},
		{"private-orders", max, nil},
		{"presence-a_b=c@d,e.f;g", max, nil},
		{"private-encrypted-cache-x", max, nil},
		{"", max, ErrNameEmpty},
		{strings.Repeat("a", 164), max, nil},
		{strings.Repeat("a", 165), max, ErrNameTooLong},
		{"private-" + strings.Repeat("a", 164-len("private-")), max, nil}, // prefix counts
		{"private-" + strings.Repeat("a", 165-len("private-")), max, ErrNameTooLong},
		{strings.Repeat("a", 200), 200, nil},
		{strings.Repeat("a", 201), 200, ErrNameTooLong},
		{"a", 0, ErrNameTooLong},
		{"has space", max, ErrNameChars},
		{"slash/x", max, ErrNameChars},
		{"colon:x", max, ErrNameChars},
		{"star*", max, ErrNameChars},
		{"#channel", max, ErrNameChars},
		{"a#b", max, ErrNameChars},
		{"#server-to-user", max, ErrNameChars},
		{"x#server-to-user-1", max, ErrNameChars},
		{"café", max, ErrNameChars},
		{"ｆｕｌｌ", max, ErrNameChars},
		{"tab\t", max, ErrNameChars},
		{"nul\x00", max, ErrNameChars},
		{"bad\xff", max, ErrNameChars},
		{"emoji-😀", max, ErrNameChars},

		// The user channel: '#' allowed only as that prefix, the id must be a
		// valid, non-empty user id.
		{"#server-to-user-1", max, nil},
		{"#server-to-user-a_b=c@d,e.f;g-h", max, nil},
		{"#server-to-user-", max, ErrNameEmpty},
		{"#server-to-user-a b", max, ErrNameChars},
		{"#server-to-user-#x", max, ErrNameChars},
		{"#server-to-user-#server-to-user-1", max, ErrNameChars},
		{"#server-to-user-é", max, ErrNameChars},
		{"#server-to-user-" + strings.Repeat("u", max), max, nil},
		{"#server-to-user-" + strings.Repeat("u", max+1), max, ErrNameTooLong},
	}
	for _, tt := range tests {
		err := ValidChannelName(tt.name, tt.max)
		if tt.want == nil && err != nil {
			t.Errorf("ValidChannelName(%q, %d) = %v, want nil", tt.name, tt.max, err)
		}
		if tt.want != nil && !errors.Is(err, tt.want) {
			t.Errorf("ValidChannelName(%q, %d) = %v, want %v", tt.name, tt.max, err, tt.want)
		}
	}
}

func TestValidUserID(t *testing.T) {
	tests := []struct {
		id   string
		max  int
		want error
	}{
		{"1", 128, nil},
		{"user-42", 128, nil},
		{"a_b=c@d,e.f;g-h", 128, nil},
		{"", 128, ErrNameEmpty},
		{strings.Repeat("9", 128), 128, nil},
		{strings.Repeat("9", 129), 128, ErrNameTooLong},
		{"#1", 128, ErrNameChars},
		{"#server-to-user-1", 200, ErrNameChars}, // no user channel rule for ids
		{"a b", 128, ErrNameChars},
		{"é", 128, ErrNameChars},
		{"a:b", 128, ErrNameChars},
		{`"1"`, 128, ErrNameChars},
	}
	for _, tt := range tests {
		err := ValidUserID(tt.id, tt.max)
		if tt.want == nil && err != nil {
			t.Errorf("ValidUserID(%q, %d) = %v, want nil", tt.id, tt.max, err)
		}
		if tt.want != nil && !errors.Is(err, tt.want) {
			t.Errorf("ValidUserID(%q, %d) = %v, want %v", tt.id, tt.max, err, tt.want)
		}
	}
}

func TestCodeMessage(t *testing.T) {
	if got := CodeAppNotFound.Message(); got != "Application does not exist" {
		t.Errorf("CodeAppNotFound.Message() = %q", got)
	}
	if got := CodeOverQuota.Message(); got != "Application is over connection quota" {
		t.Errorf("CodeOverQuota.Message() = %q", got)
	}
	if got := Code(1234).Message(); got != "Error" {
		t.Errorf("Code(1234).Message() = %q, want Error", got)
	}
	// Every code Herald may close a socket with must not be a 43xx code.
	for _, c := range []Code{CodeTLSOnly, CodeAppNotFound, CodeAppDisabled, CodeOverQuota, CodePathNotFound,
		CodeInvalidVersion, CodeUnsupportedProto, CodeNoProtocol, CodeUnauthorized, CodeOverCapacity,
		CodeReconnect, CodePongTimeout} {
		if c >= 4300 && c < 4400 {
			t.Errorf("close code %d is in the fatal 43xx range", c)
		}
		if c.Message() == "Error" {
			t.Errorf("code %d has no message", c)
		}
	}
}
