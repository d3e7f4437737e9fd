package protocol

import (
	"strconv"
	"strings"
	"testing"
)

func TestTooDeep(t *testing.T) {
	nest := func(n int) string { return strings.Repeat("[", n) + strings.Repeat("]", n) }
	cases := []struct {
		in   string
		max  int
		want bool
	}{
		{`{}`, 1, false},
		{`{"a":{}}`, 1, true},
		{nest(32), 32, false},
		{nest(33), 32, true},
		{`{"a":"[[[[{{{{"}`, 1, false},     // brackets in strings do not count
		{`{"a":"\"[[[[","b":1}`, 1, false}, // escaped quote inside a string
		{`{"a":"\\","b":[[1]]}`, 2, true},  // escaped backslash ends before the quote
		{`"unterminated [[[[`, 1, false},   // not JSON: safe
	}
	for _, c := range cases {
		if got := TooDeep([]byte(c.in), c.max); got != c.want {
			t.Errorf("TooDeep(%q, %d) = %v, want %v", c.in, c.max, got, c.want)
		}
	}
	if StringTooDeep("[[[[[[ not json", 2) {
		t.Error("StringTooDeep counts text that is not JSON")
	}
	if !StringTooDeep(nest(3), 2) {
		t.Error("StringTooDeep misses JSON text nested too deep")
	}
	deep := `{"event":"e","data":` + nest(MaxJSONDepth) + `}`
	if _, err := DecodeClientFrame([]byte(deep)); err != ErrTooDeep {
		t.Errorf("a frame %d levels deep: err %v, want ErrTooDeep", MaxJSONDepth+1, err)
	}
	ok := `{"event":"e","data":` + nest(MaxJSONDepth-1) + `}`
	if _, err := DecodeClientFrame([]byte(ok)); err != nil {
		t.Errorf("a frame %d levels deep: %v", MaxJSONDepth, err)
	}
	f := &ClientFrame{Event: "e", Data: []byte(strconv.Quote(nest(MaxJSONDepth + 1)))}
	if f.DataObject() != nil {
		t.Error("DataObject decodes a string nested too deep")
	}
}
