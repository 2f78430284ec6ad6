package azure

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// DefaultRoutePrefix is the route prefix of an app whose host.json does
// not set extensions.http.routePrefix (or that has no host.json).
const DefaultRoutePrefix = "api"

// RoutePrefix is the path prefix of DefaultRoutePrefix:
// PathPrefix(DefaultRoutePrefix).
const RoutePrefix = "/" + DefaultRoutePrefix + "/"

// PathPrefix returns the path under which the routes of prefix (a route
// prefix as ReadRoutePrefix returns it; slashes around it are ignored) are
// served: "/api/" for "api", "/v1/beta/" for "v1/beta", "/" for "". It is
// the pattern to register the router under in an http.ServeMux.
func PathPrefix(prefix string) string {
	if prefix = strings.Trim(prefix, "/"); prefix == "" {
		return "/"
	}
	return "/" + prefix + "/"
}

// Router maps request paths under a route prefix to HTTP-triggered
// functions.
//
// The route prefix (host.json's extensions.http.routePrefix, see
// ReadRoutePrefix; "api" by default) comes before every function's route,
// as in the official host, which maps "<prefix>/<route>": with "api",
// route "products/{id}" serves /api/products/42; with "", it serves
// /products/42. The prefix is made of literal segments, matched without
// regard to case (like literal segments of a route) after percent-decoding.
//
// Route templates follow ASP.NET Core's syntax, which the official host
// uses: literal segments (matched without regard to case), "{name}",
// optional "{name?}", defaults "{name=value}", constraints "{name:int}",
// "{name:int:min(1)}", and a catch-all "{*rest}" (or "{**rest}") as the
// last segment. Known constraints: int, long, bool, guid, alpha, decimal,
// double, float, min(n), max(n), range(a,b), minlength(n), maxlength(n),
// length(n), length(a,b), regex(pattern) (case-insensitive, unanchored,
// as in ASP.NET); any other constraint (datetime, ...) accepts every
// value. Segments that mix literal text and parameters ("{a}.{b}") are not
// supported. Parameter values are percent-decoded; a catch-all's value is
// the rest of the path, its segments decoded and joined with "/", and is
// absent when the rest is empty.
//
// Precedence: routes are tried in the order of ASP.NET's inbound route
// precedence, segment by segment: a literal segment wins over a
// constrained parameter, which wins over a plain parameter, which wins over
// a catch-all; when all segments tie, the route with fewer segments wins,
// then the template (case-insensitive), then the function name decide. So
// "products/new" wins over "products/{id}", and "products/{id:int}" over
// "products/{name}". The first route whose template matches and whose
// methods allow the request's method serves it. (The official host tries
// routes in the order the functions were loaded; polyfn's order does not
// depend on load order.)
type Router struct {
	prefix []string // the route prefix's segments
	routes []*route
}

type route struct {
	fn       *Function
	template string
	segs     []segment
	prec     string
}

type segment struct {
	literal     string
	param       string
	optional    bool
	catchAll    bool
	def         *string
	constraints []constraint
}

type constraint struct {
	spec  string
	check func(string) bool
}

// NewRouter builds a router from the functions that have an HTTP trigger;
// the others are ignored. prefix is the app's route prefix (see
// ReadRoutePrefix; DefaultRoutePrefix unless host.json sets another; ""
// for none); slashes around it are ignored.
//
// A function whose route template is invalid is left out and reported in
// the returned error (one line per function); the router still serves the
// others, so the error is never fatal by itself. An invalid prefix (see
// ReadRoutePrefix, which never returns one) is reported too, and then the
// router serves no route.
func NewRouter(fns []*Function, prefix string) (*Router, error) {
	r := &Router{}
	pre, err := parsePrefix(prefix)
	if err != nil {
		return r, fmt.Errorf("route prefix %q: %w", prefix, err)
	}
	r.prefix = pre
	var errs []error
	for _, fn := range fns {
		if fn == nil || fn.HTTP == nil {
			continue
		}
		segs, err := parseTemplate(fn.HTTP.Route)
		if err != nil {
			errs = append(errs, fmt.Errorf("function %q: route %q: %w", fn.Name, fn.HTTP.Route, err))
			continue
		}
		r.routes = append(r.routes, &route{fn: fn, template: fn.HTTP.Route, segs: segs, prec: precedence(segs)})
	}
	slices.SortStableFunc(r.routes, func(a, b *route) int {
		if c := strings.Compare(a.prec, b.prec); c != 0 {
			return c
		}
		if c := strings.Compare(strings.ToLower(a.template), strings.ToLower(b.template)); c != 0 {
			return c
		}
		return strings.Compare(a.fn.Name, b.fn.Name)
	})
	return r, errors.Join(errs...)
}

// Prefix returns the router's route prefix without slashes around it
// ("api", "v1", "" for none); PathPrefix(r.Prefix()) is the path it serves.
func (r *Router) Prefix() string { return strings.Join(r.prefix, "/") }

// Match finds the function serving method and path (the request's path,
// escaped as in r.URL.EscapedPath(); only paths under the route prefix,
// see PathPrefix, can match). It returns the function, its route
// parameters and http.StatusOK; or nil and http.StatusMethodNotAllowed
// when a route matches the path but none allows the method; or nil and
// http.StatusNotFound.
func (r *Router) Match(method, path string) (fn *Function, params map[string]string, status int) {
	segs, ok := r.cutPrefix(path)
	if !ok {
		return nil, nil, http.StatusNotFound
	}
	method = strings.ToUpper(method)
	pathMatched := false
	for _, rt := range r.routes {
		p, ok := rt.match(segs)
		if !ok {
			continue
		}
		if m := rt.fn.HTTP.Methods; len(m) == 0 || slices.Contains(m, method) {
			return rt.fn, p, http.StatusOK
		}
		pathMatched = true
	}
	if pathMatched {
		return nil, nil, http.StatusMethodNotAllowed
	}
	return nil, nil, http.StatusNotFound
}

// Allowed returns the methods the routes matching path accept, for an
// Allow header with a 405; nil when some route accepts any method.
func (r *Router) Allowed(path string) []string {
	segs, ok := r.cutPrefix(path)
	if !ok {
		return nil
	}
	var out []string
	for _, rt := range r.routes {
		if _, ok := rt.match(segs); !ok {
			continue
		}
		if len(rt.fn.HTTP.Methods) == 0 {
			return nil
		}
		for _, m := range rt.fn.HTTP.Methods {
			if !slices.Contains(out, m) {
				out = append(out, m)
			}
		}
	}
	slices.Sort(out)
	return out
}

// cutPrefix splits path (which must start with "/") into decoded segments
// and strips the route prefix's segments (any case) from the front: with
// prefix "api", "/api/a/b" gives [a b], and "/api" and "/api/" give none.
func (r *Router) cutPrefix(path string) ([]string, bool) {
	if !strings.HasPrefix(path, "/") {
		return nil, false
	}
	segs := splitPath(path[1:])
	if len(segs) < len(r.prefix) {
		return nil, false
	}
	for i, p := range r.prefix {
		if !strings.EqualFold(segs[i], p) {
			return nil, false
		}
	}
	return segs[len(r.prefix):], true
}

// parsePrefix parses a route prefix into its literal segments; slashes
// around it are ignored and "" has none. Route parameters (any brace),
// empty segments, '?', '#', '%', spaces and control characters are refused:
// the prefix must also make a plain path (PathPrefix) for an http.ServeMux,
// the path that requests use (a '%' would have to come as "%25").
func parsePrefix(prefix string) ([]string, error) {
	prefix = strings.Trim(prefix, "/")
	if prefix == "" {
		return nil, nil
	}
	if i := strings.IndexFunc(prefix, func(r rune) bool {
		return strings.ContainsRune("{}?#%", r) || unicode.IsSpace(r) || unicode.IsControl(r)
	}); i >= 0 {
		c, _ := utf8.DecodeRuneInString(prefix[i:])
		if c == '{' || c == '}' {
			return nil, errors.New("route parameters are not supported in a route prefix")
		}
		return nil, fmt.Errorf("character %q is not allowed in a route prefix", c)
	}
	segs := strings.Split(prefix, "/")
	if slices.Contains(segs, "") {
		return nil, errors.New("empty segment")
	}
	return segs, nil
}

// splitPath splits a path (without its leading slash) into decoded
// segments; one trailing slash is ignored. A byte that does not decode as
// UTF-8 becomes U+FFFD, as ASP.NET decodes it: route parameters go to the
// worker as protobuf strings, which must be valid UTF-8.
func splitPath(rest string) []string {
	rest = strings.TrimSuffix(rest, "/")
	if rest == "" {
		return nil
	}
	parts := strings.Split(rest, "/")
	for i, p := range parts {
		if d, err := url.PathUnescape(p); err == nil {
			parts[i] = toValidUTF8(d)
		}
	}
	return parts
}

func (rt *route) match(segs []string) (map[string]string, bool) {
	params := map[string]string{}
	for i, s := range rt.segs {
		if s.catchAll {
			if i < len(segs) {
				v := strings.Join(segs[i:], "/")
				if !s.accepts(v) {
					return nil, false
				}
				params[s.param] = v
			} else if s.def != nil {
				params[s.param] = *s.def
			}
			return params, true
		}
		if i >= len(segs) {
			switch {
			case s.def != nil:
				params[s.param] = *s.def
			case s.optional:
			default:
				return nil, false
			}
			continue
		}
		v := segs[i]
		if s.param == "" {
			if !strings.EqualFold(v, s.literal) {
				return nil, false
			}
			continue
		}
		if v == "" || !s.accepts(v) {
			return nil, false
		}
		params[s.param] = v
	}
	if len(segs) > len(rt.segs) {
		return nil, false
	}
	return params, true
}

func (s segment) accepts(v string) bool {
	for _, c := range s.constraints {
		if !c.check(v) {
			return false
		}
	}
	return true
}

// precedence is one digit per segment (ASP.NET's inbound precedence):
// literal 1, constrained parameter 3, parameter 4, catch-all 5. Smaller
// sorts first.
func precedence(segs []segment) string {
	var b strings.Builder
	for _, s := range segs {
		switch {
		case s.param == "":
			b.WriteByte('1')
		case s.catchAll:
			b.WriteByte('5')
		case len(s.constraints) > 0:
			b.WriteByte('3')
		default:
			b.WriteByte('4')
		}
	}
	return b.String()
}

// parseTemplate parses a route template (without the route prefix).
func parseTemplate(t string) ([]segment, error) {
	t = strings.Trim(t, "/")
	if t == "" {
		return nil, nil
	}
	parts, err := splitTemplate(t)
	if err != nil {
		return nil, err
	}
	var segs []segment
	names := map[string]bool{}
	for i, p := range parts {
		if p == "" {
			return nil, errors.New("empty segment")
		}
		var s segment
		if strings.HasPrefix(p, "{") && strings.HasSuffix(p, "}") && !strings.HasPrefix(p, "{{") && closingBrace(p) == len(p)-1 {
			s, err = parseParam(p[1 : len(p)-1])
			if err != nil {
				return nil, fmt.Errorf("segment %q: %w", p, err)
			}
			key := strings.ToLower(s.param)
			if names[key] {
				return nil, fmt.Errorf("parameter %q appears more than once", s.param)
			}
			names[key] = true
		} else {
			lit := strings.ReplaceAll(strings.ReplaceAll(p, "{{", "\x00"), "}}", "\x01")
			if strings.ContainsAny(lit, "{}") {
				return nil, fmt.Errorf("segment %q: segments mixing text and parameters are not supported", p)
			}
			s.literal = strings.ReplaceAll(strings.ReplaceAll(lit, "\x00", "{"), "\x01", "}")
		}
		if s.catchAll && i != len(parts)-1 {
			return nil, fmt.Errorf("catch-all parameter %q must be in the last segment", s.param)
		}
		segs = append(segs, s)
	}
	// After an optional parameter, every segment must be optional too.
	for i, s := range segs {
		if !s.optional {
			continue
		}
		for _, n := range segs[i+1:] {
			if !n.optional && !n.catchAll && n.def == nil {
				return nil, fmt.Errorf("optional parameter %q must be followed by optional segments only", s.param)
			}
		}
	}
	return segs, nil
}

// splitTemplate splits a template on the slashes that are not inside a
// parameter's braces.
func splitTemplate(t string) ([]string, error) {
	var parts []string
	depth, start := 0, 0
	for i := 0; i < len(t); i++ {
		switch t[i] {
		case '{':
			if depth == 0 && i+1 < len(t) && t[i+1] == '{' {
				i++ // escaped "{{"
				continue
			}
			depth++
		case '}':
			if depth == 0 {
				if i+1 < len(t) && t[i+1] == '}' {
					i++ // escaped "}}"
					continue
				}
				return nil, errors.New("unbalanced '}'")
			}
			depth--
		case '/':
			if depth == 0 {
				parts = append(parts, t[start:i])
				start = i + 1
			}
		}
	}
	if depth != 0 {
		return nil, errors.New("unbalanced '{'")
	}
	return append(parts, t[start:]), nil
}

// closingBrace returns the index of the '}' that closes the '{' at p[0].
func closingBrace(p string) int {
	depth := 0
	for i := 0; i < len(p); i++ {
		switch p[i] {
		case '{':
			depth++
		case '}':
			depth--
			if depth == 0 {
				return i
			}
		}
	}
	return -1
}

// parseParam parses the inside of "{...}".
func parseParam(in string) (segment, error) {
	var s segment
	switch {
	case strings.HasPrefix(in, "**"):
		s.catchAll, in = true, in[2:]
	case strings.HasPrefix(in, "*"):
		s.catchAll, in = true, in[1:]
	}
	if i := indexOutsideParens(in, '='); i >= 0 {
		d := in[i+1:]
		s.def, in = &d, in[:i]
	} else if strings.HasSuffix(in, "?") {
		s.optional, in = true, in[:len(in)-1]
	}
	parts := splitOutsideParens(in, ':')
	s.param = parts[0]
	if s.param == "" || strings.ContainsAny(s.param, "{}/*?=:") {
		return s, fmt.Errorf("invalid parameter name %q", s.param)
	}
	if s.optional && s.catchAll {
		return s, errors.New("a catch-all parameter cannot be marked optional")
	}
	for _, spec := range parts[1:] {
		c, err := makeConstraint(spec)
		if err != nil {
			return s, err
		}
		if c.check != nil {
			s.constraints = append(s.constraints, c)
		}
	}
	return s, nil
}

func indexOutsideParens(s string, ch byte) int {
	depth := 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '(':
			depth++
		case ')':
			if depth > 0 {
				depth--
			}
		case ch:
			if depth == 0 {
				return i
			}
		}
	}
	return -1
}

func splitOutsideParens(s string, sep byte) []string {
	var out []string
	for {
		i := indexOutsideParens(s, sep)
		if i < 0 {
			return append(out, s)
		}
		out = append(out, s[:i])
		s = s[i+1:]
	}
}

// makeConstraint resolves one inline constraint. An unknown constraint
// gets a nil check (it accepts everything).
func makeConstraint(spec string) (constraint, error) {
	name, arg := spec, ""
	if i := strings.IndexByte(spec, '('); i >= 0 {
		if !strings.HasSuffix(spec, ")") {
			return constraint{}, fmt.Errorf("constraint %q: missing ')'", spec)
		}
		name, arg = spec[:i], spec[i+1:len(spec)-1]
	}
	c := constraint{spec: spec}
	ints := func(n int) ([]int64, error) {
		fields := strings.Split(arg, ",")
		if len(fields) != n {
			return nil, fmt.Errorf("constraint %q: want %d argument(s)", spec, n)
		}
		out := make([]int64, n)
		for i, f := range fields {
			v, err := strconv.ParseInt(strings.TrimSpace(f), 10, 64)
			if err != nil {
				return nil, fmt.Errorf("constraint %q: %q is not an integer", spec, f)
			}
			out[i] = v
		}
		return out, nil
	}
	switch strings.ToLower(name) {
	case "int":
		c.check = func(v string) bool { _, err := strconv.ParseInt(strings.TrimSpace(v), 10, 32); return err == nil }
	case "long":
		c.check = func(v string) bool { _, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64); return err == nil }
	case "bool":
		c.check = func(v string) bool {
			v = strings.TrimSpace(v)
			return strings.EqualFold(v, "true") || strings.EqualFold(v, "false")
		}
	case "guid":
		c.check = isGUID
	case "alpha":
		c.check = func(v string) bool {
			for i := 0; i < len(v); i++ {
				if b := v[i] | 0x20; b < 'a' || b > 'z' {
					return false
				}
			}
			return true
		}
	case "decimal", "double", "float":
		c.check = func(v string) bool { _, err := strconv.ParseFloat(strings.TrimSpace(v), 64); return err == nil }
	case "min", "max":
		a, err := ints(1)
		if err != nil {
			return c, err
		}
		isMin := strings.EqualFold(name, "min")
		c.check = func(v string) bool {
			n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err != nil {
				return false
			}
			if isMin {
				return n >= a[0]
			}
			return n <= a[0]
		}
	case "range":
		a, err := ints(2)
		if err != nil {
			return c, err
		}
		c.check = func(v string) bool {
			n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			return err == nil && n >= a[0] && n <= a[1]
		}
	case "minlength", "maxlength":
		a, err := ints(1)
		if err != nil {
			return c, err
		}
		isMin := strings.EqualFold(name, "minlength")
		c.check = func(v string) bool {
			n := int64(utf8.RuneCountInString(v))
			if isMin {
				return n >= a[0]
			}
			return n <= a[0]
		}
	case "length":
		n := 1
		if strings.Contains(arg, ",") {
			n = 2
		}
		a, err := ints(n)
		if err != nil {
			return c, err
		}
		lo, hi := a[0], a[0]
		if n == 2 {
			hi = a[1]
		}
		c.check = func(v string) bool {
			l := int64(utf8.RuneCountInString(v))
			return l >= lo && l <= hi
		}
	case "regex":
		re, err := regexp.Compile("(?i)" + arg)
		if err != nil {
			return c, fmt.Errorf("constraint %q: %v", spec, err)
		}
		c.check = re.MatchString
	}
	return c, nil
}

// isGUID accepts the forms .NET's Guid.TryParse does for a route: 32 hex
// digits, optionally hyphenated 8-4-4-4-12, optionally in braces or
// parentheses.
func isGUID(v string) bool {
	v = strings.TrimSpace(v)
	if len(v) == 38 && (v[0] == '{' && v[37] == '}' || v[0] == '(' && v[37] == ')') {
		v = v[1:37]
	}
	hex := func(s string) bool {
		for i := 0; i < len(s); i++ {
			c := s[i] | 0x20
			if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
				return false
			}
		}
		return true
	}
	switch len(v) {
	case 32:
		return hex(v)
	case 36:
		return v[8] == '-' && v[13] == '-' && v[18] == '-' && v[23] == '-' &&
			hex(v[0:8]) && hex(v[9:13]) && hex(v[14:18]) && hex(v[19:23]) && hex(v[24:36])
	}
	return false
}
