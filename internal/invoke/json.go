package invoke

import (
	"encoding/json"
	"slices"
)

// AppendJSON appends h as JSON to dst: the same bytes json.Marshal(h) gives
// (keys sorted, HTML characters escaped), without its reflection and
// allocations; it runs on every HTTP invocation.
func (h *HTTPInfo) AppendJSON(dst []byte) []byte {
	if h == nil {
		return append(dst, "null"...)
	}
	dst = append(dst, `{"method":`...)
	dst = AppendJSONString(dst, h.Method)
	dst = append(dst, `,"path":`...)
	dst = AppendJSONString(dst, h.Path)
	dst = append(dst, `,"query":`...)
	dst = appendJSONMap(dst, h.Query)
	dst = append(dst, `,"headers":`...)
	dst = appendJSONMap(dst, h.Headers)
	return append(dst, '}')
}

func appendJSONMap(dst []byte, m map[string]string) []byte {
	if m == nil {
		return append(dst, "null"...)
	}
	var buf [16]string
	keys := buf[:0]
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	dst = append(dst, '{')
	for i, k := range keys {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = AppendJSONString(dst, k)
		dst = append(dst, ':')
		dst = AppendJSONString(dst, m[k])
	}
	return append(dst, '}')
}

// AppendJSONString appends s as a JSON string, as json.Marshal encodes it.
// Printable ASCII that encoding/json leaves alone is copied; anything else
// is encoded by encoding/json, so the result is always the same.
func AppendJSONString(dst []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			b, _ := json.Marshal(s)
			return append(dst, b...)
		}
	}
	dst = append(dst, '"')
	dst = append(dst, s...)
	return append(dst, '"')
}
