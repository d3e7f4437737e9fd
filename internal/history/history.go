// Package history keeps the recent events of the channels an app opts in
// (config `history`): each event published through the HTTP API on such a
// channel gets a per-channel serial, the frame every subscriber receives
// carries it, and the channel keeps its last events so that a client that
// resubscribes with the last serial it saw gets what it missed.
//
// Serials. A serial is the publish time in microseconds since the Unix epoch,
// raised to the previous serial + 1 when two events of a channel fall in the
// same microsecond: max(previous+1, now). Serials of a channel therefore
// strictly increase in publish (and delivery) order, are unique, stay below
// 2⁵³ (exact in JavaScript) until the year 2255, and keep increasing when a
// channel's history is lost (a restart, a Redis flush, a shard failover)
// because the clock moves on. They are not consecutive.
//
// Continuity. Every retained event also records the serial of the event
// before it on that channel (0 when the channel's history starts with it).
// "Every event after serial L is still here" is then exact: L is the
// channel's newest serial, or the oldest retained event after L records L as
// its predecessor. Anything else (events trimmed by count or age, a serial
// from a history that was since lost, a serial never issued) is a gap, and
// recovery says so instead of delivering a partial history.
//
// Atomicity. Publish assigns the serial, appends the event and hands the
// frame to the broker as one step per channel (a lock in memory, one Lua
// script on the channel's Redis shard), so the order of serials is the order
// in which every node receives the channel's events.
package history

import (
	"context"
	"errors"
	"time"

	"github.com/heraldrt/herald/internal/broker"
	"github.com/heraldrt/herald/internal/protocol"
)

// MaxSerial is the largest serial: 2⁵³−1, the largest integer a JavaScript
// number holds exactly.
const MaxSerial = 1<<53 - 1

// Policy is how much of a channel's history to keep.
type Policy struct {
	// MaxEvents is how many of the newest events are kept (at least 1).
	MaxEvents int
	// MaxAge is how long an event is kept (positive).
	MaxAge time.Duration
}

// Valid reports whether p can be used.
func (p Policy) Valid() bool { return p.MaxEvents > 0 && p.MaxAge > 0 }

// Event is one retained event.
type Event struct {
	Serial uint64 `json:"serial"`
	Name   string `json:"event"`
	Data   string `json:"data"`
}

// Range is the answer to "what came after serial N?".
type Range struct {
	// Events are the retained events after N, oldest first (at most
	// Policy.MaxEvents, none older than Policy.MaxAge).
	Events []Event
	// Last is the channel's newest serial, 0 when it has no history (never
	// published, or expired).
	Last uint64
	// Complete reports whether Events are every event published after N:
	// always true for N = 0 (which asks for everything retained).
	Complete bool
}

// Store keeps channel histories. Implementations are safe for concurrent use.
type Store interface {
	// Publish gives the event the channel's next serial, retains it under p
	// and publishes its frame ({"event","data","channel","serial"}) through
	// the broker to every subscriber but exclude (a socket_id, "" for none),
	// atomically per channel: serial order is delivery order. It returns the
	// serial. On error the event may or may not have been published (a
	// timeout), like broker.Broker.Publish.
	Publish(ctx context.Context, t broker.Topic, p Policy, event, data, exclude string) (uint64, error)
	// Since returns the retained events of t published after serial after
	// (0: everything retained), oldest first, with the channel's newest
	// serial and whether nothing after `after` is missing.
	Since(ctx context.Context, t broker.Topic, p Policy, after uint64) (Range, error)
}

// ErrMoving is returned by Since (wrapped) while the channel's storage is
// moving, e.g. its Redis shard failing over: its history may be split and
// nothing after a serial can be vouched for. Try again later.
var ErrMoving = errors.New("history: the channel's storage is failing over; its history may be incomplete")

// ErrPolicy is returned for an invalid Policy.
var ErrPolicy = errors.New("history: invalid policy (max events and max age must be positive)")

// NextSerial returns the serial after prev at time now: max(prev+1, now in
// microseconds).
func NextSerial(prev uint64, now time.Time) uint64 {
	us := now.UnixMicro()
	if us < 0 {
		us = 0
	}
	if s := uint64(us); s > prev {
		return s
	}
	return prev + 1
}

// AppendFrame appends the frame of a history event as subscribers receive
// it: {"event":…,"data":…,"channel":…,"serial":N}. The serial is the last
// field, so that it can be read back from the end of the frame (SerialOf).
func AppendFrame(dst []byte, event, channel, data string, serial uint64) []byte {
	dst = AppendFrameHead(dst, event, channel, data)
	return AppendFrameTail(dst, serial)
}

// AppendFrameHead appends the frame up to its serial: everything but the
// serial digits and the closing brace.
func AppendFrameHead(dst []byte, event, channel, data string) []byte {
	dst = protocol.AppendEvent(dst, event, channel, data)
	dst = dst[:len(dst)-1] // reopen the object
	return append(dst, `,"serial":`...)
}

// FrameTail is what follows the serial digits in a frame.
const FrameTail = "}"

// AppendFrameTail appends the serial digits and FrameTail.
func AppendFrameTail(dst []byte, serial uint64) []byte {
	dst = appendUint(dst, serial)
	return append(dst, FrameTail...)
}

func appendUint(dst []byte, v uint64) []byte {
	var b [20]byte
	i := len(b)
	for {
		i--
		b[i] = byte('0' + v%10)
		v /= 10
		if v == 0 {
			break
		}
	}
	return append(dst, b[i:]...)
}

// SerialOf returns the serial at the end of msg, a frame built by
// AppendFrame (optionally preceded by a WebSocket frame header), and false
// when msg does not end with `"serial":<digits>}`. Event frames without a
// serial end with a string or an object, never with digits.
func SerialOf(msg []byte) (uint64, bool) {
	n := len(msg)
	if n < 2 || msg[n-1] != '}' {
		return 0, false
	}
	i := n - 1
	var v uint64
	mul := uint64(1)
	digits := 0
	for i > 0 && msg[i-1] >= '0' && msg[i-1] <= '9' {
		i--
		digits++
		if digits > 16 {
			return 0, false // beyond MaxSerial
		}
		v += uint64(msg[i]-'0') * mul
		mul *= 10
	}
	const key = `,"serial":`
	if digits == 0 || i < len(key) || string(msg[i-len(key):i]) != key || v > MaxSerial {
		return 0, false
	}
	return v, true
}

// Continuous decides Range.Complete: after is 0, or the channel's newest
// serial last, or the predecessor firstPrev recorded by the oldest event
// after `after` that is retained, provided that event is also the oldest
// stored after `after` (firstOK; false when no event after `after` is
// retained, or older ones after it were dropped).
func Continuous(after, last uint64, firstOK bool, firstPrev uint64) bool {
	switch {
	case after == 0:
		return true
	case after == last:
		return true
	case firstOK:
		return firstPrev == after
	}
	return false
}
