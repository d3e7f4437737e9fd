package redisstate

import (
	"context"
	"encoding/json"
	"errors"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/heraldrt/herald/internal/redisx"
	"github.com/heraldrt/herald/internal/state"
	"github.com/redis/rueidis"
)

type presence struct{ s *State }
type occupancy struct{ s *State }
type users struct{ s *State }
type cache struct{ s *State }
type locks struct{ s *State }

var (
	_ state.Presence  = presence{}
	_ state.Occupancy = occupancy{}
	_ state.Users     = users{}
	_ state.Cache     = cache{}
	_ state.Locks     = locks{}
)

func presenceKeys(l loc, channel, node string) []string {
	return []string{l.p + "pm:" + channel, l.p + "pc:" + channel, l.p + "ps:" + node}
}

// Join implements state.Presence. The first socket's user_info is kept.
func (p presence) Join(ctx context.Context, app, channel string, m state.Member, socketID string, max int) (bool, error) {
	s := p.s
	ctx, cancel, err := s.call(ctx)
	if err != nil {
		return false, err
	}
	defer cancel()
	l := s.locate(app, channel)
	if err := s.register(ctx, l); err != nil {
		return false, s.wrap("presence join", err)
	}
	n, err := joinScript.Exec(ctx, l.c, presenceKeys(l, channel, s.node),
		[]string{m.UserID, string(m.UserInfo), socketID + "\x00" + channel, strconv.Itoa(max)}).AsInt64()
	if err != nil {
		return false, s.wrap("presence join", err)
	}
	if n < 0 {
		return false, state.ErrChannelFull
	}
	return n == 1, nil
}

// Leave implements state.Presence. A socket leaves on the node it joined on.
func (p presence) Leave(ctx context.Context, app, channel, userID, socketID string) (bool, error) {
	s := p.s
	ctx, cancel, err := s.call(ctx)
	if err != nil {
		return false, err
	}
	defer cancel()
	l := s.locate(app, channel)
	n, err := leaveScript.Exec(ctx, l.c, presenceKeys(l, channel, s.node),
		[]string{userID, socketID + "\x00" + channel}).AsInt64()
	if err != nil {
		return false, s.wrap("presence leave", err)
	}
	return n == 1, nil
}

// Members implements state.Presence.
func (p presence) Members(ctx context.Context, app, channel string) ([]state.Member, error) {
	s := p.s
	ctx, cancel, err := s.call(ctx)
	if err != nil {
		return nil, err
	}
	defer cancel()
	l := s.locate(app, channel)
	m, err := l.c.Do(ctx, l.c.B().Hgetall().Key(l.p+"pm:"+channel).Build()).AsStrMap()
	if err != nil {
		return nil, s.wrap("presence members", err)
	}
	out := make([]state.Member, 0, len(m))
	for id, info := range m {
		mem := state.Member{UserID: id}
		if info != "" {
			mem.UserInfo = json.RawMessage(info)
		}
		out = append(out, mem)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].UserID < out[j].UserID })
	return out, nil
}

// Count implements state.Presence.
func (p presence) Count(ctx context.Context, app, channel string) (int, error) {
	s := p.s
	ctx, cancel, err := s.call(ctx)
	if err != nil {
		return 0, err
	}
	defer cancel()
	l := s.locate(app, channel)
	n, err := l.c.Do(ctx, l.c.B().Hlen().Key(l.p+"pm:"+channel).Build()).AsInt64()
	if err != nil {
		return 0, s.wrap("presence count", err)
	}
	return int(n), nil
}

func (o occupancy) change(ctx context.Context, app, channel, delta string) (int, error) {
	s := o.s
	ctx, cancel, err := s.call(ctx)
	if err != nil {
		return 0, err
	}
	defer cancel()
	l := s.locate(app, channel)
	if delta == "1" {
		if err := s.register(ctx, l); err != nil {
			return 0, s.wrap("occupancy", err)
		}
	}
	n, err := occScript.Exec(ctx, l.c, []string{l.p + "occ", l.p + "occn:" + s.node}, []string{channel, delta}).AsInt64()
	if err != nil {
		return 0, s.wrap("occupancy", err)
	}
	return int(n), nil
}

// Add implements state.Occupancy: this node's count and the global one go up
// together; 1 means the channel just became occupied cluster-wide.
func (o occupancy) Add(ctx context.Context, app, channel string) (int, error) {
	return o.change(ctx, app, channel, "1")
}

// Remove implements state.Occupancy. Only subscriptions this node added are
// removed; the count never goes below zero.
func (o occupancy) Remove(ctx context.Context, app, channel string) (int, error) {
	return o.change(ctx, app, channel, "-1")
}

// Count implements state.Occupancy.
func (o occupancy) Count(ctx context.Context, app, channel string) (int, error) {
	s := o.s
	ctx, cancel, err := s.call(ctx)
	if err != nil {
		return 0, err
	}
	defer cancel()
	l := s.locate(app, channel)
	n, err := l.c.Do(ctx, l.c.B().Hget().Key(l.p+"occ").Field(channel).Build()).AsInt64()
	if rueidis.IsRedisNil(err) {
		return 0, nil
	}
	if err != nil {
		return 0, s.wrap("occupancy count", err)
	}
	return int(max(n, 0)), nil
}

// maxScanRounds bounds the HSCAN rounds of one Channels call per bucket.
const maxScanRounds = 10000

// Channels implements state.Occupancy: it reads the occ index of every bucket
// of app on every shard, HSCAN with MATCH <prefix>*, pipelined per shard.
func (o occupancy) Channels(ctx context.Context, app, prefix string) (map[string]int, error) {
	s := o.s
	ctx, cancel, err := s.call(ctx)
	if err != nil {
		return nil, err
	}
	defer cancel()
	pattern := globEscape(prefix) + "*"
	out := make(map[string]int)
	type scan struct {
		key    string
		cursor uint64
	}
	for shard, c := range s.b.Clients {
		if s.b.Ring.Health(shard) == redisx.Down {
			continue // its channels are on the next shards now
		}
		pending := make([]scan, s.opts.Buckets)
		for b := range pending {
			pending[b] = scan{key: bucketPrefix(app, b) + "occ"}
		}
		for round := 0; len(pending) > 0; round++ {
			if round == maxScanRounds {
				return nil, s.wrap("channels", errors.New("index scan did not finish"))
			}
			cmds := make(rueidis.Commands, len(pending))
			for i, p := range pending {
				cmds[i] = c.B().Hscan().Key(p.key).Cursor(p.cursor).Match(pattern).Count(1000).Build()
			}
			res := c.DoMulti(ctx, cmds...)
			next := pending[:0]
			for i, r := range res {
				e, err := r.AsScanEntry()
				if err != nil {
					return nil, s.wrap("channels", err)
				}
				for j := 0; j+1 < len(e.Elements); j += 2 {
					ch := e.Elements[j]
					n, err := strconv.Atoi(e.Elements[j+1])
					if err != nil || n <= 0 || !strings.HasPrefix(ch, prefix) || !s.placed(shard, app, ch) {
						continue // or an entry left behind by a failover
					}
					out[ch] = n
				}
				if e.Cursor != 0 {
					next = append(next, scan{pending[i].key, e.Cursor})
				}
			}
			pending = next
		}
	}
	return out, nil
}

// globEscape quotes the glob metacharacters of a MATCH pattern.
func globEscape(s string) string {
	if !strings.ContainsAny(s, `*?[]\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '*', '?', '[', ']', '\\':
			b.WriteByte('\\')
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func userKeys(l loc, node, userID string) []string {
	return []string{l.p + "uc", l.p + "us:" + node, l.p + "un:" + userID}
}

// SignIn implements state.Users.
func (u users) SignIn(ctx context.Context, app, userID, socketID string) (bool, error) {
	s := u.s
	ctx, cancel, err := s.call(ctx)
	if err != nil {
		return false, err
	}
	defer cancel()
	l := s.locateUser(app, userID)
	if err := s.register(ctx, l); err != nil {
		return false, s.wrap("signin", err)
	}
	n, err := signInScript.Exec(ctx, l.c, userKeys(l, s.node, userID), []string{userID, socketID + "\x00" + userID, s.node}).AsInt64()
	if err != nil {
		return false, s.wrap("signin", err)
	}
	return n == 1, nil
}

// SignOut implements state.Users. A socket signs out on the node it signed
// in on.
func (u users) SignOut(ctx context.Context, app, userID, socketID string) (bool, error) {
	s := u.s
	ctx, cancel, err := s.call(ctx)
	if err != nil {
		return false, err
	}
	defer cancel()
	l := s.locateUser(app, userID)
	n, err := signOutScript.Exec(ctx, l.c, userKeys(l, s.node, userID), []string{userID, socketID + "\x00" + userID, s.node}).AsInt64()
	if err != nil {
		return false, s.wrap("signout", err)
	}
	return n == 1, nil
}

// Online implements state.Users: one HEXISTS per user, pipelined per shard.
func (u users) Online(ctx context.Context, app string, userIDs []string) ([]bool, error) {
	s := u.s
	out := make([]bool, len(userIDs))
	if len(userIDs) == 0 {
		return out, nil
	}
	ctx, cancel, err := s.call(ctx)
	if err != nil {
		return nil, err
	}
	defer cancel()
	cmds := make([]rueidis.Commands, len(s.b.Clients))
	idx := make([][]int, len(s.b.Clients))
	for i, id := range userIDs {
		l := s.locateUser(app, id)
		cmds[l.shard] = append(cmds[l.shard], l.c.B().Hexists().Key(l.p+"uc").Field(id).Build())
		idx[l.shard] = append(idx[l.shard], i)
	}
	for shard, cs := range cmds {
		if len(cs) == 0 {
			continue
		}
		for j, r := range s.b.Clients[shard].DoMulti(ctx, cs...) {
			ok, err := r.AsBool()
			if err != nil {
				return nil, s.wrap("online", err)
			}
			out[idx[shard][j]] = ok
		}
	}
	return out, nil
}

// Set implements state.Cache: SET with PX; a ttl <= 0 deletes the entry.
func (c cache) Set(ctx context.Context, app, channel string, ev state.CachedEvent, ttl time.Duration) error {
	s := c.s
	ctx, cancel, err := s.call(ctx)
	if err != nil {
		return err
	}
	defer cancel()
	l := s.locate(app, channel)
	key := l.p + "cache:" + channel
	var cmd rueidis.Completed
	if ttl <= 0 {
		cmd = l.c.B().Del().Key(key).Build()
	} else {
		v := strconv.Itoa(len(ev.Event)) + ":" + ev.Event + ev.Data
		cmd = l.c.B().Set().Key(key).Value(v).PxMilliseconds(max(ttl.Milliseconds(), 1)).Build()
	}
	return s.wrap("cache set", l.c.Do(ctx, cmd).Error())
}

// Get implements state.Cache; the TTL left is Redis's PTTL.
func (c cache) Get(ctx context.Context, app, channel string) (state.CachedEvent, time.Duration, bool, error) {
	s := c.s
	ctx, cancel, err := s.call(ctx)
	if err != nil {
		return state.CachedEvent{}, 0, false, err
	}
	defer cancel()
	l := s.locate(app, channel)
	arr, err := cacheGetScript.Exec(ctx, l.c, []string{l.p + "cache:" + channel}, nil).ToArray()
	if rueidis.IsRedisNil(err) {
		return state.CachedEvent{}, 0, false, nil
	}
	if err == nil && len(arr) != 2 {
		err = errors.New("unexpected reply")
	}
	if err != nil {
		return state.CachedEvent{}, 0, false, s.wrap("cache get", err)
	}
	v, err1 := arr[0].ToString()
	pttl, err2 := arr[1].AsInt64()
	if err := errors.Join(err1, err2); err != nil {
		return state.CachedEvent{}, 0, false, s.wrap("cache get", err)
	}
	ev, ok := decodeCached(v)
	if !ok {
		return state.CachedEvent{}, 0, false, s.wrap("cache get", errors.New("malformed entry"))
	}
	if pttl == -2 || pttl == 0 {
		return state.CachedEvent{}, 0, false, nil
	}
	if pttl < 0 { // no expiry: not written by Set
		pttl = 0
	}
	return ev, time.Duration(pttl) * time.Millisecond, true, nil
}

func decodeCached(v string) (state.CachedEvent, bool) {
	i := strings.IndexByte(v, ':')
	if i <= 0 {
		return state.CachedEvent{}, false
	}
	n, err := strconv.Atoi(v[:i])
	if err != nil || n < 0 || i+1+n > len(v) {
		return state.CachedEvent{}, false
	}
	return state.CachedEvent{Event: v[i+1 : i+1+n], Data: v[i+1+n:]}, true
}

// TryLock implements state.Locks with SET NX PX. A ttl <= 0 takes nothing and
// succeeds (the lock would have expired at once).
func (k locks) TryLock(ctx context.Context, app, name string, ttl time.Duration) (bool, error) {
	s := k.s
	if ttl <= 0 {
		if s.isClosed() {
			return false, ErrClosed
		}
		return true, nil
	}
	ctx, cancel, err := s.call(ctx)
	if err != nil {
		return false, err
	}
	defer cancel()
	l := s.locate(app, name)
	err = l.c.Do(ctx, l.c.B().Set().Key(l.p+"lock:"+name).Value(s.node).Nx().PxMilliseconds(max(ttl.Milliseconds(), 1)).Build()).Error()
	if rueidis.IsRedisNil(err) {
		return false, nil
	}
	if err != nil {
		return false, s.wrap("lock", err)
	}
	return true, nil
}
