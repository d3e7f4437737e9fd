package apps

import (
	"errors"
	"strings"
	"testing"
)

func TestOriginAllowed(t *testing.T) {
	cases := []struct {
		patterns []string
		origin   string
		want     bool
	}{
		{nil, "https://evil.example", true},             // no list: every origin
		{[]string{"https://app.example.com"}, "", true}, // no Origin: not a browser
		{[]string{"https://app.example.com"}, "https://app.example.com", true},
		{[]string{"https://app.example.com"}, "HTTPS://App.Example.COM", true},
		{[]string{"https://app.example.com"}, "http://app.example.com", false},       // scheme
		{[]string{"https://app.example.com"}, "https://app.example.com:8443", false}, // port
		{[]string{"https://app.example.com"}, "https://app.example.com.evil.io", false},
		{[]string{"https://app.example.com"}, "https://evilapp.example.com", false},
		{[]string{"https://app.example.com"}, "null", false},
		{[]string{"https://*.example.com"}, "https://a.example.com", true},
		{[]string{"https://*.example.com"}, "https://a.b.example.com", true},
		{[]string{"https://*.example.com"}, "https://example.com", false}, // apex is not a subdomain
		{[]string{"https://*.example.com"}, "https://badexample.com", false},
		{[]string{"https://*.example.com"}, "https://example.com.evil.io", false},
		{[]string{"https://*.example.com"}, "http://a.example.com", false},
		{[]string{"http://localhost:3000"}, "http://localhost:3000", true},
		{[]string{"http://localhost:3000"}, "http://localhost:3001", false},
		{[]string{"http://localhost:*"}, "http://localhost:3001", true},
		{[]string{"example.com"}, "http://example.com:8080", true}, // bare host: any scheme and port
		{[]string{"example.com"}, "https://www.example.com", false},
		{[]string{"*.example.com"}, "capacitor://x.example.com", true},
		{[]string{"http://[::1]:8080"}, "http://[::1]:8080", true},
		{[]string{"*"}, "null", true},
		{[]string{"https://a.example"}, "https://a.example/path", false}, // not an origin
		{[]string{"https://a.example"}, "https://user@a.example", false},
		{[]string{"https://a.example"}, "%zz", false},
		{[]string{"https://x.example", "https://*.example.com"}, "https://b.example.com", true},
	}
	for _, c := range cases {
		a := &App{AllowedOrigins: c.patterns}
		if got := a.OriginAllowed(c.origin); got != c.want {
			t.Errorf("allowed_origins %q, Origin %q: %v, want %v", c.patterns, c.origin, got, c.want)
		}
	}
}

func TestSecurityValidation(t *testing.T) {
	base := func() *Config {
		return &Config{Apps: []*App{{ID: "a", Key: "k", Secret: "s"}}}
	}
	for _, p := range []string{"*", "https://a.example.com", "https://*.example.com", "example.com", "*.example.com",
		"http://localhost:3000", "http://localhost:*", "capacitor://localhost", "http://[::1]:8080"} {
		c := base()
		c.Apps[0].AllowedOrigins = []string{p}
		if err := c.Validate(); err != nil {
			t.Errorf("pattern %q: %v", p, err)
		}
	}
	for _, p := range []string{"", "https://", "https://a.example.com/", "https://a.*.com", "https://*", "*.*.example.com",
		"a.example.com:80", "1http://x", "https://a b", "https://a.example.com:http", "https://user@a.example.com"} {
		c := base()
		c.Apps[0].AllowedOrigins = []string{"*", p}
		err := c.Validate()
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "allowed_origins[1]") {
			t.Errorf("pattern %q: error %v, want one naming allowed_origins[1]", p, err)
		}
	}
	c := base()
	c.TLSCert = "cert.pem"
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "tls_key") {
		t.Errorf("tls_cert without tls_key: %v", err)
	}
	c = base()
	c.MaxConnectionsPerIP = -1
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "max_connections_per_ip") {
		t.Errorf("negative max_connections_per_ip: %v", err)
	}
	// The YAML keys.
	parsed, err := Parse([]byte("tls_cert: /c.pem\ntls_key: /k.pem\nmax_connections_per_ip: 50\napps:\n  - id: a\n    key: k\n    secret: s\n    allowed_origins: [\"https://*.example.com\"]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if parsed.TLSCert != "/c.pem" || parsed.TLSKey != "/k.pem" || parsed.MaxConnectionsPerIP != 50 ||
		len(parsed.Apps[0].AllowedOrigins) != 1 {
		t.Fatalf("parsed %+v", parsed)
	}
}
