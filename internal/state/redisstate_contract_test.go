package state_test

import (
	"fmt"
	"testing"

	"github.com/heraldrt/herald/internal/redistest"
	"github.com/heraldrt/herald/internal/redisx"
	"github.com/heraldrt/herald/internal/state/redisstate"
)

// The Redis implementations meet the same contract as the memory ones, on one
// shard, on two independent shards and on a 3-master Redis Cluster.
func TestRedisContract(t *testing.T) {
	t.Run("OneShard", func(t *testing.T) {
		s := redistest.Start(t)
		runRedisContract(t, []*redistest.Server{s}, []string{s.URL()}, "")
	})
	t.Run("TwoShards", func(t *testing.T) {
		a, b := redistest.Start(t), redistest.Start(t)
		runRedisContract(t, []*redistest.Server{a, b}, []string{a.URL(), b.URL()}, "")
	})
	t.Run("Cluster", func(t *testing.T) {
		c := redistest.StartCluster(t, 3)
		runRedisContract(t, c.Nodes, nil, c.Seed())
	})
}

func runRedisContract(t *testing.T, servers []*redistest.Server, shards []string, cluster string) {
	b, err := redisx.Dial(shards, cluster, redisx.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	n := 0
	runContract(t, func(t *testing.T) impl {
		for _, s := range servers {
			if _, err := s.Do("FLUSHALL"); err != nil {
				t.Fatal(err)
			}
		}
		n++
		st, err := redisstate.New(b, fmt.Sprint("node-", n), redisstate.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = st.Close() })
		return impl{
			Presence:  st.Presence(),
			Occupancy: st.Occupancy(),
			Users:     st.Users(),
			Cache:     st.Cache(),
			Locks:     st.Locks(),
		}
	}, contractOptions{ConcurrentRounds: 40})
}
