package redisstate

import (
	"context"
	"errors"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/rueidis"

	"github.com/heraldrt/herald/internal/redisx"
	"github.com/heraldrt/herald/internal/state"
)

// Re-asserting local state (Options.Reassert; shard mode only).
//
// A channel's state lives on the shard that serves it (redisx.Ring.Pick).
// When a shard goes Down its channels move to the next shard, which knows
// nothing of them; when it comes back they move back, and the shard has
// either nothing (it restarted) or what it had before the outage (it was
// unreachable), both wrong. Redis cannot tell, but every node knows its own
// part: its sessions' subscriptions, presence sockets and signed-in sockets.
// So each node records, next to every operation, what it contributed (the
// mirror below: what its sessions hold, whether or not Redis took the
// write), and after every placement change, and whenever its state on a
// shard was lost (OnStateLost) or a write failed, rewrites its per-node
// entries on each affected shard to match: adding what is missing, removing
// what it no longer holds or what no longer belongs there. The shared
// aggregates (global counts, member lists, signed-in users) follow, because
// the same scripts as the operations maintain them. The other nodes do the
// same for their part, so the shard converges on the cluster's truth.
//
// Re-asserting reports no transitions: the members, channels and users were
// there all along as far as clients know, so no member_added, webhook or
// watchlist event is sent. Operations are paused (a write lock) while a
// shard is rewritten, so none interleaves with it.

// mirror is what this node's sessions hold, as recorded by the operations.
type mirror struct {
	mu    sync.Mutex
	occ   map[chanKey]int
	pres  map[sockKey]state.Member // (app, channel, socket) → member
	users map[sockKey]struct{}     // (app, user, socket)
}

type chanKey struct{ app, channel string }

type sockKey struct{ app, name, socket string }

func newMirror() *mirror {
	return &mirror{occ: map[chanKey]int{}, pres: map[sockKey]state.Member{}, users: map[sockKey]struct{}{}}
}

// reassert is the background side of re-asserting: which shards need it.
type reassert struct {
	mu      sync.Mutex
	dirty   map[int]bool
	signal  chan struct{} // capacity 1
	stop    func()        // stops the ring watch
	done    chan struct{}
	rounds  int // reconcile passes that changed something (tests)
	changes int // writes they made (tests)
}

// startReassert starts the reconcile loop (called by New with the lock-free
// State not yet shared).
func (s *State) startReassert() {
	s.mirror = newMirror()
	s.ra = &reassert{dirty: map[int]bool{}, signal: make(chan struct{}, 1), done: make(chan struct{})}
	user := s.opts.OnStateLost
	s.opts.OnStateLost = func(shard int) {
		s.markDirty(shard)
		if user != nil {
			user(shard)
		}
	}
	s.ra.stop = s.b.Ring.Watch(func(c redisx.Change) {
		if c.From == redisx.Down || c.To == redisx.Down {
			// Placement changed: every other shard may gain or lose channels.
			for i := range s.b.Clients {
				s.markDirty(i)
			}
		}
	})
	s.wg.Add(1)
	go s.reassertLoop()
}

// markDirty asks the loop to reconcile shard i. It never blocks.
func (s *State) markDirty(i int) {
	if s.ra == nil {
		return
	}
	s.ra.mu.Lock()
	s.ra.dirty[i] = true
	s.ra.mu.Unlock()
	select {
	case s.ra.signal <- struct{}{}:
	default:
	}
}

func (s *State) reassertLoop() {
	defer s.wg.Done()
	defer s.ra.stop()
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	for {
		select {
		case <-s.ra.signal:
		case <-retry.C:
		case <-s.loopCx.Done():
			return
		}
		s.ra.mu.Lock()
		var todo []int
		for i := range s.ra.dirty {
			todo = append(todo, i)
		}
		clear(s.ra.dirty)
		s.ra.mu.Unlock()
		sort.Ints(todo)
		failed := false
		for _, i := range todo {
			if s.b.Ring.Health(i) == redisx.Down {
				continue // reconciled when it comes back (a ring change)
			}
			n, err := s.reconcileShard(s.loopCx, i)
			switch {
			case err != nil && s.loopCx.Err() == nil:
				s.log.Warn("re-asserting this node's state on a shard failed; retrying", "shard", s.b.Names[i], "err", err)
				s.markDirtyQuiet(i)
				failed = true
			case n > 0:
				s.log.Info("re-asserted this node's state on a shard", "shard", s.b.Names[i], "writes", n)
			}
		}
		if failed {
			retry.Reset(time.Second)
		}
	}
}

// markDirtyQuiet marks shard i without waking the loop (its retry timer will).
func (s *State) markDirtyQuiet(i int) {
	s.ra.mu.Lock()
	s.ra.dirty[i] = true
	s.ra.mu.Unlock()
}

// Reconcile rewrites this node's entries on every shard that is not Down to
// match what its sessions hold (the loop does it by itself after ring
// changes; tests call it). It returns how many writes it made.
func (s *State) Reconcile(ctx context.Context) (int, error) {
	if s.mirror == nil {
		return 0, errors.New("redisstate: Reconcile needs Options.Reassert")
	}
	total := 0
	var errs []error
	for i := range s.b.Clients {
		if s.b.Ring.Health(i) == redisx.Down {
			continue
		}
		n, err := s.reconcileShard(ctx, i)
		total += n
		errs = append(errs, err)
	}
	return total, errors.Join(errs...)
}

// group is one (app, bucket) of a shard: the unit of per-node keys.
type group struct {
	l     loc
	occ   map[string]int          // channel → count
	pres  map[string]state.Member // "<socket>\0<channel>" → member
	users map[string]string       // "<socket>\0<user>" → user
	chans map[string]string       // presence field → channel
}

// reconcileShard makes this node's per-node entries on shard j match the
// mirror's entries placed on j. Operations wait meanwhile.
func (s *State) reconcileShard(ctx context.Context, j int) (int, error) {
	if s.isClosed() {
		return 0, ErrClosed
	}
	s.ringMu.Lock()
	defer s.ringMu.Unlock()
	c := s.b.Clients[j]
	groups := map[string]*group{}
	get := func(app string, bucket int) *group {
		e := regEntry(bucket, app)
		g := groups[e]
		if g == nil {
			g = &group{l: loc{shard: j, c: c, bucket: bucket, app: app, p: bucketPrefix(app, bucket)},
				occ: map[string]int{}, pres: map[string]state.Member{}, users: map[string]string{}, chans: map[string]string{}}
			groups[e] = g
		}
		return g
	}
	// Desired: the mirror's entries that live on j now.
	s.mirror.mu.Lock()
	for k, n := range s.mirror.occ {
		if l := s.locate(k.app, k.channel); l.shard == j {
			get(k.app, l.bucket).occ[k.channel] = n
		}
	}
	for k, m := range s.mirror.pres {
		if l := s.locate(k.app, k.name); l.shard == j {
			g := get(k.app, l.bucket)
			f := k.socket + "\x00" + k.name
			g.pres[f] = m
			g.chans[f] = k.name
		}
	}
	for k := range s.mirror.users {
		if l := s.locateUser(k.app, k.name); l.shard == j {
			get(k.app, l.bucket).users[k.socket+"\x00"+k.name] = k.name
		}
	}
	s.mirror.mu.Unlock()
	var want []string // registry entries to hold before writing
	for e := range groups {
		want = append(want, e)
	}
	// And whatever this node registered there before: it may hold entries
	// that must go.
	s.mu.Lock()
	for k := range s.registered {
		if k.shard == j {
			if _, ok := groups[k.entry]; !ok {
				if bucket, app, ok := parseRegEntry(k.entry); ok {
					get(app, bucket)
				}
			}
		}
	}
	s.mu.Unlock()
	if len(groups) == 0 {
		return 0, nil
	}
	cctx, cancel := context.WithTimeout(ctx, s.opts.Timeout)
	defer cancel()
	if len(want) > 0 {
		if err := s.beat(cctx, j, want...); err != nil {
			return 0, err
		}
		s.mu.Lock()
		for _, e := range want {
			s.registered[regKey{j, e}] = struct{}{}
		}
		s.mu.Unlock()
	}
	// Actual: this node's per-node hashes of each group.
	order := make([]*group, 0, len(groups))
	var reads rueidis.Commands
	for _, g := range groups {
		order = append(order, g)
		reads = append(reads,
			c.B().Hgetall().Key(g.l.p+"occn:"+s.node).Build(),
			c.B().Hgetall().Key(g.l.p+"ps:"+s.node).Build(),
			c.B().Hgetall().Key(g.l.p+"us:"+s.node).Build())
	}
	res := c.DoMulti(cctx, reads...)
	var execs []rueidis.LuaExec
	var scripts []*rueidis.Lua
	add := func(sc *rueidis.Lua, keys, args []string) {
		scripts = append(scripts, sc)
		execs = append(execs, rueidis.LuaExec{Keys: keys, Args: args})
	}
	for gi, g := range order {
		occ, err1 := res[3*gi].AsStrMap()
		ps, err2 := res[3*gi+1].AsStrMap()
		us, err3 := res[3*gi+2].AsStrMap()
		if err := errors.Join(err1, err2, err3); err != nil {
			return 0, err
		}
		l := g.l
		occKeys := []string{l.p + "occ", l.p + "occn:" + s.node}
		for ch, v := range occ {
			if n, _ := strconv.Atoi(v); n != g.occ[ch] {
				add(occSetScript, occKeys, []string{ch, strconv.Itoa(g.occ[ch])})
			}
		}
		for ch, n := range g.occ {
			if _, ok := occ[ch]; !ok && n > 0 {
				add(occSetScript, occKeys, []string{ch, strconv.Itoa(n)})
			}
		}
		// Presence: leave what is not held (or held as another user), then
		// join what is missing, with no member limit (it was admitted).
		for f, user := range ps {
			if m, ok := g.pres[f]; !ok || m.UserID != user {
				ch := f[strings.IndexByte(f, 0)+1:]
				add(leaveScript, presenceKeys(l, ch, s.node), []string{user, f})
			}
		}
		for f, m := range g.pres {
			if user, ok := ps[f]; !ok || user != m.UserID {
				ch := g.chans[f]
				add(joinScript, presenceKeys(l, ch, s.node), []string{m.UserID, string(m.UserInfo), f, "0"})
			}
		}
		for f, user := range us {
			if _, ok := g.users[f]; !ok {
				add(signOutScript, userKeys(l, s.node, user), []string{user, f, s.node})
			}
		}
		for f, user := range g.users {
			if _, ok := us[f]; !ok {
				add(signInScript, userKeys(l, s.node, user), []string{user, f, s.node})
			}
		}
	}
	// Leaves before joins (a socket's field may change user); the scripts
	// of one call run in order on the one connection.
	n := 0
	for len(execs) > 0 {
		k := min(len(execs), 256)
		// ExecMulti takes one script; group consecutive runs of the same.
		for start := 0; start < k; {
			end := start + 1
			for end < k && scripts[end] == scripts[start] {
				end++
			}
			for _, r := range scripts[start].ExecMulti(cctx, c, execs[start:end]...) {
				if err := r.Error(); err != nil && !rueidis.IsRedisNil(err) {
					return n, err
				}
				n++
			}
			start = end
		}
		execs, scripts = execs[k:], scripts[k:]
	}
	if n > 0 {
		s.ra.mu.Lock()
		s.ra.rounds++
		s.ra.changes += n
		s.ra.mu.Unlock()
	}
	return n, nil
}

// occSetScript sets this node's count of channel ARGV[1] to ARGV[2] and
// moves the global count by the difference; returns the new global count.
// KEYS[1] = occ, KEYS[2] = occn:<node>.
var occSetScript = rueidis.NewLuaScript(`
local ch, want = ARGV[1], tonumber(ARGV[2])
local have = tonumber(redis.call('HGET', KEYS[2], ch) or '0')
if want == have then return tonumber(redis.call('HGET', KEYS[1], ch) or '0') end
if want <= 0 then redis.call('HDEL', KEYS[2], ch) else redis.call('HSET', KEYS[2], ch, want) end
local t = redis.call('HINCRBY', KEYS[1], ch, want - have)
if t <= 0 then
  redis.call('HDEL', KEYS[1], ch)
  return 0
end
return t
`)

// reassertable reports whether a failed operation may have left the shard
// out of step with the mirror (then the shard is reconciled soon).
func reassertable(err error) bool {
	return err != nil && !errors.Is(err, ErrClosed) && !errors.Is(err, state.ErrChannelFull)
}

// The operations with the mirror: each holds the read side of ringMu for
// its whole round trip, so a reconcile never interleaves with it.

type trackedPresence struct{ s *State }
type trackedOccupancy struct{ s *State }
type trackedUsers struct{ s *State }

func (p trackedPresence) Join(ctx context.Context, app, channel string, m state.Member, socketID string, max int) (bool, error) {
	s := p.s
	s.ringMu.RLock()
	defer s.ringMu.RUnlock()
	added, err := presence{s}.Join(ctx, app, channel, m, socketID, max)
	if err == nil {
		s.mirror.mu.Lock()
		s.mirror.pres[sockKey{app, channel, socketID}] = m
		s.mirror.mu.Unlock()
	} else if reassertable(err) {
		s.markDirty(s.locate(app, channel).shard)
	}
	return added, err
}

func (p trackedPresence) Leave(ctx context.Context, app, channel, userID, socketID string) (bool, error) {
	s := p.s
	s.ringMu.RLock()
	defer s.ringMu.RUnlock()
	removed, err := presence{s}.Leave(ctx, app, channel, userID, socketID)
	s.mirror.mu.Lock()
	delete(s.mirror.pres, sockKey{app, channel, socketID})
	s.mirror.mu.Unlock()
	if reassertable(err) {
		s.markDirty(s.locate(app, channel).shard)
	}
	return removed, err
}

func (p trackedPresence) Members(ctx context.Context, app, channel string) ([]state.Member, error) {
	return presence(p).Members(ctx, app, channel)
}

func (p trackedPresence) Count(ctx context.Context, app, channel string) (int, error) {
	return presence(p).Count(ctx, app, channel)
}

func (o trackedOccupancy) change(ctx context.Context, app, channel string, delta int) (int, error) {
	s := o.s
	s.ringMu.RLock()
	defer s.ringMu.RUnlock()
	var n int
	var err error
	if delta > 0 {
		n, err = occupancy{s}.Add(ctx, app, channel)
	} else {
		n, err = occupancy{s}.Remove(ctx, app, channel)
	}
	k := chanKey{app, channel}
	s.mirror.mu.Lock()
	if v := s.mirror.occ[k] + delta; v > 0 {
		s.mirror.occ[k] = v
	} else {
		delete(s.mirror.occ, k)
	}
	s.mirror.mu.Unlock()
	if reassertable(err) {
		s.markDirty(s.locate(app, channel).shard)
	}
	return n, err
}

func (o trackedOccupancy) Add(ctx context.Context, app, channel string) (int, error) {
	return o.change(ctx, app, channel, 1)
}

func (o trackedOccupancy) Remove(ctx context.Context, app, channel string) (int, error) {
	return o.change(ctx, app, channel, -1)
}

func (o trackedOccupancy) Count(ctx context.Context, app, channel string) (int, error) {
	return occupancy(o).Count(ctx, app, channel)
}

func (o trackedOccupancy) Channels(ctx context.Context, app, prefix string) (map[string]int, error) {
	return occupancy(o).Channels(ctx, app, prefix)
}

func (u trackedUsers) SignIn(ctx context.Context, app, userID, socketID string) (bool, error) {
	s := u.s
	s.ringMu.RLock()
	defer s.ringMu.RUnlock()
	first, err := users{s}.SignIn(ctx, app, userID, socketID)
	s.mirror.mu.Lock()
	s.mirror.users[sockKey{app, userID, socketID}] = struct{}{}
	s.mirror.mu.Unlock()
	if reassertable(err) {
		s.markDirty(s.locateUser(app, userID).shard)
	}
	return first, err
}

func (u trackedUsers) SignOut(ctx context.Context, app, userID, socketID string) (bool, error) {
	s := u.s
	s.ringMu.RLock()
	defer s.ringMu.RUnlock()
	last, err := users{s}.SignOut(ctx, app, userID, socketID)
	s.mirror.mu.Lock()
	delete(s.mirror.users, sockKey{app, userID, socketID})
	s.mirror.mu.Unlock()
	if reassertable(err) {
		s.markDirty(s.locateUser(app, userID).shard)
	}
	return last, err
}

func (u trackedUsers) Online(ctx context.Context, app string, userIDs []string) ([]bool, error) {
	return users(u).Online(ctx, app, userIDs)
}

// reapable reports whether this node may reap shard i now: not while the
// shard is Down, nor within NodeTimeout of its return, when the other nodes
// may not have refreshed their heartbeats there yet (an unreachable shard
// keeps its data but lets every heartbeat expire).
func (s *State) reapable(i int) bool {
	if s.b.Cluster {
		return true
	}
	if s.b.Ring.Health(i) == redisx.Down {
		return false
	}
	since, ok := s.b.Ring.UpSince(i)
	return !ok || time.Since(since) >= s.opts.NodeTimeout
}

// placed reports whether channel of app lives on shard i now (Channels
// ignores stale index entries a shard keeps for channels that moved).
func (s *State) placed(i int, app, channel string) bool {
	return s.b.Cluster || s.b.Ring.Pick(redisx.ShardKey(app, channel)) == i
}
