package apps

import (
	"fmt"
	"net/url"
	"strings"
)

// Security settings: TLS on the public listener, connections per source
// address, and each app's Origin allow-list.

// DefaultMaxConnectionsPerIP is Config.MaxConnectionsPerIP's default:
// unlimited, because behind a load balancer or proxy every connection comes
// from the proxy's address. Set it when Herald faces clients directly.
const DefaultMaxConnectionsPerIP = 0

// validateSecurity checks the top-level TLS and per-address settings.
func validateSecurity(c *Config, add func(*FieldError)) {
	if (c.TLSCert == "") != (c.TLSKey == "") {
		add(&FieldError{Field: "tls_cert", Problem: "and tls_key must be given together (PEM certificate chain and private key files)"})
	}
	if c.MaxConnectionsPerIP < 0 {
		add(&FieldError{Field: "max_connections_per_ip", Problem: fmt.Sprintf("must not be negative (0 = unlimited); got %d", c.MaxConnectionsPerIP)})
	}
}

// validateOrigins checks the app's allowed_origins patterns.
func validateOrigins(a *App, add func(field, problem string)) {
	for i, p := range a.AllowedOrigins {
		if _, err := parseOriginPattern(p); err != nil {
			add(fmt.Sprintf("allowed_origins[%d]", i), fmt.Sprintf("%q %v", p, err))
		}
	}
}

// originPattern is one parsed allowed_origins entry.
type originPattern struct {
	any    bool   // "*": every origin
	scheme string // "" = any scheme
	host   string // lower-case; "*.example.com" is stored as ".example.com" with wild set
	wild   bool
	port   string // "" = the scheme's default (no port in the Origin), "*" = any; ignored without scheme
}

// parseOriginPattern parses "*", "[scheme://]host[:port]" with host either a
// name or "*." followed by a name (any subdomain, at any depth, not the name
// itself), and port a number or "*".
func parseOriginPattern(p string) (originPattern, error) {
	if p == "*" {
		return originPattern{any: true}, nil
	}
	var o originPattern
	rest := p
	if scheme, r, ok := strings.Cut(p, "://"); ok {
		if !validScheme(scheme) {
			return o, fmt.Errorf("has an invalid scheme %q", scheme)
		}
		o.scheme, rest = strings.ToLower(scheme), r
	}
	if rest == "" || strings.ContainsAny(rest, "/?#@\\ \t\r\n") {
		return o, fmt.Errorf("is not an origin pattern (no path, no spaces): use \"*\", \"https://app.example.com\", \"https://*.example.com\", \"http://localhost:3000\" or \"example.com\"")
	}
	host, port := rest, ""
	if i := strings.LastIndexByte(rest, ':'); i >= 0 && !strings.HasSuffix(rest, "]") {
		host, port = rest[:i], rest[i+1:]
		if port != "*" && !allDigits(port) {
			return o, fmt.Errorf("has an invalid port %q", port)
		}
		if o.scheme == "" {
			return o, fmt.Errorf("has a port but no scheme; write it as scheme://host:port")
		}
	}
	if after, ok := strings.CutPrefix(host, "*."); ok {
		o.wild, host = true, "."+after
	}
	if host == "" || host == "." || strings.ContainsAny(host, "*/?#@\\ \t\r\n") {
		return o, fmt.Errorf("has an invalid host: only a leading \"*.\" may be a wildcard, and no path is allowed")
	}
	o.host, o.port = strings.ToLower(host), port
	return o, nil
}

func validScheme(s string) bool {
	if s == "" || !(s[0] >= 'a' && s[0] <= 'z' || s[0] >= 'A' && s[0] <= 'Z') {
		return false
	}
	for i := 1; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '+' || c == '-' || c == '.') {
			return false
		}
	}
	return true
}

func allDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// match reports whether the parsed Origin (lower-case scheme and host, port
// as given, "" when absent) fits the pattern.
func (o originPattern) match(scheme, host, port string) bool {
	if o.any {
		return true
	}
	if o.wild {
		if !strings.HasSuffix(host, o.host) || len(host) == len(o.host) {
			return false
		}
	} else if host != o.host {
		return false
	}
	if o.scheme == "" {
		return true // host-only pattern: any scheme and port
	}
	return scheme == o.scheme && (o.port == "*" || port == o.port)
}

// OriginAllowed reports whether a WebSocket handshake carrying this Origin
// header may connect to the app. Without allowed_origins every origin may. A
// missing header is allowed: browsers always send Origin, so the list keeps
// other web sites' pages from using the app's key, while non-browser clients
// (mobile and server SDKs) send none and could forge any. "null" (sandboxed
// frames, file: pages) matches only "*".
func (a *App) OriginAllowed(origin string) bool {
	if len(a.AllowedOrigins) == 0 || origin == "" {
		return true
	}
	scheme, host, port, ok := splitOrigin(origin)
	for _, p := range a.AllowedOrigins {
		o, err := parseOriginPattern(p)
		if err != nil {
			continue // Validate reports it
		}
		if o.any || ok && o.match(scheme, host, port) {
			return true
		}
	}
	return false
}

// splitOrigin parses an Origin header: scheme://host[:port] and nothing else.
func splitOrigin(origin string) (scheme, host, port string, ok bool) {
	u, err := url.Parse(origin)
	if err != nil || u.Scheme == "" || u.Host == "" || u.User != nil || (u.Path != "" && u.Path != "/") ||
		u.RawQuery != "" || u.Fragment != "" {
		return "", "", "", false
	}
	host = strings.ToLower(u.Hostname())
	if strings.Contains(host, ":") {
		host = "[" + host + "]" // IPv6, as written in patterns
	}
	return strings.ToLower(u.Scheme), host, u.Port(), true
}
