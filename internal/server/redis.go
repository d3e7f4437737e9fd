package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/rueidis"

	"github.com/heraldrt/herald/internal/apps"
	"github.com/heraldrt/herald/internal/broker"
	"github.com/heraldrt/herald/internal/broker/redisbroker"
	"github.com/heraldrt/herald/internal/hub"
	"github.com/heraldrt/herald/internal/push"
	"github.com/heraldrt/herald/internal/redisx"
	"github.com/heraldrt/herald/internal/session"
	"github.com/heraldrt/herald/internal/state/redisstate"
)

// dialRedis connects the node to its Redis backend: the sharded broker and
// the cluster-wide state, whose dead-node transitions it turns into the
// member_removed broadcasts, webhooks, counts and watchlist events the dead
// node's sessions would have produced. It fills node's state fields (and its
// socket-id tag) and returns the broker, the direct push service (started)
// and what to close on shutdown (state before clients).
func dialRedis(cfg *apps.Config, h *hub.Hub, node *session.Node, log *slog.Logger) (*redisbroker.Broker, *apiPeers, *push.Service, []func(), error) {
	be, err := redisx.Dial(cfg.Redis, cfg.RedisCluster, redisx.Options{})
	if err != nil {
		return nil, nil, nil, nil, fmt.Errorf("server: redis: %w", err)
	}
	id := nodeID()
	log = log.With("node", id)
	ctx := context.Background()
	st, err := redisstate.New(be, id, redisstate.Options{
		NodeTimeout: time.Duration(cfg.NodeTimeout) * time.Second,
		Logger:      log,
		OnDeadNodeTransition: func(t redisstate.Transition) {
			tctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			switch t.Kind {
			case redisstate.MemberRemoved:
				node.RemoteMemberRemoved(tctx, t.App, t.Channel, t.UserID)
			case redisstate.Vacated:
				node.RemoteChannelVacated(t.App, t.Channel)
			case redisstate.UserOffline:
				node.RemoteUserOffline(tctx, t.App, t.UserID)
			case redisstate.CountChanged:
				node.RemoteCountChanged(tctx, t.App, t.Channel, t.Count)
			}
		},
		OnStateLost: func(shard int) {
			log.Warn("this node's state on a shard was lost (the shard restarted empty, or this node missed heartbeats and was reaped); re-asserting it",
				"shard", be.Names[min(shard, len(be.Names)-1)])
		},
		// Shard failover: write this node's part of the channels' state to
		// the shard that serves them after every ring change.
		Reassert: true,
	})
	if err != nil {
		be.Close()
		return nil, nil, nil, nil, fmt.Errorf("server: redis state: %w", err)
	}
	// Control messages of direct push (per-node topics) go to the push
	// service, everything else to the hub.
	var pushSvc atomic.Pointer[push.Service]
	deliver := func(m *broker.Message) {
		if push.IsControl(m.Topic) {
			if ps := pushSvc.Load(); ps != nil {
				ps.Handle(m)
			}
			return
		}
		h.Deliver(m)
	}
	rb, err := redisbroker.New(be, deliver, redisbroker.Options{NodeID: id, Log: log})
	if err != nil {
		st.Close()
		be.Close()
		return nil, nil, nil, nil, fmt.Errorf("server: redis broker: %w", err)
	}
	node.Presence, node.Occupancy, node.Users = st.Presence(), st.Occupancy(), st.Users()
	node.Cache, node.Locks = st.Cache(), st.Locks()
	node.History = rb.History() // a stream per history channel on its shard
	tag, err := st.ClaimSocketTag(ctx, session.MaxSocketIDTag)
	if err != nil {
		log.Error("no socket-id tag: direct pushes to this node's sockets will answer 404 until it restarts", "err", err)
	}
	node.SocketIDTag = tag
	ps := push.New(push.Options{Node: node, NodeID: id, Tag: tag, Broker: rb, Registry: st, Log: log})
	pushSvc.Store(ps)
	_ = ps.Start(ctx) // logs and retries by itself
	peers := newAPIPeers(be.Clients[0], id, cfg.Role != apps.RoleEdge, log)
	log.Info("connected to redis", "shards", len(be.URLs), "cluster", be.Cluster, "socket_tag", tag)
	// Shard failover: this node probes every shard and moves a dead shard's
	// channels to the next shard on the ring (redisx.Monitor; README
	// "Shard failover"). Nothing to do on Redis Cluster.
	mon := be.StartMonitor(redisx.MonitorOptions{Log: log})
	return rb, peers, ps, []func(){peers.stop, func() { st.Close() }, mon.Stop, be.Close}, nil
}

// apiPeers counts the live nodes that serve the HTTP API, so that each
// enforces its share of an app's request rate. Every API node refreshes its
// entry in a sorted set (score = expiry) on the first shard every 2 s and
// reads how many entries have not expired. Approximate by design: a node
// that just died counts for up to apiPeerTTL.
type apiPeers struct {
	n    atomic.Int64
	done chan struct{}
	once sync.Once
}

const (
	apiPeersKey      = "herald:{nodes}:api"
	apiPeerTTL       = 10 * time.Second
	apiPeersInterval = 2 * time.Second
)

func newAPIPeers(c rueidis.Client, id string, serving bool, log *slog.Logger) *apiPeers {
	p := &apiPeers{done: make(chan struct{})}
	p.n.Store(1)
	go func() {
		t := time.NewTicker(apiPeersInterval)
		defer t.Stop()
		for {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			now := time.Now()
			cmds := rueidis.Commands{}
			if serving {
				cmds = append(cmds, c.B().Zadd().Key(apiPeersKey).ScoreMember().
					ScoreMember(float64(now.Add(apiPeerTTL).UnixMilli()), id).Build())
			}
			cmds = append(cmds,
				c.B().Zremrangebyscore().Key(apiPeersKey).Min("-inf").Max(strconv.FormatInt(now.UnixMilli(), 10)).Build(),
				c.B().Zcard().Key(apiPeersKey).Build())
			res := c.DoMulti(ctx, cmds...)
			cancel()
			if n, err := res[len(res)-1].AsInt64(); err == nil {
				p.n.Store(max(1, n))
			} else {
				log.Debug("api peer count failed", "err", err)
			}
			select {
			case <-p.done:
				if serving {
					ctx, cancel := context.WithTimeout(context.Background(), time.Second)
					_ = c.Do(ctx, c.B().Zrem().Key(apiPeersKey).Member(id).Build()).Error()
					cancel()
				}
				return
			case <-t.C:
			}
		}
	}()
	return p
}

// count is the number of live API nodes (at least 1).
func (p *apiPeers) count() int { return int(p.n.Load()) }

func (p *apiPeers) stop() { p.once.Do(func() { close(p.done) }) }

// nodeID is unique per process start (the state layer requires a new id per
// process): host, pid and random bits.
func nodeID() string {
	host, _ := os.Hostname()
	var b [4]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%s-%d-%s", host, os.Getpid(), hex.EncodeToString(b[:]))
}

// stillGone reports whether a held channel_vacated (userID "") or
// member_removed is still true in the cluster-wide state. On errors it says
// yes: a webhook too many beats a lost one.
func stillGone(node *session.Node, app, channel, userID string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if userID == "" {
		n, err := node.Occupancy.Count(ctx, app, channel)
		return err != nil || n == 0
	}
	members, err := node.Presence.Members(ctx, app, channel)
	if err != nil {
		return true
	}
	for _, m := range members {
		if m.UserID == userID {
			return false
		}
	}
	return true
}
