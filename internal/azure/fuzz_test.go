package azure

import (
	"bufio"
	"bytes"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"

	rpc "github.com/polyfn/polyfn/api/azure"
)

// FuzzRouter builds routers from arbitrary route templates and a route
// prefix and matches arbitrary requests. Building and matching must not
// panic; the answer must not depend on the order of the functions; a match
// is 200 with a function that allows the method and parameters its
// template names, or 405 with the methods Allowed lists, or 404; and a
// template of literal segments matches its own path.
func FuzzRouter(f *testing.F) {
	for _, s := range [][6]string{
		{"api", "products/{id:int}", "products/{name}", "GET,POST", "GET", "/api/products/42"},
		{"api", "products/new", "products/{name}", "", "post", "/api/Products/NEW"},
		{"", "files/{*path}", "files/{**rest=x}", "GET", "GET", "/files/a/b%20c/d.txt"},
		{"v1/beta", "items/{id?}", "items/{id:range(1,10)=1}/x", "", "GET", "/v1/beta/items/7"},
		{"api", "users/{id:guid}", "codes/{c:length(3)}/{rest:regex(^[a-z]+$)}", "", "GET", "/api/codes/abc/XYZ"},
		{"api", "p/{v:min(1):max(9)}", "p/{v:minlength(2):maxlength(3)}", "DELETE", "PUT", "/api/p/5"},
		{"api", "lit{{x}}/{v:alpha}", "f/{n:decimal}/{b:bool}/{d:double}", "", "GET", "/api/lit%7Bx%7D/abc"},
		{"{x}", "a//b", "a/{b?}/c", "", "GET", "/a/b/c"},
		{"api", "u/{id", "d/{id}/{ID}", "", "GET", "/api/u/%zz/%"},
	} {
		f.Add(s[0], s[1], s[2], s[3], s[4], s[5])
	}
	f.Fuzz(func(t *testing.T, prefix, t1, t2, methods, method, path string) {
		var ms []string
		if methods != "" {
			ms = strings.Split(strings.ToUpper(methods), ",")
		}
		a := &Function{Name: "a", HTTP: &HTTPTrigger{Route: t1, Methods: ms}}
		b := &Function{Name: "b", HTTP: &HTTPTrigger{Route: t2}}
		r, _ := NewRouter([]*Function{a, b}, prefix)
		r2, _ := NewRouter([]*Function{b, a}, prefix)
		if r.Prefix() != r2.Prefix() {
			t.Fatalf("prefix %q, then %q", r.Prefix(), r2.Prefix())
		}
		fn, params, status := r.Match(method, path)
		fn2, params2, status2 := r2.Match(method, path)
		if fn != fn2 || status != status2 || !maps.Equal(params, params2) {
			t.Fatalf("the order of the functions changed the match: %v %v %d, then %v %v %d", name(fn), params, status, name(fn2), params2, status2)
		}
		switch status {
		case http.StatusOK:
			if fn == nil || len(fn.HTTP.Methods) > 0 && !slices.Contains(fn.HTTP.Methods, strings.ToUpper(method)) {
				t.Fatalf("%s %s matched %v, which does not allow the method", method, path, name(fn))
			}
			for k := range params {
				if !strings.Contains(fn.HTTP.Route, k) {
					t.Fatalf("parameter %q is not in route %q", k, fn.HTTP.Route)
				}
			}
		case http.StatusMethodNotAllowed:
			allowed := r.Allowed(path)
			if fn != nil || len(allowed) == 0 || slices.Contains(allowed, strings.ToUpper(method)) {
				t.Fatalf("405 for %s %s with %v, allowed %v", method, path, name(fn), allowed)
			}
		case http.StatusNotFound:
			if fn != nil {
				t.Fatalf("404 with function %v", name(fn))
			}
		default:
			t.Fatalf("status %d", status)
		}
		// A template of literal segments matches its own path, as written
		// and with its ASCII letters in upper case. (Not with every letter
		// upper-cased: like ASP.NET's OrdinalIgnoreCase, the router does not
		// take "I" for the dotless "ı", whose upper case it is.)
		segs, err := parseTemplate(t1)
		if err != nil || len(r.routes) == 0 || slices.ContainsFunc(segs, func(s segment) bool { return s.param != "" }) {
			return
		}
		for _, upper := range []bool{false, true} {
			p := PathPrefix(r.Prefix())
			for i, s := range segs {
				if i > 0 {
					p += "/"
				}
				lit := s.literal
				if upper {
					lit = strings.Map(func(r rune) rune {
						if 'a' <= r && r <= 'z' {
							return r - 'a' + 'A'
						}
						return r
					}, lit)
				}
				p += url.PathEscape(lit)
			}
			if got, _, st := r.Match(firstOr(ms, "GET"), p); st != http.StatusOK || got == nil {
				t.Fatalf("route %q (prefix %q) does not match its path %q: %d %v", t1, r.Prefix(), p, st, name(got))
			}
		}
	})
}

func name(fn *Function) any {
	if fn == nil {
		return nil
	}
	return fn.Name
}

func firstOr(s []string, def string) string {
	if len(s) > 0 {
		return s[0]
	}
	return def
}

// FuzzBuildHTTP encodes arbitrary requests (a request head as the server
// reads it, a body, a worker's capabilities), routed to a function with
// route parameters, as an HTTP-triggered invocation's input. It must not
// panic and must make a message protobuf can encode (every string valid
// UTF-8: the stream to the worker fails as a whole on a message it cannot
// encode) and decode back unchanged.
func FuzzBuildHTTP(f *testing.F) {
	for _, s := range []struct {
		head, body string
		caps       uint8
	}{
		{"POST /api/products/42?a=1&A=2&code=x&&=y HTTP/1.1\r\nHost: h\r\nContent-Type: application/json\r\nX-Forwarded-Proto: https, http\r\n\r\n", `{"a": 1, "b": "x", "c": true, "d": null, "e": [1], "f": 1.5e3}`, 0},
		{"PUT /api/x HTTP/1.0\r\nContent-Type: application/octet-stream\r\nX-Empty:\r\n\r\n", "\x00\xff\xfe", 0x3f},
		{"GET /api/x?q=%zz&q=%E2%82%AC HTTP/1.1\r\nHost: h\r\nContent-Type: text/plain; charset=utf-16\r\n\r\n", "\xff\xfeh\x00i\x00", 0x15},
		{"PATCH http://other/api/x HTTP/1.1\r\nHost: h\r\nContent-Type: multipart/form-data; boundary=x\r\nA: 1\r\nA: 2\r\n\r\n", "\xef\xbb\xbf{\"k\": \"v\"}", 0x2a},
		{"POST /api/x HTTP/1.1\r\nHost: h\r\nContent-Type: application/json\r\n\r\n", `"just a string"`, 0x08},
	} {
		f.Add([]byte(s.head), []byte(s.body), s.caps)
	}
	capNames := []string{CapRawHTTPBodyBytes, CapRPCHTTPBodyOnly, CapRPCHTTPTriggerMetadataRemoved, CapIgnoreEmptyValuedRPCHTTPHeaders,
		CapUseNullableValueDictionaryForHTTP, CapTypedDataCollection}
	fn := &Function{Name: "f", HTTP: &HTTPTrigger{BindingName: "req", Route: "{first}/{*rest}"}}
	router, err := NewRouter([]*Function{fn}, "")
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, head, body []byte, capBits uint8) {
		r, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(head)))
		if err != nil {
			return // the server answers 400 itself
		}
		caps := Capabilities{}
		for i, c := range capNames {
			if capBits&(1<<i) != 0 {
				caps[c] = "true"
			}
		}
		_, params, _ := router.Match(r.Method, r.URL.EscapedPath())
		rh := BuildHTTP(r, body, params, caps)
		input, md := InvocationInput(fn, rh, caps)
		ir := &rpc.InvocationRequest{InvocationId: "i", FunctionId: "f", InputData: input, TriggerMetadata: md}
		b, err := proto.Marshal(ir)
		if err != nil {
			t.Fatalf("the invocation cannot be encoded: %v\nrequest %q", err, head)
		}
		var back rpc.InvocationRequest
		if err := proto.Unmarshal(b, &back); err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(&back, ir) {
			t.Fatalf("decoded\n%v\nwant\n%v", &back, ir)
		}
		if rh.GetMethod() != r.Method || !utf8.ValidString(rh.GetUrl()) {
			t.Fatalf("method %q, url %q", rh.GetMethod(), rh.GetUrl())
		}
	})
}
