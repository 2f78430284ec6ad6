package azure

import (
	"maps"
	"net/http"
	"strings"
	"testing"
)

func httpFn(name, route string, methods ...string) *Function {
	r := route
	if r == "" {
		r = name
	}
	return &Function{Name: name, HTTP: &HTTPTrigger{BindingName: "req", Route: r, Methods: methods, OutputBinding: ReturnBinding}}
}

func TestRouter(t *testing.T) {
	fns := []*Function{
		httpFn("Hello", ""),
		httpFn("ListProducts", "products", "GET"),
		httpFn("NewProduct", "products/new", "GET"),
		httpFn("GetProduct", "products/{id:int}", "GET", "POST"),
		httpFn("ProductByName", "products/{name}", "GET"),
		httpFn("Items", "items/{id?}"),
		httpFn("Files", "files/{*path}", "GET"),
		httpFn("User", "users/{id:guid}"),
		httpFn("Flag", "flags/{on:bool}"),
		httpFn("Letters", "letters/{s:alpha}"),
		httpFn("When", "when/{d:datetime}"), // unknown to polyfn: any value
		httpFn("Page", "pages/{n:range(1,10)=1}"),
		httpFn("Code", "codes/{c:length(3)}/{rest:regex(^[a-z]+$)}"),
		{Name: "Timer"}, // not HTTP: ignored
	}
	r, err := NewRouter(fns, DefaultRoutePrefix)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		method, path string
		want         string // function name, or "" for none
		params       map[string]string
		status       int
	}{
		{"GET", "/api/Hello", "Hello", map[string]string{}, 200},
		{"GET", "/api/hello/", "Hello", map[string]string{}, 200},
		{"delete", "/API/HELLO", "Hello", map[string]string{}, 200},
		{"GET", "/api/products", "ListProducts", map[string]string{}, 200},
		{"POST", "/api/products", "", nil, 405},
		{"GET", "/api/products/new", "NewProduct", map[string]string{}, 200}, // literal beats {name}
		{"GET", "/api/Products/NEW", "NewProduct", map[string]string{}, 200},
		{"POST", "/api/products/new", "", nil, 405},
		{"GET", "/api/products/42", "GetProduct", map[string]string{"id": "42"}, 200}, // {id:int} beats {name}
		{"POST", "/api/products/42", "GetProduct", map[string]string{"id": "42"}, 200},
		{"PUT", "/api/products/42", "", nil, 405},
		{"GET", "/api/products/99999999999", "ProductByName", map[string]string{"name": "99999999999"}, 200}, // not an int32
		{"GET", "/api/products/blue%20shoe", "ProductByName", map[string]string{"name": "blue shoe"}, 200},
		{"GET", "/api/products/a%2Fb", "ProductByName", map[string]string{"name": "a/b"}, 200},
		{"GET", "/api/products/1/2", "", nil, 404},
		{"GET", "/api/items", "Items", map[string]string{}, 200},
		{"PATCH", "/api/items/7", "Items", map[string]string{"id": "7"}, 200},
		{"GET", "/api/items/7/8", "", nil, 404},
		{"GET", "/api/files", "Files", map[string]string{}, 200},
		{"GET", "/api/files/a/b%20c/d.txt", "Files", map[string]string{"path": "a/b c/d.txt"}, 200},
		{"POST", "/api/files/x", "", nil, 405},
		{"GET", "/api/users/0f8fad5b-d9cb-469f-a165-70867728950e", "User", map[string]string{"id": "0f8fad5b-d9cb-469f-a165-70867728950e"}, 200},
		{"GET", "/api/users/{0F8FAD5BD9CB469FA16570867728950E}", "", nil, 404}, // braces need the hyphenated form
		{"GET", "/api/users/0F8FAD5BD9CB469FA16570867728950E", "User", map[string]string{"id": "0F8FAD5BD9CB469FA16570867728950E"}, 200},
		{"GET", "/api/users/42", "", nil, 404},
		{"GET", "/api/flags/TRUE", "Flag", map[string]string{"on": "TRUE"}, 200},
		{"GET", "/api/flags/yes", "", nil, 404},
		{"GET", "/api/letters/abcXYZ", "Letters", map[string]string{"s": "abcXYZ"}, 200},
		{"GET", "/api/letters/abc1", "", nil, 404},
		{"GET", "/api/when/anything", "When", map[string]string{"d": "anything"}, 200},
		{"GET", "/api/pages", "Page", map[string]string{"n": "1"}, 200},
		{"GET", "/api/pages/10", "Page", map[string]string{"n": "10"}, 200},
		{"GET", "/api/pages/11", "", nil, 404},
		{"GET", "/api/codes/abc/xyz", "Code", map[string]string{"c": "abc", "rest": "xyz"}, 200},
		{"GET", "/api/codes/abcd/xyz", "", nil, 404},
		{"GET", "/api/codes/abc/XYZ", "Code", map[string]string{"c": "abc", "rest": "XYZ"}, 200}, // regex is case-insensitive
		{"GET", "/api/codes/abc/x1", "", nil, 404},
		{"GET", "/api", "", nil, 404},
		{"GET", "/api/", "", nil, 404},
		{"GET", "/apix/Hello", "", nil, 404},
		{"GET", "/Hello", "", nil, 404},
		{"GET", "/api/nothing", "", nil, 404},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			fn, params, status := r.Match(tt.method, tt.path)
			if status != tt.status {
				t.Errorf("status = %d, want %d", status, tt.status)
			}
			got := ""
			if fn != nil {
				got = fn.Name
			}
			if got != tt.want {
				t.Errorf("function = %q, want %q", got, tt.want)
			}
			if !maps.Equal(params, tt.params) || (params == nil) != (tt.params == nil) {
				t.Errorf("params = %v, want %v", params, tt.params)
			}
		})
	}
}

func TestRouterAllowed(t *testing.T) {
	r, err := NewRouter([]*Function{
		httpFn("A", "x/{id}", "GET"),
		httpFn("B", "x/{id:int}", "POST", "PUT"),
		httpFn("C", "y"),
	}, "api")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, st := r.Match("DELETE", "/api/x/1"); st != http.StatusMethodNotAllowed {
		t.Errorf("status = %d", st)
	}
	if got := strings.Join(r.Allowed("/api/x/1"), ","); got != "GET,POST,PUT" {
		t.Errorf("Allowed(x/1) = %s", got)
	}
	if got := strings.Join(r.Allowed("/api/x/a"), ","); got != "GET" {
		t.Errorf("Allowed(x/a) = %s", got)
	}
	if got := r.Allowed("/api/y"); got != nil {
		t.Errorf("Allowed(y) = %v", got)
	}
}

func TestRouterPrecedenceIsStable(t *testing.T) {
	// Same templates in any load order: the same winner.
	a := httpFn("Alpha", "p/{x}", "GET")
	b := httpFn("Beta", "p/{y}", "GET")
	c := httpFn("Gamma", "p/{*all}", "GET")
	for _, order := range [][]*Function{{a, b, c}, {c, b, a}, {b, c, a}} {
		r, err := NewRouter(order, "api")
		if err != nil {
			t.Fatal(err)
		}
		if fn, _, _ := r.Match("GET", "/api/p/1"); fn != a {
			t.Errorf("winner = %v, want Alpha", fn.Name)
		}
		if fn, _, _ := r.Match("GET", "/api/p/1/2"); fn != c {
			t.Errorf("winner = %v, want Gamma", fn.Name)
		}
	}
}

func TestRouterInvalidTemplates(t *testing.T) {
	good := httpFn("Good", "good")
	fns := []*Function{
		good,
		httpFn("OptMiddle", "a/{b?}/c"),
		httpFn("Complex", "files/{name}.{ext}"),
		httpFn("CatchAllMiddle", "x/{*rest}/y"),
		httpFn("BadRegex", "r/{v:regex(()}"),
		httpFn("Dup", "d/{id}/{ID}"),
		httpFn("Unbalanced", "u/{id"),
		httpFn("EmptySeg", "a//b"),
		httpFn("BadMin", "m/{v:min(x)}"),
	}
	r, err := NewRouter(fns, DefaultRoutePrefix)
	if err == nil {
		t.Fatal("no error")
	}
	for _, fn := range fns[1:] {
		if !strings.Contains(err.Error(), `function "`+fn.Name+`"`) {
			t.Errorf("error does not name %s: %v", fn.Name, err)
		}
	}
	if fn, _, st := r.Match("GET", "/api/good"); fn != good || st != 200 {
		t.Errorf("good route: %v %d", fn, st)
	}
	if _, _, st := r.Match("GET", "/api/a/b/c"); st != 404 {
		t.Errorf("invalid route matched: %d", st)
	}
}

func TestParseTemplateEscapes(t *testing.T) {
	segs, err := parseTemplate("lit{{x}}/{v}")
	if err != nil {
		t.Fatal(err)
	}
	if len(segs) != 2 || segs[0].literal != "lit{x}" || segs[1].param != "v" {
		t.Errorf("segments = %+v", segs)
	}
}

func TestRouterPrefix(t *testing.T) {
	fns := []*Function{
		httpFn("Hello", ""),
		httpFn("Item", "items/{id:int}", "GET"),
		httpFn("Files", "files/{*path}"),
	}
	type req struct {
		method, path string
		want         string // function name, or "" for none
		params       map[string]string
		status       int
	}
	tests := []struct {
		prefix     string
		wantPrefix string
		pathPrefix string
		reqs       []req
	}{
		{"api", "api", "/api/", []req{ // the default: as before
			{"GET", "/api/Hello", "Hello", map[string]string{}, 200},
			{"GET", "/API/hello/", "Hello", map[string]string{}, 200},
			{"GET", "/%61pi/Hello", "Hello", map[string]string{}, 200}, // the path is decoded, as in ASP.NET
			{"GET", "/api/items/7", "Item", map[string]string{"id": "7"}, 200},
			{"POST", "/api/items/7", "", nil, 405},
			{"GET", "/Hello", "", nil, 404},
			{"GET", "/apix/Hello", "", nil, 404},
			{"GET", "/api%2FHello", "", nil, 404},
			{"GET", "/api", "", nil, 404},
		}},
		{"", "", "/", []req{ // no prefix: routes start at "/"
			{"GET", "/Hello", "Hello", map[string]string{}, 200},
			{"GET", "/hello/", "Hello", map[string]string{}, 200},
			{"GET", "/items/7", "Item", map[string]string{"id": "7"}, 200},
			{"PUT", "/items/7", "", nil, 405},
			{"GET", "/files/a/b", "Files", map[string]string{"path": "a/b"}, 200},
			{"GET", "/files", "Files", map[string]string{}, 200},
			{"GET", "/api/Hello", "", nil, 404},
			{"GET", "/", "", nil, 404},
			{"GET", "", "", nil, 404},
			{"GET", "Hello", "", nil, 404},
		}},
		{"v1", "v1", "/v1/", []req{
			{"GET", "/v1/Hello", "Hello", map[string]string{}, 200},
			{"GET", "/V1/HELLO", "Hello", map[string]string{}, 200},
			{"GET", "/v1/items/8", "Item", map[string]string{"id": "8"}, 200},
			{"GET", "/v1/files/x", "Files", map[string]string{"path": "x"}, 200},
			{"GET", "/api/Hello", "", nil, 404},
			{"GET", "/Hello", "", nil, 404},
			{"GET", "/v1x/Hello", "", nil, 404},
			{"GET", "/v1", "", nil, 404},
		}},
		{"/v1/", "v1", "/v1/", []req{ // slashes around the prefix are ignored
			{"GET", "/v1/Hello", "Hello", map[string]string{}, 200},
			{"GET", "/Hello", "", nil, 404},
		}},
		{"v1/Beta", "v1/Beta", "/v1/Beta/", []req{ // several segments
			{"GET", "/v1/beta/Hello", "Hello", map[string]string{}, 200},
			{"GET", "/v1/Hello", "", nil, 404},
			{"GET", "/v1/beta", "", nil, 404},
		}},
	}
	for _, tt := range tests {
		t.Run("prefix "+tt.prefix, func(t *testing.T) {
			r, err := NewRouter(fns, tt.prefix)
			if err != nil {
				t.Fatal(err)
			}
			if got := r.Prefix(); got != tt.wantPrefix {
				t.Errorf("Prefix() = %q, want %q", got, tt.wantPrefix)
			}
			if got := PathPrefix(r.Prefix()); got != tt.pathPrefix {
				t.Errorf("PathPrefix = %q, want %q", got, tt.pathPrefix)
			}
			for _, q := range tt.reqs {
				fn, params, status := r.Match(q.method, q.path)
				got := ""
				if fn != nil {
					got = fn.Name
				}
				if status != q.status || got != q.want || !maps.Equal(params, q.params) || (params == nil) != (q.params == nil) {
					t.Errorf("Match(%s %q) = %q %v %d, want %q %v %d", q.method, q.path, got, params, status, q.want, q.params, q.status)
				}
			}
			if q := tt.reqs[0]; r.Allowed(q.path) != nil { // Hello: any method
				t.Errorf("Allowed(%q) = %v", q.path, r.Allowed(q.path))
			}
		})
	}
}

func TestRouterPrefixAllowed(t *testing.T) {
	r, err := NewRouter([]*Function{httpFn("A", "x", "GET", "POST")}, "v1")
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(r.Allowed("/V1/x"), ","); got != "GET,POST" {
		t.Errorf("Allowed(/V1/x) = %s", got)
	}
	if got := r.Allowed("/api/x"); got != nil {
		t.Errorf("Allowed(/api/x) = %v", got)
	}
}

func TestRouterInvalidPrefix(t *testing.T) {
	for _, prefix := range []string{"{tenant}", "api/{v}", "a//b", "a b", "a?b", "a#b", "a%20b"} {
		r, err := NewRouter([]*Function{httpFn("Hello", "")}, prefix)
		if err == nil || !strings.Contains(err.Error(), "route prefix") {
			t.Errorf("NewRouter(%q): error = %v", prefix, err)
		}
		if r == nil {
			t.Fatalf("NewRouter(%q): nil router", prefix)
		}
		if _, _, st := r.Match("GET", "/"+prefix+"/Hello"); st != http.StatusNotFound {
			t.Errorf("NewRouter(%q): status = %d", prefix, st)
		}
	}
}

func TestPathPrefix(t *testing.T) {
	for in, want := range map[string]string{"api": "/api/", "": "/", "/": "/", "/v1/": "/v1/", "a/b": "/a/b/"} {
		if got := PathPrefix(in); got != want {
			t.Errorf("PathPrefix(%q) = %q, want %q", in, got, want)
		}
	}
	if PathPrefix(DefaultRoutePrefix) != RoutePrefix {
		t.Errorf("RoutePrefix = %q", RoutePrefix)
	}
}
