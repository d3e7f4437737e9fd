package api

import (
	"net/http"
	"strconv"
	"strings"

	"github.com/heraldrt/herald/internal/protocol"
)

func splitInfo(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}

// channels handles GET /apps/{app}/channels: occupied channels, optionally
// filtered by prefix, with user_count (presence prefix only) or
// subscription_count.
func (a *API) channels(w http.ResponseWriter, req *request) {
	q := req.r.URL.Query()
	prefix := q.Get("filter_by_prefix")
	attrs := splitInfo(q.Get("info"))
	for _, attr := range attrs {
		switch attr {
		case "user_count":
			if !strings.HasPrefix(prefix, protocol.PrefixPresence) {
				writeError(w, http.StatusBadRequest, "info=user_count requires filter_by_prefix starting with presence-")
				return
			}
		case "subscription_count":
		default:
			writeError(w, http.StatusBadRequest, "Unsupported info attribute "+strconv.Quote(truncate(attr, 64)))
			return
		}
	}
	ctx := req.r.Context()
	counts, err := a.node.Occupancy.Channels(ctx, req.app.ID, prefix)
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, "Could not list channels")
		return
	}
	out := make(map[string]map[string]int, len(counts))
	for name, n := range counts {
		if strings.HasPrefix(name, "#") || n <= 0 {
			continue
		}
		m := map[string]int{}
		for _, attr := range attrs {
			switch attr {
			case "user_count":
				c, err := a.node.Presence.Count(ctx, req.app.ID, name)
				if err != nil {
					writeError(w, http.StatusServiceUnavailable, "Could not count users")
					return
				}
				m["user_count"] = c
			case "subscription_count":
				m["subscription_count"] = n
			}
		}
		out[name] = m
	}
	writeJSON(w, map[string]any{"channels": out})
}

// channel handles GET /apps/{app}/channels/{channel}.
func (a *API) channel(w http.ResponseWriter, req *request) {
	name := req.r.PathValue("channel")
	if err := protocol.ValidChannelName(name, req.app.MaxChannelNameLength); err != nil || strings.HasPrefix(name, "#") {
		writeError(w, http.StatusBadRequest, "Invalid channel name")
		return
	}
	ch := protocol.Classify(name)
	attrs := splitInfo(req.r.URL.Query().Get("info"))
	for _, attr := range attrs {
		switch attr {
		case "user_count":
			if !ch.IsPresence() {
				writeError(w, http.StatusBadRequest, "info=user_count is only for presence channels")
				return
			}
		case "subscription_count":
		case "cache":
			if !ch.Cache {
				writeError(w, http.StatusBadRequest, "info=cache is only for cache channels")
				return
			}
		default:
			writeError(w, http.StatusBadRequest, "Unsupported info attribute "+strconv.Quote(truncate(attr, 64)))
			return
		}
	}
	ctx := req.r.Context()
	count, err := a.node.Occupancy.Count(ctx, req.app.ID, name)
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, "Could not read the channel")
		return
	}
	out := map[string]any{"occupied": count > 0}
	for _, attr := range attrs {
		switch attr {
		case "user_count":
			n, err := a.node.Presence.Count(ctx, req.app.ID, name)
			if err != nil {
				writeError(w, http.StatusServiceUnavailable, "Could not count users")
				return
			}
			out["user_count"] = n
		case "subscription_count":
			out["subscription_count"] = count
		case "cache":
			ev, ttl, ok, err := a.node.Cache.Get(ctx, req.app.ID, name)
			if err != nil {
				writeError(w, http.StatusServiceUnavailable, "Could not read the cache")
				return
			}
			if !ok {
				out["cache"] = nil
			} else {
				out["cache"] = map[string]any{"data": ev.Data, "ttl": int(ttl.Seconds() + 0.5)}
			}
		}
	}
	writeJSON(w, out)
}

// users handles GET /apps/{app}/channels/{channel}/users (presence only).
func (a *API) users(w http.ResponseWriter, req *request) {
	name := req.r.PathValue("channel")
	if err := protocol.ValidChannelName(name, req.app.MaxChannelNameLength); err != nil || !protocol.Classify(name).IsPresence() {
		writeError(w, http.StatusBadRequest, "Users can only be listed for presence channels")
		return
	}
	members, err := a.node.Presence.Members(req.r.Context(), req.app.ID, name)
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, "Could not list users")
		return
	}
	type user struct {
		ID string `json:"id"`
	}
	out := make([]user, len(members))
	for i, m := range members {
		out[i] = user{ID: m.UserID}
	}
	writeJSON(w, map[string]any{"users": out})
}

// terminate handles POST /apps/{app}/users/{user}/terminate_connections.
func (a *API) terminate(w http.ResponseWriter, req *request) {
	id := req.r.PathValue("user")
	if err := protocol.ValidUserID(id, req.app.MaxUserIDLength); err != nil {
		writeError(w, http.StatusBadRequest, "Invalid user id: "+err.Error())
		return
	}
	if err := a.node.TerminateUser(req.r.Context(), req.app, id); err != nil {
		writeError(w, http.StatusServiceUnavailable, "Could not terminate connections, try again")
		return
	}
	writeJSON(w, struct{}{})
}
