package http

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/polyfn/polyfn/internal/config"
	"github.com/polyfn/polyfn/internal/invoke"
)

// CORS, answered by the host from the configuration's policies
// (config.CORS): http.cors host-wide, a function's own cors (an Azure
// Functions app's entry included) in its place. A preflight (OPTIONS with
// Origin and Access-Control-Request-Method) under a policy is answered
// here, 204 or 403, without a key and without invoking anything; any other
// request with an Origin gets the policy's headers when its origin is
// allowed, and none when it is not (the browser then keeps the answer from
// the page). Where no policy applies the host adds nothing and an OPTIONS
// request goes to the function as any other.

// corsPolicy is a config.CORS made ready for requests.
type corsPolicy struct {
	// key is where the policy is set (http.cors, functions[N].cors), for
	// error messages.
	key       string
	origins   []config.OriginPattern
	anyMethod bool
	methods   map[string]bool
	// allowMethods is the Access-Control-Allow-Methods of a preflight.
	allowMethods string
	anyHeader    bool
	headers      map[string]bool // lower case
	expose       string
	credentials  bool
	maxAge       string
}

func newCORSPolicy(key string, c *config.CORS) *corsPolicy {
	if !c.Enabled() {
		return nil
	}
	p := &corsPolicy{key: key, methods: map[string]bool{}, headers: map[string]bool{}, credentials: c.AllowCredentials,
		expose: strings.Join(c.ExposeHeaders, ", "), maxAge: strconv.Itoa(int(c.MaxAge.D().Seconds()))}
	for _, o := range c.AllowOrigins {
		if op, err := config.ParseOrigin(o); err == nil { // config.Parse checked them
			p.origins = append(p.origins, op)
		}
	}
	for _, m := range c.AllowMethods {
		p.anyMethod = p.anyMethod || m == "*"
		p.methods[m] = true
	}
	p.allowMethods = strings.Join(c.AllowMethods, ", ")
	for _, h := range c.AllowHeaders {
		p.anyHeader = p.anyHeader || h == "*"
		p.headers[strings.ToLower(h)] = true
	}
	return p
}

// allowsOrigin reports whether the Origin header value origin is allowed.
func (p *corsPolicy) allowsOrigin(origin string) bool {
	o, err := config.ParseOrigin(origin)
	if err != nil || o.Any || o.Wildcard {
		return false // "null", or not an origin at all
	}
	for _, a := range p.origins {
		if a.Match(o) {
			return true
		}
	}
	return false
}

// corsPolicies are a configuration's policies.
type corsPolicies struct {
	host *corsPolicy
	// own holds the policy of each function that sets cors (nil: off).
	own map[string]*corsPolicy
}

func newCORSPolicies(cfg *config.Config) *corsPolicies {
	ps := &corsPolicies{host: newCORSPolicy("http.cors", cfg.HTTP.CORS), own: map[string]*corsPolicy{}}
	for i, f := range cfg.Functions {
		if f.CORS != nil {
			ps.own[f.Name] = newCORSPolicy(fmt.Sprintf("functions[%d].cors", i), f.CORS)
		}
	}
	if ps.host == nil && len(ps.own) == 0 {
		return nil
	}
	return ps
}

// of is the policy of the function (or app) named name; nil when none
// applies.
func (ps *corsPolicies) of(name string) *corsPolicy {
	if ps == nil {
		return nil
	}
	if p, ok := ps.own[name]; ok {
		return p
	}
	return ps.host
}

// isPreflight reports whether r is a CORS preflight request.
func isPreflight(r *http.Request) bool {
	return r.Method == http.MethodOptions && r.Header.Get("Origin") != "" && r.Header.Get("Access-Control-Request-Method") != ""
}

// preflight answers the preflight r for what, under p: 204 with the
// policy's headers when its origin, method and headers are allowed, else
// 403 with a JSON error and no CORS header.
func (p *corsPolicy) preflight(w http.ResponseWriter, r *http.Request, what string) {
	h := w.Header()
	h.Add("Vary", "Origin, Access-Control-Request-Method, Access-Control-Request-Headers")
	origin := r.Header.Get("Origin")
	method := r.Header.Get("Access-Control-Request-Method")
	if !p.allowsOrigin(origin) {
		writeError(w, http.StatusForbidden, "CORSForbidden", fmt.Sprintf("origin %q is not allowed to call %s (%s.allow_origins)", origin, what, p.key))
		return
	}
	if !p.anyMethod && !p.methods[method] {
		writeError(w, http.StatusForbidden, "CORSForbidden", fmt.Sprintf("method %q is not allowed in cross-origin calls of %s (%s.allow_methods)", method, what, p.key))
		return
	}
	var asked []string
	for _, v := range r.Header.Values("Access-Control-Request-Headers") {
		for _, name := range strings.Split(v, ",") {
			if name = strings.ToLower(strings.TrimSpace(name)); name != "" {
				if !p.anyHeader && !p.headers[name] {
					writeError(w, http.StatusForbidden, "CORSForbidden", fmt.Sprintf("request header %q is not allowed in cross-origin calls of %s (%s.allow_headers)", name, what, p.key))
					return
				}
				asked = append(asked, name)
			}
		}
	}
	h.Set("Access-Control-Allow-Origin", origin)
	if p.anyMethod {
		h.Set("Access-Control-Allow-Methods", method)
	} else {
		h.Set("Access-Control-Allow-Methods", p.allowMethods)
	}
	if len(asked) > 0 {
		h.Set("Access-Control-Allow-Headers", strings.Join(asked, ", "))
	}
	if p.credentials {
		h.Set("Access-Control-Allow-Credentials", "true")
	}
	h.Set("Access-Control-Max-Age", p.maxAge)
	w.WriteHeader(http.StatusNoContent)
}

// actual adds to the response of r, an actual (not preflight) request,
// the headers of p: those that let the page read it when r's origin is
// allowed, and Vary: Origin in any case. A nil p adds nothing.
func (p *corsPolicy) actual(w http.ResponseWriter, r *http.Request) {
	if p == nil {
		return
	}
	h := w.Header()
	h.Add("Vary", "Origin")
	origin := r.Header.Get("Origin")
	if origin == "" || !p.allowsOrigin(origin) {
		return
	}
	h.Set("Access-Control-Allow-Origin", origin)
	if p.credentials {
		h.Set("Access-Control-Allow-Credentials", "true")
	}
	if p.expose != "" {
		h.Set("Access-Control-Expose-Headers", p.expose)
	}
}

// appPolicy is the policy of the app serving r's path when r's method is
// method (the one a preflight asks for): the app's own, else http.cors
// (also when no app function serves it).
func (h *Handler) appPolicy(ctx context.Context, r *http.Request, method string) *corsPolicy {
	if h.cors == nil {
		return nil
	}
	req := &invoke.Request{HTTPRequest: invoke.NewHTTPRequest(r, nil)}
	req.HTTPRequest.Method = method
	if err := h.apps.RouteApp(ctx, req); err != nil {
		return h.cors.host
	}
	return h.cors.of(req.App)
}

// isCORSHeader reports whether a response header is one the host's policy
// owns: a function's own is dropped where a policy applies.
func isCORSHeader(k string) bool {
	return len(k) > len("Access-Control-") && strings.EqualFold(k[:len("Access-Control-")], "Access-Control-")
}
