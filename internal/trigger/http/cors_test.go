package http

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/polyfn/polyfn/internal/config"
	"github.com/polyfn/polyfn/internal/invoke"
)

// recorder is an Invoker that records every invocation and answers with
// the query the function saw and, when asked, CORS headers of its own. As
// an AppRouter it serves two apps, /api/one/* and /api/two/*, for GET and
// POST.
type recorder struct {
	apps  bool
	mu    sync.Mutex
	calls []string
}

func (r *recorder) Invoke(_ context.Context, req *invoke.Request) (*invoke.Result, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	query := ""
	switch {
	case req.HTTP != nil:
		q := make([]string, 0, len(req.HTTP.Query))
		for k, v := range req.HTTP.Query {
			q = append(q, k+"="+v)
		}
		query = strings.Join(q, "&")
		r.calls = append(r.calls, req.HTTP.Method+" "+req.Function)
	case req.HTTPRequest != nil:
		query = req.HTTPRequest.RawQuery
		r.calls = append(r.calls, req.HTTPRequest.Method+" "+req.App+"/"+req.Function)
	}
	res := &invoke.Result{Payload: []byte(query), HTTP: &invoke.HTTPResponse{Status: 200, Headers: map[string]string{
		"Content-Type": "text/plain", "X-Request-Id": "r1", "Vary": "Accept-Encoding"}}}
	if strings.Contains(query, "fncors") {
		res.HTTP.Headers["Access-Control-Allow-Origin"] = "*"
	}
	return res, nil
}

func (r *recorder) HasApps() bool { return r.apps }

func (r *recorder) RouteApp(_ context.Context, req *invoke.Request) error {
	hr := req.HTTPRequest
	for _, app := range []string{"one", "two"} {
		if strings.HasPrefix(hr.Path, "/api/"+app+"/") {
			if hr.Method != http.MethodGet && hr.Method != http.MethodPost {
				return invoke.Errorf(invoke.KindMethodNotAllowed, "method %s is not allowed", hr.Method)
			}
			req.App, req.Function = app, "Http"
			return nil
		}
	}
	return invoke.Errorf(invoke.KindNotFound, "no function serves %s", hr.Path)
}

func (r *recorder) AppAuthLevel(app, _ string) string {
	if app == "two" {
		return config.LevelFunction
	}
	return config.LevelAnonymous
}

func (r *recorder) seen() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.calls...)
}

// serveConfig serves the handler of the config text (functions' codedir
// is the test's directory) in front of inv on a loopback port; it returns
// the base URL.
func serveConfig(t *testing.T, text string, inv Invoker) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "fn"), 0o755); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse(filepath.Join(dir, "polyfn.yaml"), []byte("mqtt: {embedded: false}\n"+text))
	if err != nil {
		t.Fatal(err)
	}
	ts := startServer(t, cfg, func(s *Server, log *slog.Logger) http.Handler {
		return NewHandlerWith(inv, s, int64(cfg.HTTP.MaxBody), log, HandlerOptions{Config: cfg})
	})
	return "http://" + ts.addr
}

type corsResponse struct {
	status int
	header http.Header
	body   string
}

// corsDo sends method to url with the headers of kv (name, value, ...).
func corsDo(t *testing.T, method, url string, kv ...string) corsResponse {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(kv); i += 2 {
		req.Header.Add(kv[i], kv[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return corsResponse{resp.StatusCode, resp.Header, string(body)}
}

// preflight sends a preflight from origin asking for method and headers.
func preflight(t *testing.T, url, origin, method, headers string) corsResponse {
	t.Helper()
	kv := []string{"Origin", origin, "Access-Control-Request-Method", method}
	if headers != "" {
		kv = append(kv, "Access-Control-Request-Headers", headers)
	}
	return corsDo(t, http.MethodOptions, url, kv...)
}

// forbidden checks a refused preflight: 403, a JSON error naming what was
// refused, and no CORS header.
func forbidden(t *testing.T, what string, r corsResponse, mention string) {
	t.Helper()
	var b ErrorBody
	if r.status != http.StatusForbidden || json.Unmarshal([]byte(r.body), &b) != nil || b.Error.Type != "CORSForbidden" || !strings.Contains(b.Error.Message, mention) {
		t.Errorf("%s: got %d %s, want 403 CORSForbidden mentioning %s", what, r.status, r.body, mention)
	}
	for k := range r.header {
		if strings.HasPrefix(k, "Access-Control-") {
			t.Errorf("%s: a refused preflight has %s: %s", what, k, r.header.Get(k))
		}
	}
}

const corsConfig = `http:
  listen: 0.0.0.0:0
  cors:
    allow_origins: ["https://app.example.com", "https://*.example.org"]
    expose_headers: [X-Request-Id]
    max_age: 2m
auth:
  function_keys: [{name: k, env: POLYFN_CORS_TEST_KEY}]
functions:
  - {name: open, handler: m.h, codedir: fn, auth: anonymous}
  - {name: keyed, handler: m.h, codedir: fn, auth: function}
  - name: creds
    handler: m.h
    codedir: fn
    auth: anonymous
    cors:
      allow_origins: ["https://only.example.net"]
      allow_methods: [PUT]
      allow_headers: [X-Custom]
      allow_credentials: true
  - {name: nocors, handler: m.h, codedir: fn, auth: anonymous, cors: {}}
`

// Preflights are answered by the host, 204 or 403, without a key and
// without an invocation; actual requests from an allowed origin get the
// policy's headers (the function's own CORS headers dropped, its Vary
// kept), from another origin none; a function's cors replaces http.cors,
// and cors: {} leaves OPTIONS to the function. Keys are still asked for on
// the actual request.
func TestCORSFunctions(t *testing.T) {
	t.Setenv("POLYFN_CORS_TEST_KEY", "cors-key-7f1d")
	rec := &recorder{}
	base := serveConfig(t, corsConfig, rec)

	t.Run("preflight allowed", func(t *testing.T) {
		for _, c := range []struct{ fn, origin, method, headers string }{
			{"open", "https://app.example.com", "POST", "content-type, x-polyfn-key"},
			{"keyed", "https://a.b.example.org", "DELETE", ""},
			{"creds", "https://only.example.net", "PUT", "X-Custom"},
		} {
			r := preflight(t, base+"/function/"+c.fn, c.origin, c.method, c.headers)
			h := r.header
			if r.status != http.StatusNoContent || h.Get("Access-Control-Allow-Origin") != c.origin || !strings.Contains(h.Get("Access-Control-Allow-Methods"), c.method) ||
				!strings.Contains(strings.Join(h.Values("Vary"), ","), "Origin") {
				t.Errorf("%s from %s: got %d %v, want 204 allowing it", c.fn, c.origin, r.status, h)
			}
			if c.headers != "" && h.Get("Access-Control-Allow-Headers") != strings.ToLower(c.headers) {
				t.Errorf("%s: Access-Control-Allow-Headers %q, want %q", c.fn, h.Get("Access-Control-Allow-Headers"), strings.ToLower(c.headers))
			}
			wantCreds, wantAge := "", "120"
			if c.fn == "creds" {
				wantCreds, wantAge = "true", "600"
			}
			if h.Get("Access-Control-Allow-Credentials") != wantCreds || h.Get("Access-Control-Max-Age") != wantAge {
				t.Errorf("%s: credentials %q, max age %q; want %q, %s", c.fn, h.Get("Access-Control-Allow-Credentials"), h.Get("Access-Control-Max-Age"), wantCreds, wantAge)
			}
		}
	})

	t.Run("preflight refused", func(t *testing.T) {
		forbidden(t, "another origin", preflight(t, base+"/function/open", "https://evil.example.net", "POST", ""), "http.cors.allow_origins")
		forbidden(t, "the pattern's own domain", preflight(t, base+"/function/open", "https://example.org", "GET", ""), "allow_origins")
		forbidden(t, "another scheme", preflight(t, base+"/function/open", "http://app.example.com", "GET", ""), "allow_origins")
		forbidden(t, "a null origin", preflight(t, base+"/function/open", "null", "GET", ""), "allow_origins")
		forbidden(t, "a method", preflight(t, base+"/function/open", "https://app.example.com", "CONNECT", ""), "http.cors.allow_methods")
		forbidden(t, "a header", preflight(t, base+"/function/open", "https://app.example.com", "GET", "x-custom"), `"x-custom"`)
		// creds has its own policy: http.cors's origins do not open it.
		forbidden(t, "creds from http.cors's origin", preflight(t, base+"/function/creds", "https://app.example.com", "PUT", ""), "functions[2].cors.allow_origins")
		forbidden(t, "creds, a method of http.cors", preflight(t, base+"/function/creds", "https://only.example.net", "POST", ""), "functions[2].cors.allow_methods")
	})

	if calls := rec.seen(); len(calls) != 0 {
		t.Fatalf("preflights reached the function: %v", calls)
	}

	t.Run("actual requests", func(t *testing.T) {
		r := corsDo(t, http.MethodPost, base+"/function/open?fncors=1", "Origin", "https://x.example.org")
		h := r.header
		if r.status != 200 || h.Get("Access-Control-Allow-Origin") != "https://x.example.org" || h.Get("Access-Control-Expose-Headers") != "X-Request-Id" ||
			h.Get("Access-Control-Allow-Credentials") != "" || strings.Join(h.Values("Vary"), ",") != "Origin,Accept-Encoding" {
			t.Errorf("allowed origin: got %d %v", r.status, h)
		}
		r = corsDo(t, http.MethodPost, base+"/function/open?fncors=1", "Origin", "https://evil.example.net")
		if r.status != 200 || r.header.Get("Access-Control-Allow-Origin") != "" || r.header.Get("Access-Control-Expose-Headers") != "" || r.header.Values("Vary")[0] != "Origin" {
			t.Errorf("other origin: got %d %v, want 200 without CORS headers (the function's own dropped)", r.status, r.header)
		}
		r = corsDo(t, http.MethodPut, base+"/function/creds", "Origin", "https://only.example.net")
		if r.header.Get("Access-Control-Allow-Origin") != "https://only.example.net" || r.header.Get("Access-Control-Allow-Credentials") != "true" || r.header.Get("Access-Control-Expose-Headers") != "" {
			t.Errorf("creds: got %v", r.header)
		}
		// Keys are asked for on the actual request; the 401 carries the
		// CORS headers, so that the page can read why.
		r = corsDo(t, http.MethodPost, base+"/function/keyed", "Origin", "https://app.example.com")
		if r.status != http.StatusUnauthorized || r.header.Get("Access-Control-Allow-Origin") != "https://app.example.com" {
			t.Errorf("keyed without a key: got %d %v, want 401 with CORS headers", r.status, r.header)
		}
		r = corsDo(t, http.MethodPost, base+"/function/keyed", "Origin", "https://app.example.com", "X-Polyfn-Key", "cors-key-7f1d")
		if r.status != 200 {
			t.Errorf("keyed with its key: got %d %s", r.status, r.body)
		}
	})

	t.Run("cors: {} leaves OPTIONS to the function", func(t *testing.T) {
		r := preflight(t, base+"/function/nocors?fncors=1", "https://app.example.com", "POST", "")
		if r.status != 200 || r.header.Get("Access-Control-Allow-Origin") != "*" {
			t.Errorf("got %d %v, want the function's own answer", r.status, r.header)
		}
	})

	want := []string{"POST open", "POST open", "PUT creds", "POST keyed", "OPTIONS nocors"}
	if got := rec.seen(); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("invocations: %v, want %v", got, want)
	}
}

// Azure Functions apps: a preflight is routed with the method it asks for,
// to the app whose policy answers it (app one: its own cors; app two:
// http.cors), never invoking it; actual requests get their app's headers;
// a path no app serves gets http.cors's answer.
func TestCORSApps(t *testing.T) {
	t.Setenv("POLYFN_CORS_TEST_KEY", "cors-key-7f1d")
	rec := &recorder{apps: true}
	base := serveConfig(t, `http:
  cors: {allow_origins: ["https://app.example.com"]}
auth:
  function_keys: [{name: k, env: POLYFN_CORS_TEST_KEY}]
functions:
  - name: one
    handler: m.h
    codedir: fn
    cors: {allow_origins: ["https://one.example.com"], allow_credentials: true}
  - {name: two, handler: m.h, codedir: fn}
`, rec)
	if r := preflight(t, base+"/api/one/x?code=k", "https://one.example.com", "POST", "x-functions-key"); r.status != 204 ||
		r.header.Get("Access-Control-Allow-Origin") != "https://one.example.com" || r.header.Get("Access-Control-Allow-Credentials") != "true" {
		t.Errorf("app one from its origin: got %d %v", r.status, r.header)
	}
	forbidden(t, "app one from http.cors's origin", preflight(t, base+"/api/one/x", "https://app.example.com", "POST", ""), "functions[0].cors.allow_origins")
	// App two needs a key; its preflight does not.
	if r := preflight(t, base+"/api/two/x", "https://app.example.com", "GET", ""); r.status != 204 || r.header.Get("Access-Control-Allow-Origin") != "https://app.example.com" {
		t.Errorf("app two from http.cors's origin: got %d %v", r.status, r.header)
	}
	forbidden(t, "app two from app one's origin", preflight(t, base+"/api/two/x", "https://one.example.com", "GET", ""), "http.cors.allow_origins")
	forbidden(t, "a path no app serves", preflight(t, base+"/api/none", "https://one.example.com", "GET", ""), "http.cors")
	if calls := rec.seen(); len(calls) != 0 {
		t.Fatalf("preflights reached an app: %v", calls)
	}

	r := corsDo(t, http.MethodGet, base+"/api/one/x", "Origin", "https://one.example.com")
	if r.status != 200 || r.header.Get("Access-Control-Allow-Origin") != "https://one.example.com" || r.header.Get("Access-Control-Allow-Credentials") != "true" {
		t.Errorf("app one, actual request: got %d %v", r.status, r.header)
	}
	r = corsDo(t, http.MethodGet, base+"/api/two/x", "Origin", "https://app.example.com")
	if r.status != http.StatusUnauthorized || r.header.Get("Access-Control-Allow-Origin") != "https://app.example.com" {
		t.Errorf("app two without a key: got %d %v, want 401 with CORS headers", r.status, r.header)
	}
	r = corsDo(t, http.MethodGet, base+"/api/two/x", "Origin", "https://one.example.com", "X-Functions-Key", "cors-key-7f1d")
	if r.status != 200 || r.header.Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("app two from app one's origin: got %d %v, want 200 without CORS headers", r.status, r.header)
	}
	if got := strings.Join(rec.seen(), ","); got != "GET one/Http,GET two/Http" {
		t.Errorf("invocations: %s", got)
	}
}

// An anonymous function gets its own code query parameter (an OAuth
// redirect's); a function that needs a key never sees it.
func TestCodeParamOfAnonymousFunction(t *testing.T) {
	t.Setenv("POLYFN_CORS_TEST_KEY", "cors-key-7f1d")
	rec := &recorder{}
	base := serveConfig(t, `auth:
  function_keys: [{name: k, env: POLYFN_CORS_TEST_KEY}]
functions:
  - {name: open, handler: m.h, codedir: fn, auth: anonymous}
  - {name: keyed, handler: m.h, codedir: fn, auth: function}
`, rec)
	if r := corsDo(t, http.MethodGet, base+"/function/open?code=oauth-code-1"); r.status != 200 || r.body != "code=oauth-code-1" {
		t.Errorf("anonymous function: got %d, query %q; want code=oauth-code-1", r.status, r.body)
	}
	if r := corsDo(t, http.MethodGet, base+"/function/keyed?code=cors-key-7f1d"); r.status != 200 || r.body != "" {
		t.Errorf("keyed function: got %d, query %q; want 200 and no code", r.status, r.body)
	}
}

// What CORS adds to a request from an allowed origin, and a preflight.
func BenchmarkCORS(b *testing.B) {
	dir := b.TempDir()
	cfg, err := config.Parse(filepath.Join(dir, "polyfn.yaml"), []byte(`mqtt: {embedded: false}
http: {cors: {allow_origins: ["https://app.example.com", "https://*.example.org"]}}
functions: [{name: echo, handler: m.h, codedir: ., auth: anonymous}]
`))
	if err != nil {
		b.Fatal(err)
	}
	h := NewHandlerWith(echoInvoker{}, nil, 6<<20, slog.New(slog.NewTextHandler(io.Discard, nil)), HandlerOptions{Config: cfg})
	for _, c := range []struct{ name, method, want string }{{"actual", "POST", "200"}, {"preflight", "OPTIONS", "204"}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				r := httptest.NewRequest(c.method, "/function/echo", nil)
				r.Header.Set("Origin", "https://a.example.org")
				r.Header.Set("Access-Control-Request-Method", "POST")
				w := httptest.NewRecorder()
				h.ServeHTTP(w, r)
				if strconv.Itoa(w.Code) != c.want || w.Header().Get("Access-Control-Allow-Origin") == "" {
					b.Fatal(w.Code, w.Header())
				}
			}
		})
	}
}
