package session

import (
	"context"
	"encoding/json"
	"strconv"
	"sync"
	"testing"

	"github.com/heraldrt/herald/internal/apps"
	"github.com/heraldrt/herald/internal/auth"
	"github.com/heraldrt/herald/internal/broker"
	"github.com/heraldrt/herald/internal/hub"
	"github.com/heraldrt/herald/internal/protocol"
	"github.com/heraldrt/herald/internal/state"
)

// FuzzSession drives the handling code of every client event type (subscribe
// to each channel type, with and without valid signatures, unsubscribe,
// signin with watchlists, client events, ping, unknown events, raw bytes),
// interleaved with API publishes, terminations and disconnects, through four
// fake connections: three of app "a" and one of app "b" (another tenant whose
// channel names collide). The script is a byte program (see fuzzScript).
//
// Invariants checked after every step: no panic; every frame a connection
// gets is valid JSON with an event name, and every pusher:error carries a
// known code (or null) and a message; a connection only gets channel events
// for channels it is on; a client event is never echoed to its sender; a
// private, presence or encrypted channel is never joined without a valid
// signature; nothing one app's connections or API calls do reaches another
// app's connections. After the script every connection closes, and nothing
// may remain: no hub topics, occupied channels, presence members or
// connections.
func FuzzSession(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, script []byte) {
		h := newFuzzHarness(t)
		h.run(script)
		h.finish()
	})
}

// Op kinds of a fuzz script. Each op is one byte: bits 0-1 pick the
// connection (0-2: app "a", 3: app "b"), bits 2-7 (mod opKinds) the kind,
// followed by two length-prefixed chunks: a channel selector and an argument.
const (
	opRaw           = iota // HandleMessage(arg)
	opSubscribe            // pusher:subscribe without auth
	opSubscribeAuth        // pusher:subscribe, correctly signed; arg = channel_data
	opSubscribeStr         // signed, with data double-encoded as a JSON string
	opSubscribeBad         // signed with another app's secret or socket id
	opUnsubscribe          // pusher:unsubscribe
	opSignin               // pusher:signin, correctly signed; arg = user_data
	opSigninBad            // pusher:signin with a wrong signature
	opClientEvent          // client-x on the channel; arg = data
	opPing                 // pusher:ping, pusher:pong and an unknown pusher: event
	opClose                // the transport closes; the slot reconnects on next use
	opPublish              // HTTP API publish to the channel; arg = data
	opTerminate            // HTTP API terminate_connections of a user
	opRemote               // transitions reported by another node
	opKinds
)

var (
	fuzzPrefixes = []string{"", "private-", "presence-", "private-encrypted-", "cache-", "presence-cache-", protocol.PrefixUser, "private-cache-"}
	fuzzNames    = []string{"a", "b", "u1", "x;y"}
)

// fuzzChannel maps a selector chunk to a channel name: a small universe of
// valid names of every type (so connections meet on channels), or, when the
// first byte has its high bit set, the rest of the chunk as is.
func fuzzChannel(sel []byte) string {
	if len(sel) > 0 && sel[0] >= 0x80 {
		return string(sel[1:])
	}
	i := 0
	if len(sel) > 0 {
		i = int(sel[0])
	}
	return fuzzPrefixes[i%len(fuzzPrefixes)] + fuzzNames[(i/len(fuzzPrefixes))%len(fuzzNames)]
}

// fuzzConn is a transport that records what the session sends.
type fuzzConn struct {
	id string

	mu     sync.Mutex
	frames [][]byte
	closed bool // Close or Terminate was called
}

func (c *fuzzConn) SocketID() string { return c.id }

func (c *fuzzConn) Send(wire []byte) { c.record(wire) }

func (c *fuzzConn) SendPayload(p []byte) { c.record(append([]byte(nil), p...)) }

func (c *fuzzConn) record(b []byte) {
	c.mu.Lock()
	c.frames = append(c.frames, b)
	c.mu.Unlock()
}

func (c *fuzzConn) Terminate() { c.Close(protocol.CodeUnauthorized, "terminated") }

func (c *fuzzConn) Close(protocol.Code, string) {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
}

type fuzzSlot struct {
	app  *apps.App
	conn *fuzzConn
	sess *Session
	seen int // frames already checked
}

type fuzzHarness struct {
	t     *testing.T
	node  *Node
	apps  [2]*apps.App
	slots [4]*fuzzSlot
	users map[string]bool // user ids that may have been signed in or joined presence
}

func newFuzzHarness(t *testing.T) *fuzzHarness {
	a := &apps.App{ID: "a", Key: "a-key", Secret: "a-secret", ClientEvents: true, SubscriptionCount: true,
		MaxChannelsPerConnection: 5, MaxPresenceMembers: 3, MaxWatchlist: 2, MaxEventSize: 64,
		MaxUserInfoSize: 32, MaxUserIDLength: 8, MaxChannelNameLength: 40, ClientEventRate: 1000}
	b := &apps.App{ID: "b", Key: "b-key", Secret: "b-secret", ClientEvents: true}
	a.ApplyDefaults()
	b.ApplyDefaults()
	reg, err := apps.NewRegistry([]*apps.App{a, b})
	if err != nil {
		t.Fatal(err)
	}
	hb := hub.New(nil, func(p []byte) []byte { return p }, 0)
	br := broker.NewMemory(hb.Deliver)
	hb.SetBroker(br)
	n := &Node{Apps: reg, Hub: hb, Broker: br, Presence: state.NewMemoryPresence(),
		Occupancy: state.NewMemoryOccupancy(), Users: state.NewMemoryUsers(), Cache: state.NewMemoryCache()}
	h := &fuzzHarness{t: t, node: n, apps: [2]*apps.App{a, b}, users: map[string]bool{}}
	for k := range 5 {
		h.users["u"+strconv.Itoa(k)] = true
	}
	for i := range h.slots {
		h.slots[i] = &fuzzSlot{app: a}
		if i == 3 {
			h.slots[i].app = b
		}
		h.open(i)
	}
	return h
}

func (h *fuzzHarness) open(i int) {
	sl := h.slots[i]
	c := &fuzzConn{}
	s, err := h.node.Start(sl.app, c)
	if err != nil {
		h.t.Fatalf("Start: %v", err)
	}
	c.id = s.SocketID()
	sl.conn, sl.sess = c, s
	c.SendPayload(s.Established())
	sl.seen = 1
	h.checkFrame(i, sl, c.frames[0], false, "")
}

// reading yields the chunks of a script.
type reading struct{ b []byte }

func (r *reading) byte() (byte, bool) {
	if len(r.b) == 0 {
		return 0, false
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c, true
}

func (r *reading) chunk() []byte {
	n, ok := r.byte()
	if !ok {
		return nil
	}
	m := min(int(n), len(r.b))
	c := r.b[:m]
	r.b = r.b[m:]
	return c
}

const maxFuzzOps = 96

func (h *fuzzHarness) run(script []byte) {
	r := &reading{b: script}
	for n := 0; n < maxFuzzOps; n++ {
		op, ok := r.byte()
		if !ok {
			return
		}
		sel, arg := r.chunk(), r.chunk()
		h.step(int(op&3), int(op>>2)%opKinds, fuzzChannel(sel), arg)
	}
}

func (h *fuzzHarness) frame(event string, data any, channel string) []byte {
	m := map[string]any{"event": event, "data": data}
	if channel != "" {
		m["channel"] = channel
	}
	b, err := json.Marshal(m)
	if err != nil {
		h.t.Fatal(err)
	}
	return b
}

// presenceData turns a one-byte argument into a well-formed channel_data
// (so that presence is reached often); longer arguments are used as is.
func presenceData(arg []byte) string {
	if len(arg) == 1 {
		return `{"user_id":"u` + strconv.Itoa(int(arg[0]%5)) + `","user_info":{"n":` + strconv.Itoa(int(arg[0])) + `}}`
	}
	return string(arg)
}

func fuzzUserData(arg []byte) string {
	if len(arg) == 1 {
		return `{"id":"u` + strconv.Itoa(int(arg[0]%5)) + `","watchlist":["u0","u1","u2"],"user_info":{"k":` + strconv.Itoa(int(arg[0])) + `}}`
	}
	return string(arg)
}

func (h *fuzzHarness) step(i, kind int, ch string, arg []byte) {
	sl := h.slots[i]
	if sl.sess == nil {
		h.open(i)
	}
	s, key, secret := sl.sess, sl.app.Key, sl.app.Secret
	wasOn := s.IsSubscribed(ch)
	clientEvent := ""
	mayJoinWithoutAuth := false
	switch kind {
	case opRaw:
		s.HandleMessage(arg)
		mayJoinWithoutAuth = true // the raw bytes may carry a valid signature
	case opSubscribe:
		s.HandleMessage(h.frame(protocol.EventSubscribe, map[string]any{"channel": ch}, ""))
	case opSubscribeAuth, opSubscribeStr:
		cd := ""
		if protocol.Classify(ch).IsPresence() {
			cd = presenceData(arg)
		}
		d := map[string]any{"channel": ch, "auth": key + ":" + auth.Sign(secret, auth.ChannelString(s.SocketID(), ch, cd))}
		if cd != "" {
			d["channel_data"] = cd
		}
		var data any = d
		if kind == opSubscribeStr {
			b, _ := json.Marshal(d)
			data = string(b)
		}
		s.HandleMessage(h.frame(protocol.EventSubscribe, data, ""))
		mayJoinWithoutAuth = true
	case opSubscribeBad:
		other := h.apps[0]
		if sl.app == other {
			other = h.apps[1]
		}
		cd := ""
		if protocol.Classify(ch).IsPresence() {
			cd = presenceData(arg)
		}
		sigs := []string{
			key + ":" + auth.Sign(other.Secret, auth.ChannelString(s.SocketID(), ch, cd)),       // other app's secret
			other.Key + ":" + auth.Sign(other.Secret, auth.ChannelString(s.SocketID(), ch, cd)), // other app's key
			key + ":" + auth.Sign(secret, auth.ChannelString(h.slots[(i+1)%4].conn.id, ch, cd)), // another socket's id
		}
		d := map[string]any{"channel": ch, "auth": sigs[len(arg)%len(sigs)]}
		if cd != "" {
			d["channel_data"] = cd
		}
		s.HandleMessage(h.frame(protocol.EventSubscribe, d, ""))
	case opUnsubscribe:
		s.HandleMessage(h.frame(protocol.EventUnsubscribe, map[string]any{"channel": ch}, ""))
	case opSignin, opSigninBad:
		ud := fuzzUserData(arg)
		sig := auth.Sign(secret, auth.UserString(s.SocketID(), ud))
		if kind == opSigninBad {
			sig = auth.Sign(secret+"x", auth.UserString(s.SocketID(), ud))
		}
		s.HandleMessage(h.frame(protocol.EventSignin, map[string]any{"auth": key + ":" + sig, "user_data": ud}, ""))
	case opClientEvent:
		clientEvent = "client-" + strconv.Itoa(len(arg))
		var data any = string(arg)
		if json.Valid(arg) {
			data = json.RawMessage(arg)
		}
		s.HandleMessage(h.frame(clientEvent, data, ch))
	case opPing:
		s.HandleMessage([]byte(`{"event":"pusher:ping"}`))
		s.HandleMessage([]byte(`{"event":"pusher:pong","data":{}}`))
		s.HandleMessage(h.frame("pusher:"+string(arg), nil, ch))
	case opClose:
		sl.conn.Close(protocol.CodeReconnect, "")
	case opPublish:
		exclude := ""
		if len(arg)%2 == 1 {
			exclude = s.SocketID()
		}
		_ = h.node.PublishEvent(context.Background(), sl.app, ch, "api-event", string(arg), exclude)
	case opTerminate:
		_ = h.node.TerminateUser(context.Background(), sl.app, "u"+strconv.Itoa(len(arg)%5))
	case opRemote:
		ctx := context.Background()
		switch len(arg) % 4 {
		case 0:
			h.node.RemoteMemberRemoved(ctx, sl.app.ID, ch, "u"+strconv.Itoa(len(arg)%5))
		case 1:
			h.node.RemoteChannelVacated(sl.app.ID, ch)
		case 2:
			h.node.RemoteUserOffline(ctx, sl.app.ID, "u"+strconv.Itoa(len(arg)%5))
		default:
			h.node.RemoteCountChanged(ctx, sl.app.ID, ch, len(arg))
		}
	}
	h.check(i, ch, wasOn, mayJoinWithoutAuth, clientEvent)
}

// check verifies the new frames of every slot after a step of slot i, then
// closes the sessions whose transport was asked to close.
func (h *fuzzHarness) check(i int, ch string, wasOn, mayJoinWithoutAuth bool, clientEvent string) {
	actor := h.slots[i]
	c := protocol.Classify(ch)
	if !wasOn && !mayJoinWithoutAuth && c.NeedsAuth() && actor.sess.IsSubscribed(ch) {
		h.t.Fatalf("slot %d joined %q without a valid signature", i, ch)
	}
	// Closing a session sends its leaves to the others: check until quiet.
	for again := true; again; {
		again = false
		for j, sl := range h.slots {
			if sl.sess == nil {
				continue
			}
			sl.conn.mu.Lock()
			fresh := sl.conn.frames[sl.seen:]
			sl.seen = len(sl.conn.frames)
			closed := sl.conn.closed
			sl.conn.mu.Unlock()
			if len(fresh) > 0 && sl.app != actor.app {
				h.t.Fatalf("slot %d (app %s) got %q from a step of slot %d (app %s)", j, sl.app.ID, fresh[0], i, actor.app.ID)
			}
			for _, b := range fresh {
				h.checkFrame(j, sl, b, clientEvent != "" && j == i, clientEvent)
			}
			if closed {
				sl.sess.Closed()
				sl.sess = nil
				again = true
			}
		}
	}
}

var knownCodes = map[int]bool{4000: true, 4001: true, 4003: true, 4004: true, 4005: true, 4006: true, 4007: true,
	4008: true, 4009: true, 4100: true, 4200: true, 4201: true, 4301: true, 4302: true}

func (h *fuzzHarness) checkFrame(j int, sl *fuzzSlot, b []byte, sender bool, clientEvent string) {
	var f struct {
		Event   *string         `json:"event"`
		Channel string          `json:"channel"`
		Data    json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(b, &f); err != nil || f.Event == nil || *f.Event == "" {
		h.t.Fatalf("slot %d got an invalid frame %q (%v)", j, b, err)
	}
	ev := *f.Event
	if sender && ev == clientEvent {
		h.t.Fatalf("slot %d got its own client event back: %q", j, b)
	}
	switch ev {
	case protocol.EventError:
		var d struct {
			Code    *int    `json:"code"`
			Message *string `json:"message"`
		}
		if json.Unmarshal(f.Data, &d) != nil || d.Message == nil || *d.Message == "" {
			h.t.Fatalf("slot %d: pusher:error without an object data and message: %q", j, b)
		}
		if d.Code != nil && !knownCodes[*d.Code] {
			h.t.Fatalf("slot %d: pusher:error with unknown code: %q", j, b)
		}
		return
	case protocol.EventSubscriptionError:
		return
	}
	if f.Channel == "" {
		return
	}
	if s := sl.sess; !s.IsSubscribed(f.Channel) && !h.signedInAs(s, f.Channel) {
		h.t.Fatalf("slot %d got %q on %q, a channel it is not on", j, ev, f.Channel)
	}
}

func (h *fuzzHarness) signedInAs(s *Session, channel string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.user != nil && channel == protocol.UserChannel(s.user.id)
}

// finish closes every connection and checks that nothing was left behind.
func (h *fuzzHarness) finish() {
	for _, sl := range h.slots {
		if sl.sess != nil {
			sl.sess.Closed()
			sl.sess = nil
		}
	}
	ctx := context.Background()
	if n := h.node.Connections(""); n != 0 {
		h.t.Fatalf("%d connections left after every session closed", n)
	}
	if n := h.node.Hub.Topics(); n != 0 {
		h.t.Fatalf("%d hub topics left after every session closed", n)
	}
	for _, a := range h.apps {
		chans, err := h.node.Occupancy.Channels(ctx, a.ID, "")
		if err != nil || len(chans) != 0 {
			h.t.Fatalf("app %s: occupied channels left: %v %v", a.ID, chans, err)
		}
		ids := make([]string, 0, len(h.users))
		for u := range h.users {
			ids = append(ids, u)
		}
		online, err := h.node.Users.Online(ctx, a.ID, ids)
		if err != nil {
			h.t.Fatal(err)
		}
		for k, on := range online {
			if on {
				h.t.Fatalf("app %s: user %s still online", a.ID, ids[k])
			}
		}
		for _, p := range fuzzPrefixes {
			for _, n := range fuzzNames {
				if c, _ := h.node.Presence.Count(ctx, a.ID, p+n); c != 0 {
					h.t.Fatalf("app %s: %d presence members left on %s", a.ID, c, p+n)
				}
			}
		}
	}
}

// op returns the op byte for slot and kind.
func op(slot, kind int) byte { return byte(kind<<2 | slot) }

// sel returns the channel selector of prefix index p and name index n.
func sel(p, n int) []byte { return []byte{byte(n*len(fuzzPrefixes) + p)} }

func fuzzSeeds() [][]byte {
	type step struct {
		slot, kind int
		sel, arg   []byte
	}
	build := func(steps ...step) []byte {
		var b []byte
		for _, s := range steps {
			b = append(b, op(s.slot, s.kind), byte(len(s.sel)))
			b = append(b, s.sel...)
			b = append(b, byte(len(s.arg)))
			b = append(b, s.arg...)
		}
		return b
	}
	public, private, presence, encrypted, cache, presenceCache, user := 0, 1, 2, 3, 4, 5, 6
	return [][]byte{
		// Public channel, API publish, unsubscribe; the other app on the same name.
		build(step{0, opSubscribe, sel(public, 0), nil}, step{3, opSubscribe, sel(public, 0), nil},
			step{1, opSubscribe, sel(public, 0), nil}, step{0, opPublish, sel(public, 0), []byte("hi")},
			step{3, opPublish, sel(public, 0), []byte("b")}, step{1, opUnsubscribe, sel(public, 0), nil}),
		// Private channels, client events, bad signatures.
		build(step{0, opSubscribeAuth, sel(private, 0), nil}, step{1, opSubscribeStr, sel(private, 0), nil},
			step{3, opSubscribeAuth, sel(private, 0), nil}, step{0, opClientEvent, sel(private, 0), []byte(`{"x":1}`)},
			step{2, opSubscribeBad, sel(private, 0), nil}, step{2, opSubscribeBad, sel(encrypted, 1), []byte("1")},
			step{2, opSubscribe, sel(private, 1), nil}, step{1, opClientEvent, sel(private, 0), []byte(`"str"`)}),
		// Presence: join, member limit, leave, client event with user_id.
		build(step{0, opSubscribeAuth, sel(presence, 0), []byte{1}}, step{1, opSubscribeAuth, sel(presence, 0), []byte{2}},
			step{2, opSubscribeAuth, sel(presence, 0), []byte{3}}, step{3, opSubscribeAuth, sel(presence, 0), []byte{4}},
			step{1, opClientEvent, sel(presence, 0), []byte(`{}`)}, step{0, opClose, nil, nil},
			step{0, opSubscribeAuth, sel(presenceCache, 1), []byte{9}}, step{2, opUnsubscribe, sel(presence, 0), nil}),
		// Signin, user channel, watchlist, terminate.
		build(step{0, opSignin, nil, []byte{1}}, step{1, opSignin, nil, []byte{2}}, step{2, opSigninBad, nil, []byte{3}},
			step{0, opSubscribe, sel(user, 2), nil}, step{1, opPublish, sel(user, 2), []byte("to user")},
			step{2, opTerminate, nil, []byte{1}}, step{0, opSignin, nil, []byte{1}}, step{3, opSignin, nil, []byte{1}},
			step{0, opSubscribeAuth, sel(presence, 1), nil}),
		// Cache channels, ping, unknown events, remote transitions.
		build(step{0, opPublish, sel(cache, 0), []byte("c")}, step{1, opSubscribe, sel(cache, 0), nil},
			step{1, opPing, nil, []byte("nope")}, step{2, opRemote, sel(presence, 0), nil},
			step{2, opRemote, sel(public, 0), []byte("1")}, step{2, opRemote, nil, []byte("12")},
			step{1, opRemote, sel(cache, 0), []byte("123")}),
		// Raw messages.
		build(step{0, opRaw, nil, []byte(`{"event":"pusher:subscribe","data":"{\"channel\":\"x\"}"}`)},
			step{0, opRaw, nil, []byte(`{"event":"pusher:subscribe","data":{"channel":"presence-a","auth":"a-key:00","channel_data":{"user_id":1}}}`)},
			step{0, opRaw, nil, []byte(`{"event":"client-x","channel":"x","data":null}`)},
			step{1, opRaw, nil, []byte(`{"event":"pusher:signin","data":{"auth":"","user_data":5}}`)},
			step{1, opRaw, nil, []byte(`{"event":"pusher:unsubscribe","data":[]}`)},
			step{2, opRaw, nil, []byte("\xff\x00[[[")}),
		// Raw channel names: invalid characters, too long, the user prefix alone.
		build(step{0, opSubscribe, []byte("\x80bad name"), nil}, step{0, opSubscribe, []byte("\x80#server-to-user-"), nil},
			step{0, opSubscribeAuth, []byte("\x80private-" + string(make([]byte, 60))), nil},
			step{1, opClientEvent, []byte("\x80"), []byte("{}")}),
	}
}
