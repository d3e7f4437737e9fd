package session

import (
	"context"
	"encoding/json"
	"strconv"
	"time"

	"github.com/heraldrt/herald/internal/auth"
	"github.com/heraldrt/herald/internal/broker"
	"github.com/heraldrt/herald/internal/protocol"
)

type signinData struct {
	Auth     string          `json:"auth"`
	UserData json.RawMessage `json:"user_data"`
}

type userData struct {
	ID        json.RawMessage `json:"id"`
	UserInfo  json.RawMessage `json:"user_info"`
	Watchlist []string        `json:"watchlist"`
}

// signin handles pusher:signin (user authentication). Failures answer
// pusher:error 4009 and keep the connection open.
func (s *Session) signin(f *protocol.ClientFrame) {
	var d signinData
	obj := f.DataObject()
	if obj == nil || json.Unmarshal(obj, &d) != nil {
		s.sendError(protocol.CodeUnauthorized, "Invalid signin data", "")
		return
	}
	ud := channelDataString(d.UserData)
	if ud == "" {
		s.sendError(protocol.CodeUnauthorized, "Signin needs user_data", "")
		return
	}
	toSign := auth.UserString(s.socketID, ud)
	if !auth.VerifyAuth(s.app.Key, s.app.Secret, d.Auth, toSign) {
		s.sendError(protocol.CodeUnauthorized, "Invalid signature: Expected HMAC SHA256 hex digest of "+toSign+", but got "+truncate(d.Auth, 200), "")
		return
	}
	var u userData
	if protocol.TooDeep([]byte(ud), protocol.MaxJSONDepth) {
		s.sendError(protocol.CodeUnauthorized, "Invalid user_data: "+protocol.ErrTooDeep.Error(), "")
		return
	}
	if json.Unmarshal([]byte(ud), &u) != nil {
		s.sendError(protocol.CodeUnauthorized, "Invalid user_data: not a JSON object", "")
		return
	}
	var id string
	if len(u.ID) > 0 && u.ID[0] == '"' {
		_ = json.Unmarshal(u.ID, &id)
	}
	if id == "" {
		s.sendError(protocol.CodeUnauthorized, "Invalid user_data: id must be a non-empty string", "")
		return
	}
	if err := protocol.ValidUserID(id, s.app.MaxUserIDLength); err != nil {
		s.sendError(protocol.CodeUnauthorized, "Invalid user id: "+err.Error(), "")
		return
	}
	if s.user != nil && s.user.id != id {
		s.sendError(protocol.CodeUnauthorized, "The connection is already signed in as another user", "")
		return
	}
	info := u.UserInfo
	if string(info) == "null" {
		info = nil
	}
	if len(info) > s.app.MaxUserInfoSize {
		// The same limit as presence channel_data: this user_info is what a
		// presence channel joined without channel_data shows.
		s.sendError(protocol.CodeClientEventLimit, "user_info is larger than "+strconv.Itoa(s.app.MaxUserInfoSize)+" bytes", "")
		return
	}
	watch := u.Watchlist
	tooMany := len(watch) > s.app.MaxWatchlist
	if tooMany {
		watch = watch[:s.app.MaxWatchlist]
	}
	valid := watch[:0:0]
	for _, w := range watch {
		if protocol.ValidUserID(w, s.app.MaxUserIDLength) == nil {
			valid = append(valid, w)
		}
	}
	watch = valid

	n := s.node
	ctx := s.ctx
	if s.user == nil {
		if err := n.Hub.Join(ctx, s.topic(protocol.UserChannel(id)), s.conn); err != nil {
			s.sendError(0, "Signin failed, try again", "")
			return
		}
		first, err := n.Users.SignIn(ctx, s.app.ID, id, s.socketID)
		if err != nil {
			n.log().Warn("signin registry failed", "app", s.app.ID, "err", err)
		}
		s.user = &signedInUser{id: id}
		if first {
			s.publishWatchlist(id, "online")
		}
	} else {
		for _, w := range s.user.watchlist {
			n.Hub.Leave(watchTopic(s.app.ID, w), s.conn)
		}
	}
	s.user.userData = ud
	s.user.userInfo = info
	s.user.watchlist = watch
	s.markAuthorized()

	resp := `{"user_data":` + string(protocol.AppendString(nil, ud)) + `}`
	s.conn.SendPayload(protocol.AppendEventRaw(nil, protocol.EventSigninSuccess, "", []byte(resp), ""))
	if tooMany {
		s.sendError(protocol.CodeWatchlistTooLarge,
			"Watchlist is limited to "+strconv.Itoa(s.app.MaxWatchlist)+" user ids; the rest were ignored", "")
	}
	if len(watch) == 0 {
		return
	}
	for _, w := range watch {
		if err := n.Hub.Join(ctx, watchTopic(s.app.ID, w), s.conn); err != nil {
			n.log().Warn("watchlist subscribe failed", "app", s.app.ID, "err", err)
		}
	}
	online, err := n.Users.Online(ctx, s.app.ID, watch)
	if err != nil {
		n.log().Warn("watchlist status failed", "app", s.app.ID, "err", err)
		return
	}
	var on, off []string
	for i, w := range watch {
		if online[i] {
			on = append(on, w)
		} else {
			off = append(off, w)
		}
	}
	s.conn.SendPayload(protocol.Event(protocol.EventWatchlist, "", watchlistData(on, off)))
}

// watchlistData builds {"events":[{"name":"online","user_ids":[…]},…]},
// leaving out empty lists.
func watchlistData(online, offline []string) string {
	type ev struct {
		Name    string   `json:"name"`
		UserIDs []string `json:"user_ids"`
	}
	evs := make([]ev, 0, 2)
	if len(online) > 0 {
		evs = append(evs, ev{"online", online})
	}
	if len(offline) > 0 {
		evs = append(evs, ev{"offline", offline})
	}
	return protocol.MarshalData(map[string]any{"events": evs})
}

// publishWatchlist tells every watcher of userID that it went online/offline.
func (s *Session) publishWatchlist(userID, status string) {
	s.node.publishWatchlist(s.ctx, s.app.ID, userID, status)
}

func (n *Node) publishWatchlist(ctx context.Context, app, userID, status string) {
	var data string
	if status == "online" {
		data = watchlistData([]string{userID}, nil)
	} else {
		data = watchlistData(nil, []string{userID})
	}
	_ = n.Broker.Publish(ctx, &broker.Message{
		Topic:   watchTopic(app, userID),
		Payload: protocol.Event(protocol.EventWatchlist, "", data),
	})
}

// signout undoes signin when the connection closes.
func (s *Session) signout() {
	n := s.node
	u := s.user
	s.user = nil
	n.Hub.Leave(s.topic(protocol.UserChannel(u.id)), s.conn)
	for _, w := range u.watchlist {
		n.Hub.Leave(watchTopic(s.app.ID, w), s.conn)
	}
	last, err := n.Users.SignOut(s.ctx, s.app.ID, u.id, s.socketID)
	if err != nil {
		n.log().Warn("signout registry failed", "app", s.app.ID, "err", err)
	}
	if last {
		s.publishWatchlist(u.id, "offline")
	}
}

// clientEvent relays a client- event to the channel's other subscribers.
func (s *Session) clientEvent(f *protocol.ClientFrame) {
	if !s.app.ClientEvents {
		s.sendError(protocol.CodeClientEventLimit, "The app does not have client events enabled", f.Channel)
		return
	}
	if len(f.Event) > s.app.MaxEventNameLength {
		s.sendError(protocol.CodeClientEventLimit, "Event name is longer than "+strconv.Itoa(s.app.MaxEventNameLength)+" characters", "")
		return
	}
	i := -1
	if f.Channel != "" {
		i = s.find(f.Channel)
	}
	if i < 0 {
		s.sendError(protocol.CodeUnauthorized, "The client is not a member of the specified channel", truncate(f.Channel, 256))
		return
	}
	sub := s.subs[i]
	if !sub.channel.AllowsClientEvents() {
		s.sendError(protocol.CodeUnauthorized, "Client events are only allowed on private and presence channels", f.Channel)
		return
	}
	if len(f.Data) > s.app.MaxEventSize {
		s.sendError(protocol.CodeClientEventLimit, "Client event data is larger than "+strconv.Itoa(s.app.MaxEventSize)+" bytes", f.Channel)
		return
	}
	if len(f.Data) > 0 && f.Data[0] == '"' && protocol.StringTooDeep(channelDataString(f.Data), protocol.MaxJSONDepth) {
		// Subscribers parse string data as JSON (pusher-js does).
		s.sendError(protocol.CodeClientEventLimit, "Client event data is nested deeper than "+strconv.Itoa(protocol.MaxJSONDepth)+" levels", f.Channel)
		return
	}
	if !s.takeToken() {
		s.node.clientEventsLimited.Add(1)
		s.sendError(protocol.CodeClientEventLimit, "Client event rejected due to rate limit", f.Channel)
		return
	}
	userID := ""
	if sub.channel.IsPresence() {
		userID = sub.userID
	}
	data := f.Data
	if len(data) == 0 {
		data = json.RawMessage(`"{}"`)
	}
	payload := protocol.AppendEventRaw(nil, f.Event, f.Channel, data, userID)
	if err := s.node.Broker.Publish(s.ctx, &broker.Message{
		Topic:   s.topic(f.Channel),
		Payload: payload,
		Exclude: s.socketID,
	}); err != nil {
		s.sendError(0, "Client event could not be delivered, try again", f.Channel)
		return
	}
	s.node.clientEvents.Add(1)
	s.node.observer().ClientEvent(s.app.ID, f.Channel, f.Event, channelDataString(data), s.socketID, userID)
}

// takeToken is a token bucket of ClientEventRate tokens refilled per second.
func (s *Session) takeToken() bool {
	rate := float64(s.app.ClientEventRate)
	ok, _, _ := s.events.Take(time.Now(), rate, rate)
	return ok
}
