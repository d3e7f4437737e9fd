package session

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strconv"

	"github.com/heraldrt/herald/internal/apps"
	"github.com/heraldrt/herald/internal/auth"
	"github.com/heraldrt/herald/internal/broker"
	"github.com/heraldrt/herald/internal/hub"
	"github.com/heraldrt/herald/internal/protocol"
	"github.com/heraldrt/herald/internal/state"
)

// subscribeData is the data of pusher:subscribe. channel_data is kept raw: it
// is normally a JSON string whose exact text is signed.
type subscribeData struct {
	Channel     string          `json:"channel"`
	Auth        string          `json:"auth"`
	ChannelData json.RawMessage `json:"channel_data"`
	// LastSerial asks for the events after this serial (history recovery).
	LastSerial json.RawMessage `json:"last_serial"`
}

// failure describes a refused subscription.
type failure struct {
	code   protocol.Code // pusher:error code (0 = null)
	kind   string        // pusher:subscription_error data.type
	status int           // pusher:subscription_error data.status
	msg    string
}

func (s *Session) fail(channel string, f failure) {
	s.sendError(f.code, f.msg, "")
	if s.app.SendSubscriptionErrors() && channel != "" {
		d := protocol.MarshalData(map[string]any{"type": f.kind, "error": f.msg, "status": f.status})
		s.conn.SendPayload(protocol.AppendEventRaw(nil, protocol.EventSubscriptionError, channel, []byte(d), ""))
	}
}

func authFailure(msg string) failure {
	return failure{code: protocol.CodeUnauthorized, kind: "AuthError", status: 401, msg: msg}
}

func validationFailure(msg string) failure {
	return failure{code: 0, kind: "ValidationError", status: 400, msg: msg}
}

func limitFailure(code protocol.Code, msg string) failure {
	return failure{code: code, kind: "LimitReached", status: int(code), msg: msg}
}

// channelDataString returns the exact text that was signed: the decoded
// string when channel_data is a JSON string, else the raw JSON.
func channelDataString(raw json.RawMessage) string {
	if len(raw) == 0 || string(raw) == "null" {
		return ""
	}
	if raw[0] == '"' {
		var s string
		if json.Unmarshal(raw, &s) == nil {
			return s
		}
	}
	return string(raw)
}

func (s *Session) subscribe(f *protocol.ClientFrame) {
	var d subscribeData
	obj := f.DataObject()
	if obj == nil || json.Unmarshal(obj, &d) != nil {
		s.sendError(0, "Invalid subscribe data", "")
		return
	}
	if d.Channel == "" {
		s.sendError(0, "Missing channel in subscribe data", "")
		return
	}
	name := d.Channel
	if err := protocol.ValidChannelName(name, s.app.MaxChannelNameLength); err != nil {
		s.fail(truncate(name, 256), validationFailure("Invalid channel name "+strconv.Quote(truncate(name, 256))+": "+err.Error()))
		return
	}
	ch := protocol.Classify(name)
	if i := s.find(name); i >= 0 {
		s.resendSucceeded(s.subs[i])
		return
	}
	if len(s.subs) >= s.app.MaxChannelsPerConnection {
		s.fail(name, limitFailure(protocol.CodeClientEventLimit,
			"Too many channels on this connection (limit "+strconv.Itoa(s.app.MaxChannelsPerConnection)+")"))
		return
	}
	sub := &subscription{channel: ch}
	var member state.Member
	switch ch.Type {
	case protocol.ChannelUser:
		if s.user == nil || s.user.id != ch.UserID() {
			s.fail(name, authFailure("Cannot subscribe to "+name+": the connection is not signed in as that user"))
			return
		}
		// Signed-in sockets are on their user topic already (see signin).
		s.subs = append(s.subs, sub)
		s.conn.SendPayload(protocol.Event(protocol.EventSubscriptionSucceeded, name, "{}"))
		return
	case protocol.ChannelPrivate, protocol.ChannelEncrypted:
		cd := channelDataString(d.ChannelData)
		if !s.checkAuth(name, d.Auth, auth.ChannelString(s.socketID, name, cd)) {
			return
		}
	case protocol.ChannelPresence:
		m, ok := s.presenceMember(name, d)
		if !ok {
			return
		}
		member = m
		sub.userID = m.UserID
	}

	ctx := s.ctx
	n := s.node
	rec := s.newRecovery(name, d.LastSerial)
	hc := rec.hubConn(s.conn)
	if hc != hub.Conn(s.conn) {
		sub.hub = hc
	}
	if err := n.Hub.Join(ctx, s.topic(name), hc); err != nil {
		n.log().Warn("subscribe failed", "app", s.app.ID, "channel", name, "err", err)
		s.fail(name, failure{code: 0, kind: "ServerError", status: 500, msg: "Subscription failed, try again"})
		return
	}
	added := false
	if ch.IsPresence() {
		var err error
		added, err = n.Presence.Join(ctx, s.app.ID, name, member, s.socketID, s.app.MaxPresenceMembers)
		if err != nil {
			n.Hub.Leave(s.topic(name), hc)
			if errors.Is(err, state.ErrChannelFull) {
				s.fail(name, limitFailure(protocol.CodeOverCapacity,
					"Presence channel "+name+" is full (limit "+strconv.Itoa(s.app.MaxPresenceMembers)+" members)"))
			} else {
				s.fail(name, failure{code: 0, kind: "ServerError", status: 500, msg: "Subscription failed, try again"})
			}
			return
		}
	}
	s.subs = append(s.subs, sub)
	if ch.NeedsAuth() {
		s.markAuthorized()
	}
	count, err := n.Occupancy.Add(ctx, s.app.ID, name)
	if err != nil {
		n.log().Warn("occupancy add failed", "app", s.app.ID, "channel", name, "err", err)
	} else if count == 1 {
		n.observer().ChannelOccupied(s.app.ID, name)
	}
	if added {
		data := memberAddedData(member)
		_ = n.Broker.Publish(ctx, &broker.Message{
			Topic:   s.topic(name),
			Payload: protocol.Event(protocol.EventMemberAdded, name, data),
			Exclude: s.socketID,
		})
		n.observer().MemberAdded(s.app.ID, name, member.UserID)
	}
	s.resendSucceeded(sub)
	// Recovery: the missed events (or herald:recovery_failed), then the
	// live ones; a client brought up to date needs no cached event.
	if recovered := rec.replay(); ch.Cache && !recovered {
		s.replayCache(name)
	}
	rec.goLive()
	if err == nil {
		s.subscriptionCount(ch, count, true)
	}
}

// subscriptionCount reports a non-presence channel's new subscription count
// (seed pusher-subscription-count): channels of up to 100 subscribers get
// every change broadcast to all subscribers; larger ones at most one broadcast
// per 5 s (a cluster-wide lock with expiry), and a socket that just subscribed
// while the lock is held is sent the count directly. The subscription_count
// webhook follows the broadcasts.
func (s *Session) subscriptionCount(ch protocol.Channel, count int, joined bool) {
	payload, broadcast := s.node.subscriptionCount(s.ctx, s.app, ch, count)
	if payload != nil && !broadcast && joined {
		s.conn.SendPayload(payload)
	}
}

// subscriptionCount broadcasts a channel's new count when the app counts
// subscriptions and the throttle allows it. It returns the count frame (nil
// when the channel is not counted) and whether it was broadcast.
func (n *Node) subscriptionCount(ctx context.Context, a *apps.App, ch protocol.Channel, count int) (payload []byte, broadcast bool) {
	if !a.SubscriptionCount || ch.IsPresence() || ch.Type == protocol.ChannelUser || count <= 0 {
		return nil, false
	}
	payload = protocol.Event(protocol.EventSubscriptionCount, ch.Name,
		`{"subscription_count":`+strconv.Itoa(count)+`}`)
	broadcast = count <= apps.SubscriptionCountSmall
	if !broadcast {
		ok, err := n.locks().TryLock(ctx, a.ID, "subscription_count:"+ch.Name, apps.SubscriptionCountInterval)
		if err != nil {
			n.log().Warn("subscription count lock failed", "app", a.ID, "channel", ch.Name, "err", err)
		}
		broadcast = ok
	}
	if broadcast {
		topic := broker.Topic{App: a.ID, Channel: ch.Name}
		if err := n.Broker.Publish(ctx, &broker.Message{Topic: topic, Payload: payload}); err != nil {
			n.log().Warn("subscription count publish failed", "app", a.ID, "channel", ch.Name, "err", err)
		}
		n.observer().SubscriptionCount(a.ID, ch.Name, count)
	}
	return payload, broadcast
}

// checkAuth verifies a private or presence signature and reports failures.
func (s *Session) checkAuth(channel, authStr, toSign string) bool {
	if auth.VerifyAuth(s.app.Key, s.app.Secret, authStr, toSign) {
		return true
	}
	s.fail(channel, authFailure("Invalid signature: Expected HMAC SHA256 hex digest of "+toSign+", but got "+truncate(authStr, 200)))
	return false
}

// presenceMember verifies a presence subscription and returns its member.
func (s *Session) presenceMember(name string, d subscribeData) (state.Member, bool) {
	cd := channelDataString(d.ChannelData)
	if cd == "" {
		// pusher-js ≥ 7.4: presence authorized by the signed-in user.
		if s.user == nil {
			s.fail(name, authFailure("Presence subscription to "+name+" needs channel_data or a signed-in user"))
			return state.Member{}, false
		}
		if !s.checkAuth(name, d.Auth, auth.ChannelString(s.socketID, name, "")) {
			return state.Member{}, false
		}
		return state.Member{UserID: s.user.id, UserInfo: s.user.userInfo}, true
	}
	if !s.checkAuth(name, d.Auth, auth.ChannelString(s.socketID, name, cd)) {
		return state.Member{}, false
	}
	var data struct {
		UserID   json.RawMessage `json:"user_id"`
		UserInfo json.RawMessage `json:"user_info"`
	}
	if protocol.TooDeep([]byte(cd), protocol.MaxJSONDepth) {
		s.fail(name, validationFailure("Invalid channel_data: "+protocol.ErrTooDeep.Error()))
		return state.Member{}, false
	}
	if json.Unmarshal([]byte(cd), &data) != nil {
		s.fail(name, validationFailure("Invalid channel_data: not a JSON object"))
		return state.Member{}, false
	}
	id, ok := normalizeUserID(data.UserID)
	if !ok {
		s.fail(name, validationFailure("Invalid channel_data: user_id must be a non-empty string or number"))
		return state.Member{}, false
	}
	if len(id) > s.app.MaxUserIDLength {
		s.fail(name, limitFailure(protocol.CodeClientEventLimit,
			"user_id is longer than "+strconv.Itoa(s.app.MaxUserIDLength)+" characters"))
		return state.Member{}, false
	}
	info := data.UserInfo
	if string(info) == "null" {
		info = nil
	}
	if len(info) > s.app.MaxUserInfoSize {
		s.fail(name, limitFailure(protocol.CodeClientEventLimit,
			"user_info is larger than "+strconv.Itoa(s.app.MaxUserInfoSize)+" bytes"))
		return state.Member{}, false
	}
	if info != nil {
		var buf bytes.Buffer
		if json.Compact(&buf, info) == nil {
			info = buf.Bytes()
		}
	}
	return state.Member{UserID: id, UserInfo: info}, true
}

// normalizeUserID turns a JSON string or number into the user id string.
func normalizeUserID(raw json.RawMessage) (string, bool) {
	if len(raw) == 0 {
		return "", false
	}
	switch raw[0] {
	case '"':
		var s string
		if json.Unmarshal(raw, &s) != nil || s == "" {
			return "", false
		}
		return s, true
	case '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9':
		var n json.Number
		if json.Unmarshal(raw, &n) != nil {
			return "", false
		}
		return n.String(), true
	}
	return "", false
}

func memberAddedData(m state.Member) string {
	b := make([]byte, 0, 32+len(m.UserID)+len(m.UserInfo))
	b = append(b, `{"user_id":`...)
	b = protocol.AppendString(b, m.UserID)
	b = append(b, `,"user_info":`...)
	if m.UserInfo == nil {
		b = append(b, "null"...)
	} else {
		b = append(b, m.UserInfo...)
	}
	return string(append(b, '}'))
}

// resendSucceeded sends pusher_internal:subscription_succeeded for sub,
// with the member list on presence channels.
func (s *Session) resendSucceeded(sub *subscription) {
	name := sub.channel.Name
	if !sub.channel.IsPresence() {
		s.conn.SendPayload(protocol.Event(protocol.EventSubscriptionSucceeded, name, "{}"))
		return
	}
	members, err := s.node.Presence.Members(s.ctx, s.app.ID, name)
	if err != nil {
		s.node.log().Warn("presence members failed", "app", s.app.ID, "channel", name, "err", err)
	}
	b := make([]byte, 0, 64+len(members)*32)
	b = append(b, `{"presence":{"ids":[`...)
	for i, m := range members {
		if i > 0 {
			b = append(b, ',')
		}
		b = protocol.AppendString(b, m.UserID)
	}
	b = append(b, `],"hash":{`...)
	for i, m := range members {
		if i > 0 {
			b = append(b, ',')
		}
		b = protocol.AppendString(b, m.UserID)
		b = append(b, ':')
		if m.UserInfo == nil {
			b = append(b, "null"...)
		} else {
			b = append(b, m.UserInfo...)
		}
	}
	b = append(b, `},"count":`...)
	b = strconv.AppendInt(b, int64(len(members)), 10)
	b = append(b, "}}"...)
	s.conn.SendPayload(protocol.Event(protocol.EventSubscriptionSucceeded, name, string(b)))
}

func (s *Session) replayCache(name string) {
	ev, _, ok, err := s.node.Cache.Get(s.ctx, s.app.ID, name)
	if err != nil {
		s.node.log().Warn("cache read failed", "app", s.app.ID, "channel", name, "err", err)
	}
	if ok {
		s.conn.SendPayload(protocol.Event(ev.Event, name, ev.Data))
		return
	}
	s.conn.SendPayload(protocol.Event(protocol.EventCacheMiss, name, "{}"))
	s.node.observer().CacheMiss(s.app.ID, name)
}

func (s *Session) unsubscribe(f *protocol.ClientFrame) {
	var d subscribeData
	obj := f.DataObject()
	if obj == nil || json.Unmarshal(obj, &d) != nil || d.Channel == "" {
		s.sendError(0, "Invalid unsubscribe data", "")
		return
	}
	i := s.find(d.Channel)
	if i < 0 {
		return // unsubscribe has no reply, even for unknown channels
	}
	sub := s.subs[i]
	s.subs = append(s.subs[:i], s.subs[i+1:]...)
	s.leave(sub)
}

// leave undoes a subscription: hub, presence, occupancy, with their events.
func (s *Session) leave(sub *subscription) {
	name := sub.channel.Name
	if sub.channel.Type == protocol.ChannelUser {
		return // the user topic is left on signout
	}
	n := s.node
	ctx := s.ctx
	n.Hub.Leave(s.topic(name), sub.hubConn(s.conn))
	if sub.channel.IsPresence() {
		removed, err := n.Presence.Leave(ctx, s.app.ID, name, sub.userID, s.socketID)
		if err != nil {
			n.log().Warn("presence leave failed", "app", s.app.ID, "channel", name, "err", err)
		}
		if removed {
			data := `{"user_id":` + string(protocol.AppendString(nil, sub.userID)) + `}`
			_ = n.Broker.Publish(ctx, &broker.Message{
				Topic:   s.topic(name),
				Payload: protocol.Event(protocol.EventMemberRemoved, name, data),
			})
			n.observer().MemberRemoved(s.app.ID, name, sub.userID)
		}
	}
	count, err := n.Occupancy.Remove(ctx, s.app.ID, name)
	if err != nil {
		n.log().Warn("occupancy remove failed", "app", s.app.ID, "channel", name, "err", err)
		return
	}
	if count == 0 {
		n.observer().ChannelVacated(s.app.ID, name)
		return
	}
	s.subscriptionCount(sub.channel, count, false)
}
