package config

import (
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
)

// CORS is a cross-origin resource sharing policy of the HTTP trigger: which
// web pages (origins) a browser lets read the answers of polyfn's
// functions. http.cors is the host-wide policy; a function's own cors (an
// Azure Functions app's included) replaces it whole for that function. A
// policy without origins is off: the host adds no CORS header and leaves
// OPTIONS requests to the function.
type CORS struct {
	// AllowOrigins are the origins allowed: exact origins
	// ("https://app.example.com", port included unless it is the scheme's
	// default), patterns whose leftmost host label is '*'
	// ("https://*.example.com": any subdomain, at any depth, not the
	// domain itself), or "*" (any origin; not with AllowCredentials).
	AllowOrigins []string `yaml:"allow_origins"`
	// AllowMethods are the methods a preflight may ask for; "*" allows
	// any. Empty means DefaultCORSMethods.
	AllowMethods []string `yaml:"allow_methods"`
	// AllowHeaders are the request headers a preflight may ask for, case
	// ignored; "*" allows any. Empty means DefaultCORSHeaders.
	AllowHeaders []string `yaml:"allow_headers"`
	// ExposeHeaders are the response headers the page may read beyond the
	// CORS-safelisted ones.
	ExposeHeaders []string `yaml:"expose_headers"`
	// AllowCredentials lets the page send cookies and HTTP authentication
	// and read the answer (Access-Control-Allow-Credentials: true).
	AllowCredentials bool `yaml:"allow_credentials"`
	// MaxAge is how long a browser may cache a preflight's answer. Zero
	// means DefaultCORSMaxAge.
	MaxAge Duration `yaml:"max_age"`
}

// Enabled reports whether the policy allows any origin at all.
func (c *CORS) Enabled() bool { return c != nil && len(c.AllowOrigins) > 0 }

// CORSFor is the policy of the function f (an Azure Functions app's
// entry included): its own cors, else http.cors. Nil: CORS is off.
func (c *Config) CORSFor(f *Function) *CORS {
	if f != nil && f.CORS != nil {
		return f.CORS
	}
	return c.HTTP.CORS
}

// OriginPattern is an allowed origin, parsed: Any, or a scheme, a port and
// a host that, with Wildcard, is the domain under which any subdomain
// matches.
type OriginPattern struct {
	Any      bool
	Wildcard bool
	Scheme   string
	Host     string
	Port     string
}

// ParseOrigin parses an origin of allow_origins: "*", an origin
// (scheme://host[:port]) or a pattern (scheme://*.domain[:port]). The
// scheme and host are lower-cased and a scheme's default port dropped, as
// browsers send them in Origin.
func ParseOrigin(s string) (OriginPattern, error) {
	if s == "*" {
		return OriginPattern{Any: true}, nil
	}
	wild := false
	text := s
	if i := strings.Index(s, "://*."); i > 0 {
		wild = true
		text = s[:i+3] + s[i+5:]
	}
	u, err := url.Parse(text)
	switch {
	case err != nil || u.Scheme == "" || u.Opaque != "" || u.Host == "":
		return OriginPattern{}, fmt.Errorf("%q is not an origin: want scheme://host[:port], such as https://app.example.com, a pattern such as https://*.example.com, or *", s)
	case u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || strings.HasSuffix(text, "?") || strings.HasSuffix(text, "#"):
		return OriginPattern{}, fmt.Errorf("%q is not an origin: an origin is scheme://host[:port], with no user, path, query or fragment", s)
	case strings.Contains(u.Hostname(), "*"):
		return OriginPattern{}, fmt.Errorf("%q: '*' may only stand for the leftmost labels of the host, as in https://*.example.com", s)
	}
	p := OriginPattern{Wildcard: wild, Scheme: strings.ToLower(u.Scheme), Host: strings.ToLower(u.Hostname()), Port: u.Port()}
	if p.Port != "" {
		if _, err := net.LookupPort("tcp", p.Port); err != nil || strings.Trim(p.Port, "0123456789") != "" {
			return OriginPattern{}, fmt.Errorf("%q: port %q is not a number from 0 to 65535", s, p.Port)
		}
	}
	if wild && (net.ParseIP(p.Host) != nil || !strings.Contains(p.Host, ".") && p.Host != "localhost") {
		return OriginPattern{}, fmt.Errorf("%q: a pattern needs a domain after *., such as https://*.example.com", s)
	}
	if p.Port == defaultPort(p.Scheme) {
		p.Port = ""
	}
	return p, nil
}

func defaultPort(scheme string) string {
	switch scheme {
	case "http", "ws":
		return "80"
	case "https", "wss":
		return "443"
	}
	return ""
}

// String is the pattern as ParseOrigin reads it, normalised.
func (p OriginPattern) String() string {
	if p.Any {
		return "*"
	}
	host := p.Host
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	if p.Wildcard {
		host = "*." + host
	}
	if p.Port != "" {
		host += ":" + p.Port
	}
	return p.Scheme + "://" + host
}

// Match reports whether the origin o (as parsed by ParseOrigin) is allowed
// by p.
func (p OriginPattern) Match(o OriginPattern) bool {
	switch {
	case p.Any:
		return true
	case o.Any || o.Wildcard || o.Scheme != p.Scheme || o.Port != p.Port:
		return false
	case p.Wildcard:
		return strings.HasSuffix(o.Host, "."+p.Host) && len(o.Host) > len(p.Host)+1
	}
	return o.Host == p.Host
}

// validateCORS checks and normalises the policy at key path p and applies
// its defaults.
func validateCORS(d *decoder, p string, c *CORS) {
	if c == nil {
		return
	}
	for i, o := range c.AllowOrigins {
		key := fmt.Sprintf("%s.allow_origins[%d]", p, i)
		op, err := ParseOrigin(strings.TrimSpace(o))
		if err != nil {
			d.errorf(d.at(key), key, "%v", err)
			continue
		}
		if op.Any && c.AllowCredentials {
			d.errorf(d.at(key), key, "\"*\" with allow_credentials: true would let any web page act with its visitors' credentials; list the origins instead")
		}
		c.AllowOrigins[i] = op.String()
	}
	for i, m := range c.AllowMethods {
		key := fmt.Sprintf("%s.allow_methods[%d]", p, i)
		m = strings.ToUpper(strings.TrimSpace(m))
		if m != "*" && !validToken(m) {
			d.errorf(d.at(key), key, "%q is not an HTTP method", c.AllowMethods[i])
		}
		c.AllowMethods[i] = m
	}
	for _, list := range []struct {
		key string
		v   []string
	}{{"allow_headers", c.AllowHeaders}, {"expose_headers", c.ExposeHeaders}} {
		for i, h := range list.v {
			key := fmt.Sprintf("%s.%s[%d]", p, list.key, i)
			h = strings.TrimSpace(h)
			if !(h == "*" && list.key == "allow_headers") && !validToken(h) {
				d.errorf(d.at(key), key, "%q is not a header name", list.v[i])
			}
			list.v[i] = http.CanonicalHeaderKey(h)
		}
	}
	if d.explicitZero(p + ".max_age") {
		d.errorf(d.at(p+".max_age"), p+".max_age", "must be above zero (leave it out for the default)")
	}
	if len(c.AllowMethods) == 0 {
		c.AllowMethods = append([]string(nil), DefaultCORSMethods...)
	}
	if len(c.AllowHeaders) == 0 {
		c.AllowHeaders = append([]string(nil), DefaultCORSHeaders...)
	}
	if c.MaxAge == 0 {
		c.MaxAge = Duration(DefaultCORSMaxAge)
	}
}

// validToken reports whether s is an HTTP token (RFC 9110), as method and
// header names are.
func validToken(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if r > 0x7e || r <= ' ' || strings.ContainsRune(`"(),/:;<=>?@[\]{}`, r) {
			return false
		}
	}
	return true
}

// validateCORSAll checks http.cors and every function's cors.
func validateCORSAll(c *Config, d *decoder) {
	validateCORS(d, "http.cors", c.HTTP.CORS)
	for i := range c.Functions {
		validateCORS(d, fmt.Sprintf("functions[%d].cors", i), c.Functions[i].CORS)
	}
}
