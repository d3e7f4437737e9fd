// Package redisx connects Herald to its Redis backend: a list of independent
// Redis servers (shards) chosen per channel by rendezvous hashing, or one
// Redis Cluster that routes keys and sharded pub/sub channels itself.
//
// The client is github.com/redis/rueidis (see README "Running a cluster" for
// why): it pipelines concurrent commands on one connection per server
// automatically and supports SSUBSCRIBE/SPUBLISH on Redis Cluster.
package redisx

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/redis/rueidis"
)

// Backend is Herald's connection to Redis: either Shards (independent
// servers, one client each) or a single Redis Cluster client.
type Backend struct {
	// Clients has one client per shard; with Cluster it has exactly one.
	Clients []rueidis.Client
	// URLs are the shards' URLs as configured, passwords included: they
	// place channels (Ring) and must never be logged; use Names.
	URLs []string
	// Names are the URLs with any password redacted (Redact), for logs,
	// errors and metrics.
	Names []string
	// Cluster is true for Redis Cluster: use SPUBLISH/SSUBSCRIBE and let the
	// cluster route; Ring is then a single shard.
	Cluster bool
	Ring    *Ring

	opts []rueidis.ClientOption // each shard's, for the Monitor's probe clients
}

// Options tune the clients.
type Options struct {
	// Tweak, when set, adjusts each client's options before dialing (tests).
	Tweak func(*rueidis.ClientOption)
}

// Dial connects to shards (a list of redis:// URLs) or, when cluster is not
// empty, to the Redis Cluster whose seed URL it is. Exactly one must be given.
func Dial(shards []string, cluster string, o Options) (*Backend, error) {
	if (len(shards) == 0) == (cluster == "") {
		return nil, errors.New("redisx: give either shard URLs or a cluster seed URL")
	}
	b := &Backend{Cluster: cluster != ""}
	urls := shards
	if b.Cluster {
		urls = []string{cluster}
	}
	seen := map[string]bool{}
	for _, u := range urls {
		u = strings.TrimSpace(u)
		if seen[u] {
			b.Close()
			return nil, fmt.Errorf("redisx: shard %s listed twice", Redact(u))
		}
		seen[u] = true
		opt, err := rueidis.ParseURL(u)
		if err != nil {
			b.Close()
			var ue *url.Error
			if errors.As(err, &ue) {
				ue.URL = Redact(ue.URL) // url.Parse errors quote the whole URL
			}
			return nil, fmt.Errorf("redisx: %s: %w", Redact(u), err)
		}
		opt.ForceSingleClient = !b.Cluster
		if opt.Dialer.Timeout == 0 {
			// Fail fast on a host that drops packets: publishes waiting on a
			// dial must not hang for the OS default.
			opt.Dialer.Timeout = time.Second
		}
		// Client-side caching with server-assisted invalidation (RESP3
		// CLIENT TRACKING, opt-in per read): only the direct-push registry
		// reads use it (DoCache), so a small cache per connection suffices.
		opt.CacheSizeEachConn = 4 << 20
		if o.Tweak != nil {
			o.Tweak(&opt)
		}
		c, err := rueidis.NewClient(opt)
		if err != nil {
			b.Close()
			return nil, fmt.Errorf("redisx: connect %s: %w", Redact(u), err)
		}
		b.Clients = append(b.Clients, c)
		b.opts = append(b.opts, opt)
		b.URLs = append(b.URLs, u)
		b.Names = append(b.Names, Redact(u))
	}
	b.Ring = NewRing(b.URLs)
	return b, nil
}

// Redact returns the URL u with its password, if any, replaced by "xxxxx".
// Any other URL with an '@' (it does not parse, or the '@' is not where user
// info goes) keeps only what follows its last '@'.
func Redact(u string) string {
	if p, err := url.Parse(u); err == nil && p.User != nil {
		return p.Redacted()
	}
	if i := strings.LastIndexByte(u, '@'); i >= 0 {
		return "xxxxx@" + u[i+1:]
	}
	return u
}

// ShardKey is the key hashed to place an app's channel.
func ShardKey(app, channel string) string { return app + "\x00" + channel }

// For returns the shard index and client for an app's channel: the shard
// that serves it now (Ring.Pick), which is its home shard unless that is Down.
func (b *Backend) For(app, channel string) (int, rueidis.Client) {
	i := b.Ring.Pick(ShardKey(app, channel))
	return i, b.Clients[i]
}

// Close closes every client.
func (b *Backend) Close() {
	for _, c := range b.Clients {
		c.Close()
	}
}
