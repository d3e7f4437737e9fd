package apps

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"

	"go.yaml.in/yaml/v3"
)

// Development app credentials, used by DefaultApp when no config file is given.
const (
	DevAppID     = "app-id"
	DevAppKey    = "app-key"
	DevAppSecret = "app-secret"
)

// Defaults for the top-level Config fields.
const (
	DefaultLogLevel  = "info"
	DefaultLogFormat = "text"
)

// Config is Herald's YAML configuration file. Unknown keys are errors.
type Config struct {
	// Addr is the listen address, e.g. ":6001". Default "" (unset): the
	// caller decides, typically from a command-line flag.
	Addr string `yaml:"addr"`
	// PathPrefix is prepended to the WebSocket path (PathPrefix+"/app/{key}").
	// Default "" (no prefix). When set it must start with '/' and must not
	// end with '/'.
	PathPrefix string `yaml:"path_prefix"`
	// LogLevel is one of debug, info, warn, error. Default "info".
	LogLevel string `yaml:"log_level"`
	// LogFormat is text or json. Default "text".
	LogFormat string `yaml:"log_format"`
	// Role is what this process serves: "all" (WebSocket endpoint and HTTP
	// API, the default), "edge" (WebSocket only) or "api" (HTTP API only).
	Role string `yaml:"role"`
	// Redis lists redis:// URLs of independent Redis servers; channels are
	// spread over them by hashing. Empty with RedisCluster empty: the
	// in-memory broker and state (one process).
	Redis []string `yaml:"redis"`
	// RedisCluster is the redis:// URL of one node of a Redis Cluster (sharded
	// pub/sub, Redis 7). Exclusive with Redis.
	RedisCluster string `yaml:"redis_cluster"`
	// NodeTimeout, in seconds, is how long a node may miss heartbeats before
	// the others remove its connections' presence and counts. Default 10.
	NodeTimeout int `yaml:"node_timeout"`
	// InternalAddr is the listen address of the internal listener (metrics,
	// pprof, dashboard). Default "" (unset): the caller decides, typically
	// 127.0.0.1:9601; "off" disables it.
	InternalAddr string `yaml:"internal_addr"`
	// AdminToken protects the dashboard. Empty: the dashboard is refused
	// (403); /metrics and pprof are served without it on the internal
	// listener. At least 16 characters; never logged.
	AdminToken string `yaml:"admin_token"`
	// DrainWindow is how long a drain (SIGTERM, or POST /admin/drain on the
	// internal listener) spreads the closing of the node's connections over,
	// e.g. "30s" (a bare number is milliseconds; at most 1h). Default 30s.
	DrainWindow Duration `yaml:"drain_window"`
	// TLSCert and TLSKey are PEM files (certificate chain, private key) that
	// turn on TLS on the public listener: wss:// and https:// on Addr.
	// Default "" (plain TCP; terminate TLS in front of Herald). Both or
	// neither.
	TLSCert string `yaml:"tls_cert"`
	TLSKey  string `yaml:"tls_key"`
	// MaxConnectionsPerIP caps the WebSocket connections one source address
	// (one IPv4 address, one IPv6 /64) may hold on this node, across apps;
	// past it the handshake is refused with 4100 (back off and retry).
	// Default 0: unlimited (behind a proxy every client has its address).
	MaxConnectionsPerIP int `yaml:"max_connections_per_ip"`
	// Apps lists the tenants; at least one is required. Each app's zero limits
	// take the defaults documented on App.
	Apps []*App `yaml:"apps"`
}

// DefaultNodeTimeout is Config.NodeTimeout's default, in seconds.
const DefaultNodeTimeout = 10

// ErrEmpty is returned by Parse for a document with no content.
var ErrEmpty = errors.New("apps: empty config")

// ErrParse wraps YAML syntax errors, type errors and unknown keys.
var ErrParse = errors.New("apps: cannot parse config")

// Parse decodes a YAML config strictly: unknown keys at any level, duplicate
// keys, a second non-empty document and an empty input are errors. The result
// is validated (errors match ErrInvalid and list every problem) and then has
// its defaults applied, to the top-level fields and to every app.
func Parse(data []byte) (*Config, error) {
	var c Config
	if err := decodeStrict(data, &c); err != nil {
		return nil, err
	}
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("apps: invalid config:\n%w", err)
	}
	c.ApplyDefaults()
	return &c, nil
}

// Load reads the file at path and Parses it; errors name the path.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("apps: load config: %w", err)
	}
	c, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// ApplyDefaults fills empty top-level fields and every app's zero limits with
// their defaults. Nil apps are skipped.
func (c *Config) ApplyDefaults() {
	if c.LogLevel == "" {
		c.LogLevel = DefaultLogLevel
	}
	if c.LogFormat == "" {
		c.LogFormat = DefaultLogFormat
	}
	if c.Role == "" {
		c.Role = RoleAll
	}
	if c.NodeTimeout == 0 {
		c.NodeTimeout = DefaultNodeTimeout
	}
	for _, a := range c.Apps {
		if a != nil {
			a.ApplyDefaults()
		}
	}
}

// DefaultApp returns the built-in development app: the given credentials,
// ClientEvents on, and every limit at its default.
func DefaultApp(id, key, secret string) *App {
	a := &App{ID: id, Key: key, Secret: secret, ClientEvents: true}
	a.ApplyDefaults()
	return a
}

// decodeStrict decodes exactly one YAML document into c, rejecting unknown
// keys; further documents must be empty. A panic inside the YAML library is reported as ErrParse.
func decodeStrict(data []byte, c *Config) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: yaml decoder panicked: %v", ErrParse, r)
		}
	}()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil {
		if errors.Is(err, io.EOF) {
			return ErrEmpty
		}
		return fmt.Errorf("%w: %w", ErrParse, err)
	}
	for {
		var extra yaml.Node
		err := dec.Decode(&extra)
		switch {
		case errors.Is(err, io.EOF):
			return nil
		case err != nil:
			return fmt.Errorf("%w: %w", ErrParse, err)
		case !isNullDocument(&extra):
			return fmt.Errorf("%w: more than one YAML document", ErrParse)
		}
	}
}

// isNullDocument reports whether n is an empty document, such as the one a
// trailing "---" opens.
func isNullDocument(n *yaml.Node) bool {
	if n.Kind == yaml.DocumentNode && len(n.Content) == 1 {
		n = n.Content[0]
	}
	return n.Kind == 0 || (n.Kind == yaml.ScalarNode && n.Tag == "!!null")
}
