package http

import (
	"bufio"
	"bytes"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
)

// FuzzHTTPInfo decodes arbitrary request heads, as the server reads them,
// into what a function sees of the request (httpInfo): method and path as
// the server parsed them, every query parameter with its values joined by
// commas, every header under its lower-case name with its values joined by
// ", ", and JSON that encoding/json would write.
func FuzzHTTPInfo(f *testing.F) {
	for _, s := range []string{
		"GET /function/f HTTP/1.1\r\nHost: x\r\n\r\n",
		"POST /function/f?a=1&a=2&b=%20c&&=x&d HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nX-Polyfn-Trigger: invoke\r\nAccept: a\r\nAccept: b\r\nContent-Length: 0\r\n\r\n",
		"PUT /function/%66%2F?q=%zz;x=1 HTTP/1.0\r\nx-lower: \xff\xfe\r\nTraceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n\r\n",
		"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n",
		"GET http://h/function/f?x=<&>#frag HTTP/1.1\r\nHost: y\r\nCookie: a=1\r\nCookie: b=2\r\nX-Empty:\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, head []byte) {
		r, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(head)))
		if err != nil {
			return // the server answers 400 itself
		}
		info := httpInfo(r)
		if info.Method != r.Method || info.Path != r.URL.Path {
			t.Fatalf("method %q, path %q; the request has %q, %q", info.Method, info.Path, r.Method, r.URL.Path)
		}
		q := r.URL.Query()
		if len(info.Query) != len(q) {
			t.Fatalf("query %q from %q", info.Query, r.URL.RawQuery)
		}
		for k, v := range q {
			if got, ok := info.Query[k]; !ok || got != strings.Join(v, ",") {
				t.Fatalf("query %q = %q, want %q", k, got, strings.Join(v, ","))
			}
		}
		lower := map[string][]string{}
		for k, v := range r.Header {
			lower[strings.ToLower(k)] = append(lower[strings.ToLower(k)], v...)
		}
		if len(info.Headers) != len(lower) {
			t.Fatalf("headers %q from %q", info.Headers, r.Header)
		}
		for k, v := range r.Header {
			if got := info.Headers[strings.ToLower(k)]; got != strings.Join(v, ", ") {
				t.Fatalf("header %q = %q, want %q", k, got, strings.Join(v, ", "))
			}
		}
		want, err := json.Marshal(info)
		if err != nil {
			t.Fatal(err)
		}
		if got := info.AppendJSON(nil); string(got) != string(want) {
			t.Fatalf("AppendJSON\n got %s\nwant %s", got, want)
		}
	})
}
