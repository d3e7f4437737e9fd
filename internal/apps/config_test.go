package apps

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestLoadValid(t *testing.T) {
	c, err := Load("testdata/valid.yaml")
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if c.Addr != ":6001" || c.PathPrefix != "/ws" || c.LogLevel != "debug" || c.LogFormat != "json" {
		t.Errorf("top-level fields = %+v", c)
	}
	if len(c.Apps) != 2 {
		t.Fatalf("got %d apps, want 2", len(c.Apps))
	}
	a, b := c.Apps[0], c.Apps[1]
	if a.ID != "1" || a.Key != "first-key" || a.Secret != "first-secret" || !a.ClientEvents {
		t.Errorf("apps[0] = %+v", a)
	}
	if a.MaxConnections != 500 || a.ActivityTimeout != 60 || a.MaxChannelNameLength != 200 {
		t.Errorf("apps[0] explicit limits lost: %+v", a)
	}
	if a.MaxEventSize != DefaultMaxEventSize {
		t.Errorf("apps[0].MaxEventSize = %d, want default %d", a.MaxEventSize, DefaultMaxEventSize)
	}
	if !a.IsEnabled() || a.SendSubscriptionErrors() {
		t.Errorf("apps[0] enabled=%v subscription_errors=%v, want true, false", a.IsEnabled(), a.SendSubscriptionErrors())
	}
	if b.IsEnabled() || b.ClientEvents || !b.SendSubscriptionErrors() {
		t.Errorf("apps[1] = %+v", b)
	}
}

func TestParseDefaults(t *testing.T) {
	c, err := Load("testdata/minimal.yaml")
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if c.Addr != "" || c.PathPrefix != "" || c.LogLevel != DefaultLogLevel || c.LogFormat != DefaultLogFormat {
		t.Errorf("top-level defaults = %+v", c)
	}
	got := c.Apps[0]
	want := &App{ID: "app-id", Key: "app-key", Secret: "app-secret"}
	want.ApplyDefaults()
	if !reflect.DeepEqual(got, want) {
		t.Errorf("app = %+v\nwant  %+v", got, want)
	}
	if got.ClientEvents {
		t.Error("ClientEvents defaults to true for a configured app; want false")
	}
	// Spot-check documented defaults, so a change to app.go is noticed.
	checks := map[string][2]int{
		"max_event_size":              {got.MaxEventSize, 10240},
		"activity_timeout":            {got.ActivityTimeout, 120},
		"max_frame_size":              {got.MaxFrameSize, 32768},
		"max_channel_name_length":     {got.MaxChannelNameLength, 164},
		"max_presence_members":        {got.MaxPresenceMembers, 100},
		"max_user_info_size":          {got.MaxUserInfoSize, 1024},
		"max_queued_bytes":            {got.MaxQueuedBytes, 1 << 20},
		"max_connections (unlimited)": {got.MaxConnections, 0},
	}
	for name, c := range checks {
		if c[0] != c[1] {
			t.Errorf("%s = %d, want %d", name, c[0], c[1])
		}
	}
}

func TestParseUnknownKeys(t *testing.T) {
	for _, tt := range []struct{ file, key string }{
		{"testdata/unknown_top_key.yaml", "listen"},
		{"testdata/unknown_app_key.yaml", "clinet_events"},
	} {
		_, err := Load(tt.file)
		if !errors.Is(err, ErrParse) {
			t.Errorf("%s: error = %v, want ErrParse", tt.file, err)
			continue
		}
		if !strings.Contains(err.Error(), tt.key) || !strings.Contains(err.Error(), tt.file) {
			t.Errorf("%s: error %q should name the key %q and the file", tt.file, err, tt.key)
		}
	}
}

func TestParseMultipleErrors(t *testing.T) {
	_, err := Load("testdata/many_errors.yaml")
	if !errors.Is(err, ErrInvalid) || !errors.Is(err, ErrDuplicate) {
		t.Fatalf("error = %v, want ErrInvalid and ErrDuplicate", err)
	}
	for _, want := range []string{
		`log_level must be one of debug, info, warn, error; got "verbose"`,
		`log_format must be text or json; got "xml"`,
		`apps[1] (id "b"): key is required`,
		`apps[2] (id "a"): id "a" duplicates apps[0] (id "a")`,
		`apps[2] (id "a"): key "k" duplicates apps[0] (id "a")`,
		`apps[2] (id "a"): secret is required`,
		`apps[3] (id "bad id"): id "bad id" may only contain`,
		`apps[3] (id "bad id"): key "k/2" may only contain`,
		`apps[3] (id "bad id"): max_connections must not be negative; got -1`,
		`apps[3] (id "bad id"): max_channel_name_length must be at most 200; got 201`,
		`apps[3] (id "bad id"): activity_timeout must be between 1 and 3600 seconds; got 3601`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not report %q:\n%v", want, err)
		}
	}
	if strings.Contains(err.Error(), "secret: s") || strings.Contains(err.Error(), `"s"`) {
		t.Errorf("error leaks a secret:\n%v", err)
	}
}

func TestValidateProblems(t *testing.T) {
	base := func() *Config {
		return &Config{Apps: []*App{{ID: "a", Key: "ka", Secret: "s"}, {ID: "b", Key: "kb", Secret: "s"}}}
	}
	tests := []struct {
		name   string
		mutate func(c *Config)
		want   []string // substrings; empty means valid
	}{
		{"valid", func(*Config) {}, nil},
		{"no apps", func(c *Config) { c.Apps = nil }, []string{"apps must list at least one app"}},
		{"nil app", func(c *Config) { c.Apps[1] = nil }, []string{"apps[1]: is empty"}},
		{"missing id", func(c *Config) { c.Apps[1].ID = "" }, []string{"apps[1]: id is required"}},
		{"missing key", func(c *Config) { c.Apps[1].Key = "" }, []string{`apps[1] (id "b"): key is required`}},
		{"missing secret", func(c *Config) { c.Apps[0].Secret = "" }, []string{`apps[0] (id "a"): secret is required`}},
		{"missing all", func(c *Config) { c.Apps[1] = &App{} }, []string{
			"apps[1]: id is required", "apps[1]: key is required", "apps[1]: secret is required"}},
		{"duplicate id", func(c *Config) { c.Apps[1].ID = "a" }, []string{`apps[1] (id "a"): id "a" duplicates apps[0] (id "a")`}},
		{"duplicate key", func(c *Config) { c.Apps[1].Key = "ka" }, []string{`apps[1] (id "b"): key "ka" duplicates apps[0] (id "a")`}},
		{"id with slash", func(c *Config) { c.Apps[0].ID = "a/b" }, []string{`id "a/b" may only contain`}},
		{"key with space", func(c *Config) { c.Apps[0].Key = "k a" }, []string{`key "k a" may only contain`}},
		{"key with unicode", func(c *Config) { c.Apps[0].Key = "kä" }, []string{`may only contain`}},
		{"negative limit", func(c *Config) { c.Apps[0].CacheTTL = -5 }, []string{"cache_ttl must not be negative; got -5"}},
		{"negative activity timeout", func(c *Config) { c.Apps[0].ActivityTimeout = -1 }, []string{"activity_timeout must not be negative"}},
		{"activity timeout 1", func(c *Config) { c.Apps[0].ActivityTimeout = 1 }, nil},
		{"activity timeout 3600", func(c *Config) { c.Apps[0].ActivityTimeout = 3600 }, nil},
		{"activity timeout 3601", func(c *Config) { c.Apps[0].ActivityTimeout = 3601 }, []string{"activity_timeout must be between 1 and 3600"}},
		{"channel name 200", func(c *Config) { c.Apps[0].MaxChannelNameLength = 200 }, nil},
		{"channel name 201", func(c *Config) { c.Apps[0].MaxChannelNameLength = 201 }, []string{"max_channel_name_length must be at most 200"}},
		{"log level", func(c *Config) { c.LogLevel = "INFO" }, []string{"log_level must be one of"}},
		{"log levels valid", func(c *Config) { c.LogLevel = "warn"; c.LogFormat = "json" }, nil},
		{"log format", func(c *Config) { c.LogFormat = "logfmt" }, []string{"log_format must be text or json"}},
		{"path prefix ok", func(c *Config) { c.PathPrefix = "/pusher/v1" }, nil},
		{"path prefix relative", func(c *Config) { c.PathPrefix = "ws" }, []string{"path_prefix must start with '/'"}},
		{"path prefix trailing slash", func(c *Config) { c.PathPrefix = "/ws/" }, []string{"path_prefix must start with '/'"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := base()
			tt.mutate(c)
			err := c.Validate()
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error = %v, want ErrInvalid", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not contain %q:\n%v", w, err)
				}
			}
			if n := len(strings.Split(err.Error(), "\n")); n != len(tt.want) {
				t.Errorf("got %d problems, want %d:\n%v", n, len(tt.want), err)
			}
		})
	}
}

func TestValidateDuplicateIsErrDuplicate(t *testing.T) {
	c := &Config{Apps: []*App{{ID: "a", Key: "k", Secret: "s"}, {ID: "a", Key: "k2", Secret: "s"}}}
	err := c.Validate()
	if !errors.Is(err, ErrDuplicate) {
		t.Fatalf("error = %v, want ErrDuplicate", err)
	}
	var fe *FieldError
	if !errors.As(err, &fe) || fe.Field != "id" || fe.Where != `apps[1] (id "a")` {
		t.Errorf("FieldError = %+v", fe)
	}
	c.Apps[1].ID = "b"
	c.Apps[1].Secret = ""
	if err := c.Validate(); errors.Is(err, ErrDuplicate) {
		t.Errorf("missing secret reported as duplicate: %v", err)
	}
}

func TestParseEmptyAndMalformed(t *testing.T) {
	for _, tt := range []struct {
		name, doc string
		want      error
	}{
		{"empty", "", ErrEmpty},
		{"comments only", "# nothing\n", ErrEmpty},
		{"whitespace", "  \n\n", ErrEmpty},
		{"null document", "~\n", ErrInvalid},
		{"empty mapping", "{}\n", ErrInvalid},
		{"scalar", "hello\n", ErrParse},
		{"list", "- a\n", ErrParse},
		{"bad syntax", "apps: [\n", ErrParse},
		{"wrong type", "apps:\n  - id: a\n    key: k\n    secret: s\n    max_connections: lots\n", ErrParse},
		{"duplicate yaml key", "addr: a\naddr: b\napps: []\n", ErrParse},
		{"two documents", "apps:\n  - {id: a, key: k, secret: s}\n---\napps: []\n", ErrParse},
		{"apps not a list", "apps: {id: a}\n", ErrParse},
		{"null app", "apps:\n  -\n", ErrInvalid},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse([]byte(tt.doc))
			if !errors.Is(err, tt.want) || c != nil {
				t.Fatalf("Parse = %v, %v; want nil, %v", c, err, tt.want)
			}
		})
	}
}

func TestParseSecondDocumentEmpty(t *testing.T) {
	// A trailing document separator with nothing after it is harmless.
	for _, doc := range []string{
		"apps:\n  - {id: a, key: k, secret: s}\n---\n",
		"apps:\n  - {id: a, key: k, secret: s}\n---\n# comment\n---\n~\n",
	} {
		if _, err := Parse([]byte(doc)); err != nil {
			t.Errorf("Parse(%q): %v", doc, err)
		}
	}
}

func TestLoadMissingFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nope.yaml")
	_, err := Load(path)
	if !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), path) {
		t.Errorf("error = %v, want a not-exist error naming %s", err, path)
	}
}

func TestLoadErrorNamesPath(t *testing.T) {
	_, err := Load("testdata/many_errors.yaml")
	if err == nil || !strings.HasPrefix(err.Error(), "testdata/many_errors.yaml: ") {
		t.Errorf("error = %v, want it prefixed with the path", err)
	}
}

func TestDefaultApp(t *testing.T) {
	a := DefaultApp(DevAppID, DevAppKey, DevAppSecret)
	if a.ID != "app-id" || a.Key != "app-key" || a.Secret != "app-secret" {
		t.Errorf("credentials = %q %q %q", a.ID, a.Key, a.Secret)
	}
	if !a.ClientEvents || !a.IsEnabled() {
		t.Errorf("dev app: ClientEvents=%v enabled=%v, want both true", a.ClientEvents, a.IsEnabled())
	}
	if a.ActivityTimeout != DefaultActivityTimeout || a.MaxChannelNameLength != DefaultMaxChannelNameLength {
		t.Errorf("defaults not applied: %+v", a)
	}
	if err := (&Config{Apps: []*App{a}}).Validate(); err != nil {
		t.Errorf("dev app does not validate: %v", err)
	}
}

func TestAdminTokenValidated(t *testing.T) {
	base := "apps:\n  - {id: a, key: k, secret: s}\n"
	if _, err := Parse([]byte(base + "admin_token: short\n")); err == nil || !strings.Contains(err.Error(), "admin_token") {
		t.Fatalf("short token: err = %v, want an admin_token error", err)
	} else if strings.Contains(err.Error(), "short") {
		t.Fatalf("the error echoes the token: %v", err)
	}
	c, err := Parse([]byte(base + "admin_token: 0123456789abcdef0123\ninternal_addr: 127.0.0.1:9999\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.AdminToken != "0123456789abcdef0123" || c.InternalAddr != "127.0.0.1:9999" {
		t.Fatalf("got %+v", c)
	}
}

func TestRedisURLErrorsHidePasswords(t *testing.T) {
	base := "apps:\n  - {id: a, key: k, secret: s}\n"
	for _, doc := range []string{
		"redis: [\"http://:s3cret@redis-a:6379\"]\n",
		"redis: [\"redis//:s3cret@redis-a:6379\"]\n",
		"redis_cluster: \"tcp://:s3cret@redis-a:7000\"\n",
		"redis_cluster: \"::s3cret@[redis\"\n",
	} {
		_, err := Parse([]byte(base + doc))
		if err == nil || !strings.Contains(err.Error(), "redis") {
			t.Errorf("%s: err = %v, want a redis error", doc, err)
		} else if strings.Contains(err.Error(), "s3cret") {
			t.Errorf("%s: the error shows the password: %v", doc, err)
		}
	}
}
