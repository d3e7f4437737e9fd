// Package redisstate keeps Herald's cluster-wide state (presence members,
// subscription counts, signed-in users, cache channels, locks) in Redis, so
// that every node of a cluster sees the same channels and each transition
// (channel occupied/vacated, member added/removed, user online/offline) is
// reported by exactly one node.
//
// # Two-level counts
//
// Following the subscription-count seed, every count is kept at two levels,
// per node and global, and both are changed by one Lua script, so the global
// count is always the sum of the per-node ones. Each node heartbeats with an
// expiry; when a node's heartbeat expires (it was killed, or lost Redis for
// longer than NodeTimeout), a surviving node's reaper subtracts its per-node
// counts from the global ones, removes its presence and signed-in sockets, and
// reports each resulting transition through Options.OnDeadNodeTransition.
//
// # Placement
//
// With independent shards, a channel's state lives on the shard
// redisx.Backend.For(app, channel) picks, the same one its pub/sub uses, so a
// dead shard affects the same channels for state and messages. That is the
// channel's home shard unless this node's ring has it Down, when it is the
// next shard of the channel's rendezvous order; with Options.Reassert each
// node writes its part of the state again wherever its channels moved
// (failover.go). A user's
// signed-in sockets live with its user channel (#server-to-user-<id>). With
// Redis Cluster there is a single client and Redis routes by key slot.
//
// # Key layout
//
// Keys of channels are grouped into buckets: bucket = fnv64a(channel) mod
// Options.Buckets (1 with shards, 256 with Redis Cluster by default), and all
// keys of one bucket share the hash tag {<app>:<bucket>}, so one script can
// update a channel's keys and the bucket's index atomically without CROSSSLOT
// errors, and an app's channels still spread over Buckets slots. With P =
// "herald:{<app>:<bucket>}:" (app with %, :, { and } percent-escaped):
//
//	P occ               hash channel → global subscription count; the index
//	                    of occupied channels for the channels API
//	P occn:<node>       hash channel → that node's subscription count
//	P pm:<channel>      hash user → user_info (of the user's first socket);
//	                    HLEN is the member count
//	P pc:<channel>      hash user → the user's sockets in the channel, all nodes
//	P ps:<node>         hash "<socket>\0<channel>" → user: that node's
//	                    presence sockets
//	P uc                hash user → signed-in sockets on all nodes
//	P us:<node>         hash "<socket>\0<user>" → user: that node's
//	                    signed-in sockets
//	P un:<user>         hash node → the user's signed-in sockets there: the
//	                    connection registry of direct push (registry.go)
//	P cache:<channel>   string "<len(event)>:<event><data>", PX = cache TTL
//	P lock:<name>       string node id, NX PX = lock TTL
//
// Channels(prefix) reads the occ index of every bucket on every shard (HSCAN
// with MATCH, a few commands pipelined per shard): no cross-slot command and
// no SCAN over the keyspace. Node liveness uses one hash tag per shard, so its
// scripts stay in one slot:
//
//	herald:{nodes}:set          set of node ids that may have state here
//	herald:{nodes}:alive:<node> string token, PX = NodeTimeout (heartbeat)
//	herald:{nodes}:reg:<node>   set "<bucket>:<app>": the buckets in which the
//	                            node has per-node keys, written before its first
//	                            count there, so the reaper knows what to undo
//	herald:{nodes}:reaper       the reaper lock (SET NX PX)
//
// # Heartbeat and reaper
//
// Every HeartbeatInterval each node runs one script per shard that sets its
// alive key (PX NodeTimeout) and lists it in the node set; the first
// operation of a node in a bucket runs the same script with the bucket's
// registry entry, before the node writes any per-node key there. Every
// ReapInterval, on each shard, the node holding the reaper lock (SET NX PX
// ReapLockTTL) lists the nodes whose alive key is gone and, for each entry of
// such a node's registry, runs the reap script until the node has nothing
// left in that bucket: a batch at a time it deletes the node's presence
// sockets, signed-in sockets and per-node counts, subtracts them from the
// global ones and returns the transitions, which the reaper passes to
// OnDeadNodeTransition. Then the entry is unregistered and, once the registry
// is empty, the node forgotten (both only while its heartbeat stays gone).
// Deleting an entry and reporting its transition are one atomic step, so two
// reapers (the lock expired, or a reaper died half-way and another took
// over) never report a transition twice; a reaper killed between a script
// and the callback loses those transitions.
//
// A node that was only slow (no heartbeat for NodeTimeout) is reaped like a
// dead one; its next heartbeat sees the alive key gone, restores its registry
// and calls OnStateLost. Its sockets' later leaves then find nothing to
// remove (Leave and SignOut report nothing; Remove returns the current count,
// 0 if the channel is empty).
//
// Every operation is bounded by Options.Timeout; count-changing scripts are
// never retried by the client (they are not idempotent), so a timeout may
// leave the change applied or not.
//
// Changing the shard list moves channels between shards; do it by restarting
// the nodes (each process must use a new node id): the old ids are reaped on
// every shard that is still listed.
package redisstate

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/heraldrt/herald/internal/protocol"
	"github.com/heraldrt/herald/internal/redisx"
	"github.com/heraldrt/herald/internal/state"
	"github.com/redis/rueidis"
)

// Options tune a State. Zero values take the defaults.
type Options struct {
	// NodeTimeout is how long a node may go without heartbeating before the
	// others reap its state (default 10 s).
	NodeTimeout time.Duration
	// HeartbeatInterval is how often the node refreshes its heartbeat
	// (default NodeTimeout/4).
	HeartbeatInterval time.Duration
	// ReapInterval is how often the reaper looks for dead nodes (default
	// 2 s); negative disables this node's reaper.
	ReapInterval time.Duration
	// ReapLockTTL bounds how long one reaper holds the per-shard reaper lock
	// (default 5 s). If it dies mid-cleanup, another takes over after that.
	ReapLockTTL time.Duration
	// Timeout bounds every operation (default 2 s), on top of the caller's
	// context.
	Timeout time.Duration
	// Buckets is the number of hash-tag buckets per app (default 1 with
	// shards, 256 with Redis Cluster). Every node must use the same value.
	Buckets int
	// ReapBatch is how many entries one reap script call handles (default 256).
	ReapBatch int
	// OnDeadNodeTransition receives each transition caused by removing a dead
	// node's state, once per cluster. Calls come from the reaper (one at a
	// time, never concurrently; do not block for long). A reaper that dies
	// between removing an entry and this call loses that transition: it is
	// never reported twice. The server turns them into member_removed
	// broadcasts, webhooks, subscription counts and watchlist events.
	OnDeadNodeTransition func(Transition)
	// OnStateLost is called when this node finds its own heartbeat on shard
	// gone although it had state there: it was taken for dead and reaped (or
	// the shard restarted empty), so its sockets are no longer counted there.
	// Its registry is restored; the caller may drop its connections so that
	// clients reconnect and are counted again. It may be called from the
	// heartbeat or from an operation's goroutine.
	OnStateLost func(shard int)
	// Logger gets errors of the background loops (default: discard).
	Logger *slog.Logger
	// Reassert (shards only) keeps a record of this node's subscriptions,
	// presence sockets and signed-in sockets and writes them back to the
	// shard that serves each channel after a shard failover or failback
	// (redisx.Ring), when this node's state on a shard was lost
	// (OnStateLost), and after a failed write (failover.go).
	Reassert bool
}

// ErrClosed is returned by operations after Close.
var ErrClosed = errors.New("redisstate: closed")

// State is one node's view of the cluster-wide state. Its Presence,
// Occupancy, Users, Cache and Locks methods return the state interfaces.
type State struct {
	b     *redisx.Backend
	node  string
	token string // this process's heartbeat value
	opts  Options
	log   *slog.Logger

	cbMu sync.Mutex // serializes OnDeadNodeTransition calls

	mu         sync.Mutex
	registered map[regKey]struct{}
	closed     bool
	tag        uint64 // socket-id tag claimed by ClaimSocketTag (registry.go); 0 = none

	stop   context.CancelFunc
	loopCx context.Context
	wg     sync.WaitGroup

	// Re-asserting (failover.go): nil without Options.Reassert.
	mirror *mirror
	ra     *reassert
	ringMu sync.RWMutex // operations read-lock it; a reconcile write-locks it
}

type regKey struct {
	shard int
	entry string // "<bucket>:<app>"
}

// New returns node nodeID's state on b, heartbeats once and starts the
// heartbeat and reaper loops; Close stops them. nodeID must be unique per
// process lifetime (a restarted process takes a new id; the old one is
// reaped). A shard that does not answer does not make New fail.
func New(b *redisx.Backend, nodeID string, opts Options) (*State, error) {
	if b == nil || len(b.Clients) == 0 {
		return nil, errors.New("redisstate: no Redis backend")
	}
	if nodeID == "" {
		return nil, errors.New("redisstate: empty node id")
	}
	if opts.NodeTimeout <= 0 {
		opts.NodeTimeout = 10 * time.Second
	}
	if opts.HeartbeatInterval <= 0 {
		opts.HeartbeatInterval = opts.NodeTimeout / 4
	}
	if opts.HeartbeatInterval >= opts.NodeTimeout {
		return nil, fmt.Errorf("redisstate: heartbeat interval %v must be below the node timeout %v", opts.HeartbeatInterval, opts.NodeTimeout)
	}
	if opts.ReapInterval == 0 {
		opts.ReapInterval = 2 * time.Second
	}
	if opts.ReapLockTTL <= 0 {
		opts.ReapLockTTL = 5 * time.Second
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 2 * time.Second
	}
	if opts.Buckets <= 0 {
		opts.Buckets = 1
		if b.Cluster {
			opts.Buckets = 256
		}
	}
	if opts.ReapBatch <= 0 {
		opts.ReapBatch = 256
	}
	tok := make([]byte, 8)
	_, _ = rand.Read(tok)
	s := &State{
		b:          b,
		node:       nodeID,
		token:      nodeID + "/" + hex.EncodeToString(tok),
		opts:       opts,
		log:        opts.Logger,
		registered: make(map[regKey]struct{}),
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.loopCx, s.stop = context.WithCancel(context.Background())
	if opts.Reassert && !b.Cluster {
		s.startReassert()
	}
	// The first heartbeat before New returns; a shard that does not answer
	// is logged, not fatal (the loop keeps trying).
	if err := s.Heartbeat(s.loopCx); err != nil {
		s.log.Warn("heartbeat failed", "node", s.node, "err", err)
	}
	s.wg.Add(1)
	go s.heartbeatLoop()
	if opts.ReapInterval > 0 {
		s.wg.Add(1)
		go s.reapLoop()
	}
	return s, nil
}

// NodeID is this node's id.
func (s *State) NodeID() string { return s.node }

// Close stops the heartbeat and the reaper and deletes this node's heartbeat,
// so that the other nodes reap whatever state it still has at once (call it
// after the node's sessions have left). Operations after Close fail with
// ErrClosed.
func (s *State) Close() error {
	if !s.halt() {
		return nil
	}
	var errs []error
	s.releaseSocketTag()
	for i, c := range s.b.Clients {
		ctx, cancel := context.WithTimeout(context.Background(), s.opts.Timeout)
		if err := c.Do(ctx, c.B().Del().Key(aliveKey(s.node)).Build()).Error(); err != nil {
			errs = append(errs, fmt.Errorf("redisstate: shard %d: %w", i, err))
		}
		cancel()
	}
	return errors.Join(errs...)
}

// halt stops the loops and refuses further operations, leaving everything in
// Redis as it is (what a SIGKILL leaves). It reports whether it did anything.
func (s *State) halt() bool {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return false
	}
	s.closed = true
	s.mu.Unlock()
	s.stop()
	s.wg.Wait()
	return true
}

func (s *State) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// Presence returns the cluster-wide presence registry.
func (s *State) Presence() state.Presence {
	if s.mirror != nil {
		return trackedPresence{s}
	}
	return presence{s}
}

// Occupancy returns the cluster-wide subscription counts.
func (s *State) Occupancy() state.Occupancy {
	if s.mirror != nil {
		return trackedOccupancy{s}
	}
	return occupancy{s}
}

// Users returns the cluster-wide signed-in users.
func (s *State) Users() state.Users {
	if s.mirror != nil {
		return trackedUsers{s}
	}
	return users{s}
}

// Cache returns the cluster-wide cache-channel store.
func (s *State) Cache() state.Cache { return cache{s} }

// Locks returns cluster-wide locks with expiry.
func (s *State) Locks() state.Locks { return locks{s} }

// call bounds an operation by Options.Timeout and refuses it after Close.
func (s *State) call(ctx context.Context) (context.Context, context.CancelFunc, error) {
	if s.isClosed() {
		return nil, nil, ErrClosed
	}
	ctx, cancel := context.WithTimeout(ctx, s.opts.Timeout)
	return ctx, cancel, nil
}

// loc is where the keys of one channel (or user, cache entry, lock) live.
type loc struct {
	shard  int
	c      rueidis.Client
	bucket int
	app    string
	p      string // key prefix "herald:{<app>:<bucket>}:"
}

func (s *State) locate(app, name string) loc {
	shard, c := s.b.For(app, name)
	bucket := 0
	if s.opts.Buckets > 1 {
		h := fnv.New64a()
		_, _ = h.Write([]byte(name))
		bucket = int(h.Sum64() % uint64(s.opts.Buckets))
	}
	return loc{shard: shard, c: c, bucket: bucket, app: app, p: bucketPrefix(app, bucket)}
}

func (s *State) locateUser(app, userID string) loc {
	return s.locate(app, protocol.UserChannel(userID))
}

func bucketPrefix(app string, bucket int) string {
	return "herald:{" + escape(app) + ":" + strconv.Itoa(bucket) + "}:"
}

// escape keeps an app id from ending the hash tag early or being confused
// with the bucket number.
func escape(s string) string {
	if !strings.ContainsAny(s, "%:{}") {
		return s
	}
	r := strings.NewReplacer("%", "%25", ":", "%3A", "{", "%7B", "}", "%7D")
	return r.Replace(s)
}

const nodesKey = "herald:{nodes}:set"
const reaperKey = "herald:{nodes}:reaper"

func aliveKey(node string) string   { return "herald:{nodes}:alive:" + node }
func regKeyName(node string) string { return "herald:{nodes}:reg:" + node }

func regEntry(bucket int, app string) string { return strconv.Itoa(bucket) + ":" + app }

func parseRegEntry(e string) (bucket int, app string, ok bool) {
	i := strings.IndexByte(e, ':')
	if i <= 0 {
		return 0, "", false
	}
	b, err := strconv.Atoi(e[:i])
	if err != nil || b < 0 {
		return 0, "", false
	}
	return b, e[i+1:], true
}

// register makes sure the node's registry on l's shard lists l's bucket
// before the node writes its first per-node key there, so the reaper can
// find the node's state if it dies.
func (s *State) register(ctx context.Context, l loc) error {
	k := regKey{l.shard, regEntry(l.bucket, l.app)}
	s.mu.Lock()
	_, ok := s.registered[k]
	s.mu.Unlock()
	if ok {
		return nil
	}
	if err := s.beat(ctx, l.shard, k.entry); err != nil {
		return err
	}
	s.mu.Lock()
	s.registered[k] = struct{}{}
	s.mu.Unlock()
	return nil
}

func (s *State) wrap(op string, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, ErrClosed) {
		return err
	}
	return fmt.Errorf("redisstate: %s: %w", op, err)
}
