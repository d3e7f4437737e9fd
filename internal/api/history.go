package api

import (
	"net/http"
	"strconv"
	"strings"

	"github.com/heraldrt/herald/internal/broker"
	"github.com/heraldrt/herald/internal/history"
	"github.com/heraldrt/herald/internal/protocol"
	"github.com/heraldrt/herald/internal/session"
)

// historyResponse is the body of GET /apps/{app}/channels/{channel}/history.
type historyResponse struct {
	Channel string `json:"channel"`
	// LastSerial is the channel's newest serial (0: no history).
	LastSerial uint64 `json:"last_serial"`
	// Complete (with since only): every event after since is retained, so
	// a client that saw since can catch up from this answer.
	Complete *bool `json:"complete,omitempty"`
	// Truncated: limit left events out (without since the oldest, with
	// since the newest: ask again with since = the last serial returned).
	Truncated bool            `json:"truncated"`
	Events    []history.Event `json:"events"`
}

// history handles GET /apps/{app}/channels/{channel}/history: the retained
// events of a history channel, oldest first. Optional parameters: since (a
// serial: only the events after it, with complete) and limit (at most this
// many events; 1..10000, default all).
func (a *API) history(w http.ResponseWriter, req *request) {
	name := req.r.PathValue("channel")
	if err := protocol.ValidChannelName(name, req.app.MaxChannelNameLength); err != nil || strings.HasPrefix(name, "#") {
		writeError(w, http.StatusBadRequest, "Invalid channel name")
		return
	}
	rule := req.app.HistoryFor(name)
	if rule == nil || a.node.History == nil {
		writeError(w, http.StatusNotFound, "Channel "+name+" keeps no history (no history rule of the app matches it)")
		return
	}
	q := req.r.URL.Query()
	var since uint64
	hasSince := q.Has("since")
	if hasSince {
		v, err := strconv.ParseUint(q.Get("since"), 10, 64)
		if err != nil || v > history.MaxSerial {
			writeError(w, http.StatusBadRequest, "since must be a serial: an integer between 0 and "+strconv.FormatUint(history.MaxSerial, 10))
			return
		}
		since = v
	}
	limit := -1
	if q.Has("limit") {
		v, err := strconv.Atoi(q.Get("limit"))
		if err != nil || v < 1 || v > 10000 {
			writeError(w, http.StatusBadRequest, "limit must be an integer between 1 and 10000")
			return
		}
		limit = v
	}
	rg, err := a.node.History.Since(req.r.Context(), broker.Topic{App: req.app.ID, Channel: name}, session.HistoryPolicy(rule), since)
	if err != nil {
		a.log.Warn("history read failed", "app", req.app.ID, "channel", name, "err", err)
		writeError(w, http.StatusServiceUnavailable, "Could not read the channel's history, try again")
		return
	}
	resp := historyResponse{Channel: name, LastSerial: rg.Last, Events: rg.Events}
	if limit >= 0 && len(resp.Events) > limit {
		resp.Truncated = true
		if hasSince {
			resp.Events = resp.Events[:limit]
		} else {
			resp.Events = resp.Events[len(resp.Events)-limit:]
		}
	}
	if resp.Events == nil {
		resp.Events = []history.Event{}
	}
	if hasSince {
		resp.Complete = &rg.Complete
	}
	writeJSON(w, resp)
}
