package invoke

import (
	"encoding/json"
	"testing"
)

func TestHTTPInfoAppendJSON(t *testing.T) {
	odd := []string{"", "plain", `quo"te`, `back\slash`, "<html>&amp;", "tab\tnew\nline\r\x00\x1f\x7f", "é ü 日本", "\u2028\u2029", "bad \xff utf-8", "a, b"}
	cases := []*HTTPInfo{
		nil,
		{},
		{Method: "POST", Path: "/function/f", Query: map[string]string{}, Headers: map[string]string{}},
		{Method: "GET", Path: "/function/f", Query: map[string]string{"a": "1", "b": "x,y"}, Headers: map[string]string{"content-type": "application/json", "x-b": "1", "x-a": "2"}},
	}
	for _, s := range odd {
		m := map[string]string{}
		for j, v := range odd {
			m[s+v[:min(len(v), j)]] = v + s
		}
		cases = append(cases, &HTTPInfo{Method: s, Path: s, Query: m, Headers: m})
	}
	many := map[string]string{}
	for i := range 40 {
		many[string(rune('a'+i%26))+string(rune('A'+i))] = odd[i%len(odd)]
	}
	cases = append(cases, &HTTPInfo{Method: "PUT", Path: "/p", Query: many, Headers: many})
	for _, h := range cases {
		want, err := json.Marshal(h)
		if err != nil {
			t.Fatal(err)
		}
		if got := h.AppendJSON([]byte("prefix")); string(got) != "prefix"+string(want) {
			t.Errorf("AppendJSON(%+v)\n got %s\nwant prefix%s", h, got, want)
		}
	}
}
