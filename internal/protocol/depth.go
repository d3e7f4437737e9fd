package protocol

import (
	"encoding/json"
	"errors"
	"strconv"
)

// MaxJSONDepth is how deeply arrays and objects may nest in what a client
// sends (the frame, and JSON carried in its strings: subscribe data,
// channel_data, user_data, client event data) and in an HTTP API request
// body. Deeper input is refused before it is decoded or relayed, so that no
// parser down the line, Herald's or a subscriber's, meets pathological
// nesting. Pusher payloads need a handful of levels.
const MaxJSONDepth = 32

// ErrTooDeep is returned for JSON nested deeper than MaxJSONDepth.
var ErrTooDeep = errors.New("message is nested deeper than " + strconv.Itoa(MaxJSONDepth) + " levels")

// TooDeep reports whether the JSON text b nests arrays and objects deeper
// than max. Brackets inside strings do not count. It reads b once, without
// allocating, and stops at the first level past max; on text that is not
// JSON the answer is meaningless but the call is still safe.
func TooDeep(b []byte, max int) bool {
	depth := 0
	for i := 0; i < len(b); i++ {
		switch b[i] {
		case '"':
			for i++; i < len(b) && b[i] != '"'; i++ {
				if b[i] == '\\' {
					i++
				}
			}
		case '{', '[':
			depth++
			if depth > max {
				return true
			}
		case '}', ']':
			depth--
		}
	}
	return false
}

// StringTooDeep reports whether s, when it is a JSON text, nests deeper
// than max. Text that is not JSON is never too deep (it is opaque data).
func StringTooDeep(s string, max int) bool {
	b := []byte(s)
	return TooDeep(b, max) && json.Valid(b)
}
