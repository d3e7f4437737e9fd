package state

import (
	"context"
	"sort"
	"strings"
	"sync"
	"time"
)

type key struct{ app, name string }

// MemoryPresence is the single-process Presence.
type MemoryPresence struct {
	mu       sync.Mutex
	channels map[key]map[string]*presenceUser
}

type presenceUser struct {
	info    []byte
	sockets map[string]struct{}
}

var _ Presence = (*MemoryPresence)(nil)

// NewMemoryPresence returns an empty presence registry.
func NewMemoryPresence() *MemoryPresence {
	return &MemoryPresence{channels: make(map[key]map[string]*presenceUser)}
}

// Join implements Presence. The first connection's user_info is kept.
func (p *MemoryPresence) Join(_ context.Context, app, channel string, m Member, socketID string, max int) (bool, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	k := key{app, channel}
	users := p.channels[k]
	if users == nil {
		users = make(map[string]*presenceUser)
		p.channels[k] = users
	}
	u := users[m.UserID]
	if u == nil {
		if max > 0 && len(users) >= max {
			if len(users) == 0 {
				delete(p.channels, k)
			}
			return false, ErrChannelFull
		}
		u = &presenceUser{info: append([]byte(nil), m.UserInfo...), sockets: make(map[string]struct{}, 1)}
		if m.UserInfo == nil {
			u.info = nil
		}
		users[m.UserID] = u
	}
	u.sockets[socketID] = struct{}{}
	return len(u.sockets) == 1, nil
}

// Leave implements Presence.
func (p *MemoryPresence) Leave(_ context.Context, app, channel, userID, socketID string) (bool, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	k := key{app, channel}
	users := p.channels[k]
	u := users[userID]
	if u == nil {
		return false, nil
	}
	if _, ok := u.sockets[socketID]; !ok {
		return false, nil
	}
	delete(u.sockets, socketID)
	if len(u.sockets) > 0 {
		return false, nil
	}
	delete(users, userID)
	if len(users) == 0 {
		delete(p.channels, k)
	}
	return true, nil
}

// Members implements Presence.
func (p *MemoryPresence) Members(_ context.Context, app, channel string) ([]Member, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	users := p.channels[key{app, channel}]
	out := make([]Member, 0, len(users))
	for id, u := range users {
		out = append(out, Member{UserID: id, UserInfo: u.info})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].UserID < out[j].UserID })
	return out, nil
}

// Count implements Presence.
func (p *MemoryPresence) Count(_ context.Context, app, channel string) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.channels[key{app, channel}]), nil
}

// MemoryOccupancy is the single-process Occupancy.
type MemoryOccupancy struct {
	mu     sync.Mutex
	counts map[string]map[string]int // app → channel → subscriptions
}

var _ Occupancy = (*MemoryOccupancy)(nil)

// NewMemoryOccupancy returns empty counts.
func NewMemoryOccupancy() *MemoryOccupancy {
	return &MemoryOccupancy{counts: make(map[string]map[string]int)}
}

// Add implements Occupancy.
func (o *MemoryOccupancy) Add(_ context.Context, app, channel string) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	m := o.counts[app]
	if m == nil {
		m = make(map[string]int)
		o.counts[app] = m
	}
	m[channel]++
	return m[channel], nil
}

// Remove implements Occupancy. It never goes below zero.
func (o *MemoryOccupancy) Remove(_ context.Context, app, channel string) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	m := o.counts[app]
	n := m[channel] - 1
	if n <= 0 {
		delete(m, channel)
		if len(m) == 0 {
			delete(o.counts, app)
		}
		return 0, nil
	}
	m[channel] = n
	return n, nil
}

// Count implements Occupancy.
func (o *MemoryOccupancy) Count(_ context.Context, app, channel string) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.counts[app][channel], nil
}

// Channels implements Occupancy.
func (o *MemoryOccupancy) Channels(_ context.Context, app, prefix string) (map[string]int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	out := make(map[string]int)
	for ch, n := range o.counts[app] {
		if strings.HasPrefix(ch, prefix) {
			out[ch] = n
		}
	}
	return out, nil
}

// MemoryUsers is the single-process Users.
type MemoryUsers struct {
	mu    sync.Mutex
	users map[key]map[string]struct{} // (app, user) → sockets
}

var _ Users = (*MemoryUsers)(nil)

// NewMemoryUsers returns an empty user registry.
func NewMemoryUsers() *MemoryUsers {
	return &MemoryUsers{users: make(map[key]map[string]struct{})}
}

// SignIn implements Users.
func (u *MemoryUsers) SignIn(_ context.Context, app, userID, socketID string) (bool, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	k := key{app, userID}
	s := u.users[k]
	if s == nil {
		s = make(map[string]struct{}, 1)
		u.users[k] = s
	}
	s[socketID] = struct{}{}
	return len(s) == 1, nil
}

// SignOut implements Users.
func (u *MemoryUsers) SignOut(_ context.Context, app, userID, socketID string) (bool, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	k := key{app, userID}
	s := u.users[k]
	if _, ok := s[socketID]; !ok {
		return false, nil
	}
	delete(s, socketID)
	if len(s) == 0 {
		delete(u.users, k)
		return true, nil
	}
	return false, nil
}

// Online implements Users.
func (u *MemoryUsers) Online(_ context.Context, app string, userIDs []string) ([]bool, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	out := make([]bool, len(userIDs))
	for i, id := range userIDs {
		out[i] = len(u.users[key{app, id}]) > 0
	}
	return out, nil
}

// MemoryCache is the single-process Cache. Expired entries are dropped when
// read and by a sweep every time Set is called 1024 times.
type MemoryCache struct {
	mu      sync.Mutex
	entries map[key]cacheEntry
	sets    int
	now     func() time.Time
}

type cacheEntry struct {
	ev      CachedEvent
	expires time.Time
}

var _ Cache = (*MemoryCache)(nil)

// NewMemoryCache returns an empty cache.
func NewMemoryCache() *MemoryCache {
	return &MemoryCache{entries: make(map[key]cacheEntry), now: time.Now}
}

// Set implements Cache.
func (c *MemoryCache) Set(_ context.Context, app, channel string, ev CachedEvent, ttl time.Duration) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	c.entries[key{app, channel}] = cacheEntry{ev: ev, expires: now.Add(ttl)}
	c.sets++
	if c.sets%1024 == 0 {
		for k, e := range c.entries {
			if !now.Before(e.expires) {
				delete(c.entries, k)
			}
		}
	}
	return nil
}

// Get implements Cache.
func (c *MemoryCache) Get(_ context.Context, app, channel string) (CachedEvent, time.Duration, bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	k := key{app, channel}
	e, ok := c.entries[k]
	if !ok {
		return CachedEvent{}, 0, false, nil
	}
	left := e.expires.Sub(c.now())
	if left <= 0 {
		delete(c.entries, k)
		return CachedEvent{}, 0, false, nil
	}
	return e.ev, left, true, nil
}

// MemoryLocks implements Locks in one process. Expired entries are pruned as
// new ones are added, so the map stays as small as the live locks.
type MemoryLocks struct {
	mu      sync.Mutex
	until   map[string]time.Time
	now     func() time.Time
	sweepAt int
}

// NewMemoryLocks returns an empty lock table.
func NewMemoryLocks() *MemoryLocks {
	return &MemoryLocks{until: make(map[string]time.Time), now: time.Now, sweepAt: 1024}
}

// TryLock implements Locks.
func (m *MemoryLocks) TryLock(_ context.Context, app, name string, ttl time.Duration) (bool, error) {
	key := app + "\x00" + name
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	if t, ok := m.until[key]; ok && now.Before(t) {
		return false, nil
	}
	if len(m.until) >= m.sweepAt {
		for k, t := range m.until {
			if !now.Before(t) {
				delete(m.until, k)
			}
		}
		m.sweepAt = max(1024, 2*len(m.until))
	}
	m.until[key] = now.Add(ttl)
	return true, nil
}
