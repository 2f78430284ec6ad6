package config

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// A valid policy is normalised (origins as browsers send them, methods
// upper case, header names canonical) and gets its defaults; a function's
// cors replaces http.cors, and cors: {} turns it off.
func TestCORSPolicy(t *testing.T) {
	c, err := Load(writeConfig(t, `http:
  cors:
    allow_origins: ["HTTPS://App.Example.com:443", "https://*.example.org", "http://localhost:3000"]
    expose_headers: [x-request-id]
functions:
  - {name: a, handler: m.h, codedir: fn}
  - name: b
    handler: m.h
    codedir: fn
    cors: {allow_origins: ["*"], allow_methods: [get, "*"], allow_headers: ["*"], max_age: 1h}
  - {name: c, handler: m.h, codedir: fn, cors: {}}
`))
	if err != nil {
		t.Fatal(err)
	}
	h := c.HTTP.CORS
	if got := strings.Join(h.AllowOrigins, " "); got != "https://app.example.com https://*.example.org http://localhost:3000" {
		t.Errorf("origins normalised to %s", got)
	}
	if strings.Join(h.AllowMethods, ",") != strings.Join(DefaultCORSMethods, ",") || len(h.AllowHeaders) != len(DefaultCORSHeaders) ||
		h.MaxAge.D() != DefaultCORSMaxAge || h.ExposeHeaders[0] != "X-Request-Id" {
		t.Errorf("defaults: %+v", h)
	}
	if p := c.CORSFor(&c.Functions[0]); p != h {
		t.Errorf("function a: %+v, want http.cors", p)
	}
	if p := c.CORSFor(&c.Functions[1]); p.AllowOrigins[0] != "*" || p.AllowMethods[0] != "GET" || p.MaxAge.D() != time.Hour {
		t.Errorf("function b: %+v", p)
	}
	if p := c.CORSFor(&c.Functions[2]); p == nil || p.Enabled() {
		t.Errorf("function c: %+v, want a policy that is off", p)
	}
}

// Origins that are not origins, '*' with credentials and bad method or
// header names are errors at their line, column and key.
func TestCORSErrors(t *testing.T) {
	_, err := Load(writeConfig(t, `http:
  cors:
    allow_origins:
      - "*"
      - app.example.com
      - https://app.example.com/path
      - "https://a*.example.com"
      - "https://*.com"
      - "null"
    allow_credentials: true
    allow_methods: ["GET POST"]
    max_age: 0
functions:
  - name: f
    handler: m.h
    codedir: fn
    cors:
      allow_origins: ["https://ok.example.com:99999"]
      expose_headers: ["bad header"]
`))
	var es Errors
	if !errors.As(err, &es) {
		t.Fatalf("got %v, want config errors", err)
	}
	want := []string{
		`:4:9: http.cors.allow_origins[0]: "*" with allow_credentials: true`,
		`:5:9: http.cors.allow_origins[1]: "app.example.com" is not an origin`,
		`:6:9: http.cors.allow_origins[2]: "https://app.example.com/path" is not an origin`,
		`:7:9: http.cors.allow_origins[3]: "https://a*.example.com": '*' may only stand for the leftmost labels`,
		`:8:9: http.cors.allow_origins[4]: "https://*.com": a pattern needs a domain`,
		`:9:9: http.cors.allow_origins[5]: "null" is not an origin`,
		`:11:21: http.cors.allow_methods[0]: "GET POST" is not an HTTP method`,
		`:12:14: http.cors.max_age: must be above zero`,
		`:18:23: functions[0].cors.allow_origins[0]: "https://ok.example.com:99999": port "99999" is not a number`,
		`:19:24: functions[0].cors.expose_headers[0]: "bad header" is not a header name`,
	}
	if len(es) != len(want) {
		t.Errorf("got %d errors, want %d:\n%v", len(es), len(want), err)
	}
	for i, w := range want {
		if i < len(es) && !strings.Contains(es[i].Error(), w) {
			t.Errorf("error %d: %s\nwant it to contain %s", i, es[i], w)
		}
	}
}

// An origin matches a pattern by scheme, port and host: a wildcard
// matches subdomains at any depth but not the domain itself.
func TestOriginMatch(t *testing.T) {
	for _, c := range []struct {
		pattern, origin string
		want            bool
	}{
		{"https://app.example.com", "https://app.example.com", true},
		{"https://app.example.com", "https://APP.example.com:443", true},
		{"https://app.example.com", "http://app.example.com", false},
		{"https://app.example.com", "https://app.example.com:8443", false},
		{"https://app.example.com", "https://app.example.com.evil.net", false},
		{"https://*.example.com", "https://a.example.com", true},
		{"https://*.example.com", "https://a.b.example.com", true},
		{"https://*.example.com", "https://example.com", false},
		{"https://*.example.com", "https://badexample.com", false},
		{"https://*.example.com", "https://a.example.com:8443", false},
		{"https://*.example.com:8443", "https://a.example.com:8443", true},
		{"*", "http://anything.test:1", true},
	} {
		p, err := ParseOrigin(c.pattern)
		if err != nil {
			t.Fatal(err)
		}
		o, err := ParseOrigin(c.origin)
		if err != nil {
			t.Fatal(err)
		}
		if got := p.Match(o); got != c.want {
			t.Errorf("%s matches %s: %v, want %v", c.pattern, c.origin, got, c.want)
		}
	}
}
