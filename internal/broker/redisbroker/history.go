package redisbroker

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/rueidis"

	"github.com/heraldrt/herald/internal/broker"
	"github.com/heraldrt/herald/internal/history"
)

// History is the broker's history.Store: each history channel keeps a Redis
// stream on the channel's shard (the shard Publish uses), and one Lua script
// assigns the serial, appends the event, trims the stream and publishes the
// frame, so that the order of serials is the order in which every node
// receives the channel's events.
//
// The stream's key is the channel's pub/sub name (channelName): on a Redis
// Cluster the key and the sharded pub/sub channel are then in the same slot,
// so the script may SPUBLISH. Entry ids are "<serial>-0"; since a serial is a
// time in microseconds (see package history), trimming by age is XTRIM MINID.
// Each entry has fields p (the previous serial, for continuity), e (event
// name) and d (data). Trimming is approximate (MAXLEN ~ and MINID ~ drop
// whole stream nodes of 100 entries, which makes XADD 3× cheaper) except by
// count below 100 events, so a stream holds at most MaxEvents entries below
// 100 and about MaxEvents+100 above; reads apply the exact limits. The newest entry is never trimmed (the next serial and continuity
// need it). The key expires twice the max age (at least a minute) after the
// last event.
type History struct {
	b     *Broker
	grace time.Duration // historyFenceGrace when 0 (tests shorten it)
}

var _ history.Store = (*History)(nil)

// History returns the store. It works while the broker is open.
func (b *Broker) History() *History { return &History{b: b} }

// historyReadTimeout bounds one Since (a read of at most MaxEvents entries).
const historyReadTimeout = 3 * time.Second

// historyPublishScript: KEYS[1] = the stream (named like the pub/sub
// channel). ARGV: [1] PUBLISH or SPUBLISH, [2] message head and [3] tail
// (the broker wire encoding around the serial digits), [4] event, [5] data,
// [6] max events, [7] max age in µs, [8] key TTL in ms. Returns the serial.
var historyPublishScript = rueidis.NewLuaScript(`
local key = KEYS[1]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local prev = 0
local top = redis.call('XREVRANGE', key, '+', '-', 'COUNT', 1)
if #top > 0 then
  prev = tonumber(string.match(top[1][1], '^%d+'))
end
local serial = now
if serial <= prev then serial = prev + 1 end
local s = string.format('%.0f', serial)
local approx = '~'
if tonumber(ARGV[6]) < 100 then approx = '=' end
redis.call('XADD', key, 'MAXLEN', approx, ARGV[6], s .. '-0', 'p', string.format('%.0f', prev), 'e', ARGV[4], 'd', ARGV[5])
local cutoff = now - tonumber(ARGV[7])
if cutoff > 0 then
  redis.call('XTRIM', key, 'MINID', '~', string.format('%.0f', cutoff))
end
redis.call('PEXPIRE', key, ARGV[8])
redis.call(ARGV[1], key, ARGV[2] .. s .. ARGV[3])
return s
`)

// historySinceScript: KEYS[1] = the stream. ARGV: [1] after (a serial, 0 for
// everything), [2] max events, [3] max age in µs. Returns {newest serial
// ("0" without history), the predecessor recorded by the first stream entry
// after ARGV[1] when that entry is retained ("" otherwise), the retained
// entries after ARGV[1] newest first}.
var historySinceScript = rueidis.NewLuaScript(`
local key = KEYS[1]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local top = redis.call('XREVRANGE', key, '+', '-', 'COUNT', 1)
if #top == 0 then return {'0', '', {}} end
local last = string.match(top[1][1], '^%d+')
local after = tonumber(ARGV[1])
local lo = after + 1
local cutoff = now - tonumber(ARGV[3])
if cutoff > lo then lo = cutoff end
local events = redis.call('XREVRANGE', key, '+', string.format('%.0f', lo), 'COUNT', ARGV[2])
local firstPrev = ''
local first = redis.call('XRANGE', key, string.format('%.0f', after + 1), '+', 'COUNT', 1)
if #first > 0 and #events > 0 and events[#events][1] == first[1][1] then
  local f = first[1][2]
  for i = 1, #f, 2 do
    if f[i] == 'p' then firstPrev = f[i + 1] end
  end
end
return {last, firstPrev, events}
`)

// client returns the client and command for t's shard, and its name for
// errors.
func (h *History) client(t broker.Topic) (rueidis.Client, string, string) {
	b := h.b
	if b.be.Cluster {
		return b.be.Clients[0], "SPUBLISH", b.be.Names[0]
	}
	i, c := b.be.For(t.App, t.Channel)
	return c, "PUBLISH", b.be.Names[i]
}

func historyTTL(p history.Policy) time.Duration { return max(2*p.MaxAge, time.Minute) }

// Publish implements history.Store. It returns within the broker's
// PublishTimeout (or ctx) with an error when the shard does not answer.
func (h *History) Publish(ctx context.Context, t broker.Topic, p history.Policy, event, data, exclude string) (uint64, error) {
	if !p.Valid() {
		return 0, history.ErrPolicy
	}
	b := h.b
	if b.closed.Load() {
		return 0, broker.ErrClosed
	}
	frame := history.AppendFrameHead(make([]byte, 0, 48+len(event)+len(t.Channel)+len(data)*11/10), event, t.Channel, data)
	m := &broker.Message{Topic: t, Kind: broker.KindEvent, Payload: frame, Exclude: exclude}
	head := appendMessage(make([]byte, 0, encodedLen(m)), m)
	c, cmd, shard := h.client(t)
	ctx, cancel := context.WithTimeout(ctx, b.opts.PublishTimeout)
	defer cancel()
	res := historyPublishScript.Exec(ctx, c, []string{channelName(t)}, []string{
		cmd, string(head), history.FrameTail, event, data,
		strconv.Itoa(p.MaxEvents),
		strconv.FormatInt(p.MaxAge.Microseconds(), 10),
		strconv.FormatInt(historyTTL(p).Milliseconds(), 10),
	})
	s, err := res.ToString()
	if err == nil {
		var serial uint64
		if serial, err = strconv.ParseUint(s, 10, 64); err == nil {
			b.st.published.Add(1)
			return serial, nil
		}
	}
	b.st.publishErrors.Add(1)
	if b.closed.Load() {
		return 0, broker.ErrClosed
	}
	return 0, fmt.Errorf("redisbroker: publish %s with history to %s: %w", t.Channel, shard, err)
}

// Since implements history.Store.
func (h *History) Since(ctx context.Context, t broker.Topic, p history.Policy, after uint64) (history.Range, error) {
	if !p.Valid() {
		return history.Range{}, history.ErrPolicy
	}
	if h.b.closed.Load() {
		return history.Range{}, broker.ErrClosed
	}
	if after > history.MaxSerial {
		// Beyond what the script computes exactly; no serial is this big.
		return history.Range{}, nil
	}
	if h.moving(t) {
		return history.Range{}, ErrHistoryMoving
	}
	c, _, shard := h.client(t)
	ctx, cancel := context.WithTimeout(ctx, historyReadTimeout)
	defer cancel()
	res, err := historySinceScript.Exec(ctx, c, []string{channelName(t)}, []string{
		strconv.FormatUint(after, 10),
		strconv.Itoa(p.MaxEvents),
		strconv.FormatInt(p.MaxAge.Microseconds(), 10),
	}).ToArray()
	if err == nil && len(res) != 3 {
		err = errors.New("unexpected reply")
	}
	var (
		r         history.Range
		firstPrev string
		entries   []rueidis.XRangeEntry
	)
	if err == nil {
		var last string
		if last, err = res[0].ToString(); err == nil {
			r.Last, err = strconv.ParseUint(last, 10, 64)
		}
	}
	if err == nil {
		firstPrev, err = res[1].ToString()
	}
	if err == nil {
		entries, err = res[2].AsXRange()
	}
	if err == nil {
		r.Events = make([]history.Event, 0, len(entries))
		for _, e := range slices.Backward(entries) {
			id, _, _ := strings.Cut(e.ID, "-")
			var s uint64
			if s, err = strconv.ParseUint(id, 10, 64); err != nil {
				break
			}
			r.Events = append(r.Events, history.Event{Serial: s, Name: e.FieldValues["e"], Data: e.FieldValues["d"]})
		}
	}
	if err != nil {
		return history.Range{}, fmt.Errorf("redisbroker: history of %s from %s: %w", t.Channel, shard, err)
	}
	if len(r.Events) == 0 {
		r.Events = nil
	}
	var fp uint64
	firstOK := firstPrev != ""
	if firstOK {
		if fp, err = strconv.ParseUint(firstPrev, 10, 64); err != nil {
			return history.Range{}, fmt.Errorf("redisbroker: history of %s from %s: bad entry: %w", t.Channel, shard, err)
		}
	}
	r.Complete = history.Continuous(after, r.Last, firstOK, fp)
	h.fence(t, after, &r)
	return r, nil
}
