package redisstate

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/redis/rueidis"
)

// The connection registry of direct push (internal/push):
//
//   - user → nodes: P un:<user>, a hash node → the user's signed-in sockets on
//     that node, kept by the signin and signout scripts in the same atomic
//     step as the user's other keys, and cleaned by the reaper when a node
//     dies (the reap script decrements it for each signed-in socket it
//     removes). It lives next to the user's other keys, on the shard of its
//     #server-to-user- channel.
//   - socket → node: every socket_id a node assigns carries the node's tag
//     (session.SocketIDTagOf), so no per-connection write is needed; the tag
//     names the node in herald:{nodes}:tag:<tag> (value: the node id, PX =
//     NodeTimeout), claimed with SET NX on every shard at start, refreshed
//     every HeartbeatInterval and deleted by Close. A dead node's tag expires
//     with its heartbeat.

// registryCacheTTL bounds how long a registry read is served from the client
// cache. Redis invalidates the entry as soon as the key changes (RESP3 client
// tracking), so this only matters when an invalidation is lost, which
// rueidis handles by dropping the connection's cache when it reconnects.
const registryCacheTTL = 5 * time.Second

// UserNodes returns the nodes where userID of app has signed-in sockets, with
// how many there. The read goes through the client-side cache (server-assisted
// invalidation) when the Redis client has one.
func (s *State) UserNodes(ctx context.Context, app, userID string) (map[string]int, error) {
	ctx, cancel, err := s.call(ctx)
	if err != nil {
		return nil, err
	}
	defer cancel()
	l := s.locateUser(app, userID)
	m, err := l.c.DoCache(ctx, l.c.B().Hgetall().Key(l.p+"un:"+userID).Cache(), registryCacheTTL).AsIntMap()
	if err != nil {
		return nil, s.wrap("user nodes", err)
	}
	out := make(map[string]int, len(m))
	for node, n := range m {
		if n > 0 {
			out[node] = int(n)
		}
	}
	return out, nil
}

func tagKey(tag uint64) string { return "herald:{nodes}:tag:" + strconv.FormatUint(tag, 10) }

// ErrNoTag is returned by ClaimSocketTag when no free tag was found.
var ErrNoTag = errors.New("redisstate: no free socket-id tag")

// ClaimSocketTag picks a random tag in [1, max] that no live node holds, on
// every shard that answers (SET NX), and keeps it alive with this node's
// heartbeat until Close. It must be called once, before the node assigns
// socket ids.
func (s *State) ClaimSocketTag(ctx context.Context, max uint64) (uint64, error) {
	if max == 0 {
		return 0, errors.New("redisstate: socket tag range is empty")
	}
	if s.isClosed() {
		return 0, ErrClosed
	}
	px := s.opts.NodeTimeout.Milliseconds()
	for attempt := 0; attempt < 32; attempt++ {
		tag := 1 + rand.Uint64N(max)
		key := tagKey(tag)
		taken := make([]bool, len(s.b.Clients))
		err := s.eachShard(func(shard int) error {
			c := s.b.Clients[shard]
			cctx, cancel := context.WithTimeout(ctx, s.opts.Timeout)
			defer cancel()
			err := c.Do(cctx, c.B().Set().Key(key).Value(s.node).Nx().PxMilliseconds(px).Build()).Error()
			if rueidis.IsRedisNil(err) {
				taken[shard] = true
				return nil
			}
			return err
		})
		anyTaken := false
		for _, t := range taken {
			anyTaken = anyTaken || t
		}
		if anyTaken {
			s.deleteTag(ctx, tag) // where we did set it
			continue
		}
		if err != nil && allFailed(err, len(s.b.Clients)) {
			return 0, fmt.Errorf("redisstate: claim socket tag: %w", err)
		}
		if err != nil {
			s.log.Warn("socket tag not written on every shard; the heartbeat retries", "node", s.node, "err", err)
		}
		s.mu.Lock()
		s.tag = tag
		s.mu.Unlock()
		s.wg.Add(1)
		go s.every(s.opts.HeartbeatInterval, "socket tag refresh", s.refreshSocketTag)
		return tag, nil
	}
	return 0, ErrNoTag
}

// allFailed reports whether err (from eachShard) joins one error per shard.
func allFailed(err error, shards int) bool {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return len(j.Unwrap()) >= shards
	}
	return shards == 1
}

// refreshSocketTag extends this node's tag on every shard.
func (s *State) refreshSocketTag(ctx context.Context) error {
	s.mu.Lock()
	tag := s.tag
	s.mu.Unlock()
	if tag == 0 {
		return nil
	}
	px := s.opts.NodeTimeout.Milliseconds()
	return s.eachShard(func(shard int) error {
		c := s.b.Clients[shard]
		cctx, cancel := context.WithTimeout(ctx, s.opts.Timeout)
		defer cancel()
		return c.Do(cctx, c.B().Set().Key(tagKey(tag)).Value(s.node).PxMilliseconds(px).Build()).Error()
	})
}

// deleteTag deletes tag on every shard where this node holds it.
func (s *State) deleteTag(ctx context.Context, tag uint64) {
	_ = s.eachShard(func(shard int) error {
		c := s.b.Clients[shard]
		cctx, cancel := context.WithTimeout(ctx, s.opts.Timeout)
		defer cancel()
		return unlockScript.Exec(cctx, c, []string{tagKey(tag)}, []string{s.node}).Error()
	})
}

// releaseSocketTag deletes this node's tag (Close), so that pushes to its
// sockets are answered "no such socket" at once instead of timing out.
func (s *State) releaseSocketTag() {
	s.mu.Lock()
	tag := s.tag
	s.tag = 0
	s.mu.Unlock()
	if tag != 0 {
		s.deleteTag(context.Background(), tag)
	}
}

// SocketTagNode returns the node holding tag, or "" when no live node does.
// It asks the shards one after the other until one knows the tag (a shard
// that restarted empty learns it again within a heartbeat).
func (s *State) SocketTagNode(ctx context.Context, tag uint64) (string, error) {
	ctx, cancel, err := s.call(ctx)
	if err != nil {
		return "", err
	}
	defer cancel()
	key := tagKey(tag)
	first := s.b.Ring.Pick(key)
	var errs []error
	for i := range s.b.Clients {
		c := s.b.Clients[(first+i)%len(s.b.Clients)]
		node, err := c.Do(ctx, c.B().Get().Key(key).Build()).ToString()
		switch {
		case err == nil:
			return node, nil
		case rueidis.IsRedisNil(err):
		default:
			errs = append(errs, err)
		}
	}
	if len(errs) == len(s.b.Clients) {
		return "", s.wrap("socket tag", errors.Join(errs...))
	}
	return "", nil
}
