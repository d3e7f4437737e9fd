package redisstate

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/redis/rueidis"
)

// Kind is what a dead node's removal changed.
type Kind int

const (
	// MemberRemoved: UserID's last socket in presence channel Channel was on
	// the dead node (send member_removed, member_removed webhook).
	MemberRemoved Kind = iota + 1
	// UserOffline: UserID's last signed-in socket was on the dead node (tell
	// its watchers it went offline).
	UserOffline
	// Vacated: Channel has no subscription left (channel_vacated webhook).
	Vacated
	// CountChanged: Channel lost subscriptions but is still occupied; Count
	// is the new global count (subscription_count).
	CountChanged
)

func (k Kind) String() string {
	switch k {
	case MemberRemoved:
		return "member_removed"
	case UserOffline:
		return "user_offline"
	case Vacated:
		return "vacated"
	case CountChanged:
		return "count_changed"
	}
	return "kind(" + strconv.Itoa(int(k)) + ")"
}

// Transition is one change caused by removing a dead node's state. For a
// presence channel, its MemberRemoved transitions come before the channel's
// Vacated or CountChanged.
type Transition struct {
	Kind    Kind
	Node    string // the dead node
	App     string
	Channel string // empty for UserOffline
	UserID  string // MemberRemoved and UserOffline
	Count   int    // CountChanged: the new global subscription count
}

// beat refreshes this node's heartbeat on shard, lists it in the node index
// and adds registry entries. When the heartbeat had expired although the node
// had state on the shard (it was reaped, or the shard restarted empty), it
// restores the registry and reports OnStateLost.
func (s *State) beat(ctx context.Context, shard int, entries ...string) error {
	c := s.b.Clients[shard]
	keys := []string{aliveKey(s.node), nodesKey, regKeyName(s.node)}
	args := append([]string{s.node, s.token, strconv.FormatInt(s.opts.NodeTimeout.Milliseconds(), 10)}, entries...)
	// The entries registered before this beat: each was written together
	// with a live heartbeat, so if the heartbeat is gone now, they were lost.
	var had []string
	s.mu.Lock()
	for k := range s.registered {
		if k.shard == shard {
			had = append(had, k.entry)
		}
	}
	s.mu.Unlock()
	prev, err := beatScript.Exec(ctx, c, keys, args).ToString()
	lost := false
	switch {
	case rueidis.IsRedisNil(err):
		lost = true
	case err != nil:
		return err
	case prev != s.token:
		s.log.Error("another process heartbeats with this node id; node ids must be unique", "node", s.node, "shard", shard)
	}
	if !lost || len(had) == 0 {
		return nil
	}
	s.log.Error("this node's heartbeat had expired: its state on the shard was reaped or lost", "node", s.node, "shard", shard)
	err = beatScript.Exec(ctx, c, keys, append(args[:3:3], had...)).Error()
	if err != nil {
		// Forget them locally instead: the next operation in each bucket
		// registers it again.
		s.mu.Lock()
		for _, e := range had {
			delete(s.registered, regKey{shard, e})
		}
		s.mu.Unlock()
	}
	// Report the loss even when restoring the registry failed: the first
	// script has written the heartbeat again, so no later beat would see
	// the loss, and the state would stay lost for good (found by the chaos
	// fault test: members missing from a presence channel after a Redis
	// shard restart, when the connection broke between the two scripts).
	if s.opts.OnStateLost != nil {
		s.opts.OnStateLost(shard)
	}
	return err
}

// Heartbeat refreshes this node's heartbeat on every shard once (the
// heartbeat loop does it every HeartbeatInterval).
func (s *State) Heartbeat(ctx context.Context) error {
	if s.isClosed() {
		return ErrClosed
	}
	return s.eachShard(func(shard int) error {
		cctx, cancel := context.WithTimeout(ctx, s.opts.Timeout)
		defer cancel()
		if err := s.beat(cctx, shard); err != nil {
			return fmt.Errorf("redisstate: heartbeat on shard %d: %w", shard, err)
		}
		return nil
	})
}

// eachShard runs f for every shard in parallel, so that a shard that does not
// answer delays no other.
func (s *State) eachShard(f func(shard int) error) error {
	if len(s.b.Clients) == 1 {
		return f(0)
	}
	errs := make([]error, len(s.b.Clients))
	var wg sync.WaitGroup
	for shard := range s.b.Clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[shard] = f(shard)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

func (s *State) heartbeatLoop() { s.every(s.opts.HeartbeatInterval, "heartbeat", s.Heartbeat) }

func (s *State) reapLoop() { s.every(s.opts.ReapInterval, "reaper", s.Reap) }

// every runs f each interval until the state closes, logging its failures.
func (s *State) every(interval time.Duration, what string, f func(context.Context) error) {
	defer s.wg.Done()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-s.loopCx.Done():
			return
		case <-t.C:
		}
		if err := f(s.loopCx); err != nil && s.loopCx.Err() == nil {
			s.log.Warn(what+" failed", "node", s.node, "err", err)
		}
	}
}

// Reap runs one reaper pass on every shard (the reaper loop does it every
// ReapInterval): where this node gets the shard's reaper lock, it removes
// the state of every node whose heartbeat has expired and reports the
// transitions to OnDeadNodeTransition.
func (s *State) Reap(ctx context.Context) error {
	if s.isClosed() {
		return ErrClosed
	}
	return s.eachShard(func(shard int) error {
		if err := s.reapShard(ctx, shard); err != nil {
			return fmt.Errorf("redisstate: reaper on shard %d: %w", shard, err)
		}
		return nil
	})
}

func (s *State) reapShard(ctx context.Context, shard int) error {
	if !s.reapable(shard) {
		return nil // Down, or just back (failover.go)
	}
	c := s.b.Clients[shard]
	cctx, cancel := context.WithTimeout(ctx, s.opts.Timeout)
	err := c.Do(cctx, c.B().Set().Key(reaperKey).Value(s.token).Nx().PxMilliseconds(s.opts.ReapLockTTL.Milliseconds()).Build()).Error()
	cancel()
	if rueidis.IsRedisNil(err) {
		return nil // another node is reaping this shard
	}
	if err != nil {
		return err
	}
	defer func() {
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.opts.Timeout)
		defer cancel()
		if err := unlockScript.Exec(uctx, c, []string{reaperKey}, []string{s.token}).Error(); err != nil {
			s.log.Warn("reaper unlock failed", "shard", shard, "err", err)
		}
	}()
	dead, err := s.deadNodes(ctx, shard)
	if err != nil {
		return err
	}
	for _, id := range dead {
		if err := s.reapNode(ctx, shard, id, -1); err != nil {
			return fmt.Errorf("node %s: %w", id, err)
		}
	}
	return nil
}

// deadNodes lists the nodes of shard's node index whose heartbeat is gone.
func (s *State) deadNodes(ctx context.Context, shard int) ([]string, error) {
	c := s.b.Clients[shard]
	cctx, cancel := context.WithTimeout(ctx, s.opts.Timeout)
	defer cancel()
	ids, err := c.Do(cctx, c.B().Smembers().Key(nodesKey).Build()).AsStrSlice()
	if err != nil {
		return nil, err
	}
	others := ids[:0]
	for _, id := range ids {
		if id != s.node {
			others = append(others, id)
		}
	}
	if len(others) == 0 {
		return nil, nil
	}
	cmds := make(rueidis.Commands, len(others))
	for i, id := range others {
		cmds[i] = c.B().Exists().Key(aliveKey(id)).Build()
	}
	var dead []string
	for i, r := range c.DoMulti(cctx, cmds...) {
		n, err := r.AsInt64()
		if err != nil {
			return nil, err
		}
		if n == 0 {
			dead = append(dead, others[i])
		}
	}
	return dead, nil
}

// maxReapRounds bounds the script calls for one bucket of one dead node.
const maxReapRounds = 100000

// reapNode removes dead node id's state from shard, bucket by bucket as its
// registry lists them; limit >= 0 stops after that many buckets (tests
// simulate a reaper dying mid-way). Every step is idempotent: a bucket is
// unregistered only once it is empty, and the node is forgotten only once its
// registry is empty, so a crashed reaper's work is finished by the next one.
func (s *State) reapNode(ctx context.Context, shard int, id string, limit int) error {
	c := s.b.Clients[shard]
	nodeKeys := []string{aliveKey(id), regKeyName(id)}
	cctx, cancel := context.WithTimeout(ctx, s.opts.Timeout)
	entries, err := c.Do(cctx, c.B().Smembers().Key(regKeyName(id)).Build()).AsStrSlice()
	cancel()
	if err != nil {
		return err
	}
	batch := strconv.Itoa(s.opts.ReapBatch)
	for i, e := range entries {
		if limit >= 0 && i >= limit {
			return nil
		}
		// Stop if the node is back (it was only slow): it restores its own
		// registry and reports OnStateLost for what was reaped already.
		cctx, cancel := context.WithTimeout(ctx, s.opts.Timeout)
		back, err := c.Do(cctx, c.B().Exists().Key(aliveKey(id)).Build()).AsInt64()
		cancel()
		if err != nil {
			return err
		}
		if back > 0 {
			return nil
		}
		if bucket, app, ok := parseRegEntry(e); ok {
			if err := s.reapBucket(ctx, c, id, app, bucket, batch); err != nil {
				return err
			}
		}
		cctx, cancel = context.WithTimeout(ctx, s.opts.Timeout)
		err = unregisterScript.Exec(cctx, c, nodeKeys, []string{e}).Error()
		cancel()
		if err != nil {
			return err
		}
	}
	cctx, cancel = context.WithTimeout(ctx, s.opts.Timeout)
	defer cancel()
	return forgetScript.Exec(cctx, c, append(nodeKeys, nodesKey), []string{id}).Error()
}

func (s *State) reapBucket(ctx context.Context, c rueidis.Client, id, app string, bucket int, batch string) error {
	p := bucketPrefix(app, bucket)
	keys := []string{p + "occ", p + "occn:" + id, p + "ps:" + id, p + "us:" + id, p + "uc"}
	for round := 0; round < maxReapRounds; round++ {
		cctx, cancel := context.WithTimeout(ctx, s.opts.Timeout)
		out, err := reapScript.Exec(cctx, c, keys, []string{p, batch, id}).AsStrSlice()
		cancel()
		if err != nil {
			return err
		}
		if len(out) == 0 || (len(out)-1)%4 != 0 {
			return fmt.Errorf("reap script: unexpected reply of %d elements", len(out))
		}
		for j := 1; j+3 < len(out); j += 4 {
			t := Transition{Node: id, App: app, Channel: out[j+1], UserID: out[j+2]}
			switch out[j] {
			case "m":
				t.Kind = MemberRemoved
			case "u":
				t.Kind = UserOffline
			case "v":
				t.Kind = Vacated
			case "c":
				t.Kind = CountChanged
				t.Count, _ = strconv.Atoi(out[j+3])
			default:
				continue
			}
			if s.opts.OnDeadNodeTransition != nil {
				s.cbMu.Lock()
				s.opts.OnDeadNodeTransition(t)
				s.cbMu.Unlock()
			}
		}
		if out[0] == "0" {
			return nil
		}
	}
	return errors.New("reap did not finish")
}
