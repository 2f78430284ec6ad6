package azure

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// HostConfig is what polyfn honours of an app's host.json. ReadHostConfig
// reads it.
type HostConfig struct {
	// RoutePrefix: extensions.http.routePrefix (see ReadRoutePrefix).
	RoutePrefix string
	// FunctionTimeout: functionTimeout; zero when host.json sets none or
	// "-1" (unbounded). An app's invocations are bounded by the smaller of
	// it and the function entry's timeout.
	FunctionTimeout time.Duration
	// LogLevels: logging.logLevel, the minimum level per log category.
	LogLevels LogLevels
	// MaxConcurrentRequests: extensions.http.maxConcurrentRequests, the
	// most HTTP invocations of the app that run at once (the others wait,
	// within their timeout); zero when unbounded (-1 or unset).
	MaxConcurrentRequests int
	// MaxOutstandingRequests: extensions.http.maxOutstandingRequests, the
	// most HTTP invocations of the app running or waiting; past it the
	// host answers 429. Zero when unbounded (-1 or unset).
	MaxOutstandingRequests int
	// CustomHeaders: extensions.http.customHeaders, added to every response
	// of the app's functions that does not set them.
	CustomHeaders map[string]string
	// Ignored lists, once each and in document order, the keys polyfn does
	// not honour ("extensionBundle", "logging.applicationInsights",
	// "concurrency", ...): the outermost key of each ignored setting.
	Ignored []string
}

// honoured is the tree of host.json keys polyfn reads (lower-case): a key
// whose value is nil is honoured whole, one whose value is a map has only
// those keys honoured. Every other key is listed in HostConfig.Ignored.
var honoured = map[string]any{
	"version":         nil,
	"functiontimeout": nil,
	"logging":         map[string]any{"loglevel": nil},
	"extensions": map[string]any{"http": map[string]any{
		"routeprefix": nil, "maxconcurrentrequests": nil, "maxoutstandingrequests": nil, "customheaders": nil,
	}},
}

// ReadHostConfig reads the app's <appDir>/host.json as the official host
// reads it (see ReadRoutePrefix for the syntax): a missing file gives the
// defaults. The returned config is always usable: a setting whose value
// polyfn cannot use keeps its default, and the error names the file and
// every such key.
func ReadHostConfig(appDir string) (*HostConfig, error) {
	hc := &HostConfig{RoutePrefix: DefaultRoutePrefix}
	path := filepath.Join(appDir, HostJSON)
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return hc, nil
	}
	if err != nil {
		return hc, fmt.Errorf("%s: %w", path, err)
	}
	doc, err := parseHostJSON(data)
	if err != nil {
		return hc, fmt.Errorf("%s: %w", path, err)
	}
	var errs []error
	if p, err := ReadRoutePrefix(appDir); err != nil {
		errs = append(errs, err)
	} else {
		hc.RoutePrefix = p
	}
	bad := func(key string, err error) { errs = append(errs, fmt.Errorf("%s: %s: %w", path, key, err)) }
	if v := last(doc, "functionTimeout"); v != nil {
		if d, err := parseFunctionTimeout(v); err != nil {
			bad("functionTimeout", err)
		} else {
			hc.FunctionTimeout = d
		}
	}
	var logIgnored []string // categories of the host's own logs (Host.Results, ...)
	for _, obj := range lookupAll(doc, "logging", "logLevel") {
		for _, kv := range members(obj) {
			lvl, err := parseLogLevel(kv.value)
			if err != nil {
				bad("logging.logLevel."+kv.key, err)
				continue
			}
			hc.LogLevels.set(kv.key, lvl)
			if !appCategory(kv.key) {
				logIgnored = append(logIgnored, "logging.logLevel."+kv.key)
			}
		}
	}
	for _, k := range []struct {
		name string
		dst  *int
	}{{"maxConcurrentRequests", &hc.MaxConcurrentRequests}, {"maxOutstandingRequests", &hc.MaxOutstandingRequests}} {
		if v := last(doc, "extensions", "http", k.name); v != nil {
			n, err := parseRequestBound(v)
			if err != nil {
				bad("extensions.http."+k.name, err)
				continue
			}
			*k.dst = n
		}
	}
	for _, obj := range lookupAll(doc, "extensions", "http", "customHeaders") {
		for _, kv := range members(obj) {
			var s string
			if err := json.Unmarshal(kv.value, &s); err != nil {
				bad("extensions.http.customHeaders."+kv.key, errors.New("must be a string"))
				continue
			}
			if !validHeaderName(kv.key) || strings.ContainsAny(s, "\r\n\x00") {
				bad("extensions.http.customHeaders."+kv.key, errors.New("not a valid HTTP header"))
				continue
			}
			if hc.CustomHeaders == nil {
				hc.CustomHeaders = map[string]string{}
			}
			hc.CustomHeaders[kv.key] = s
		}
	}
	hc.Ignored = dedupe(append(ignoredKeys(doc, "", honoured), logIgnored...))
	return hc, errors.Join(errs...)
}

// appCategory reports whether a logging.logLevel category can match the
// categories polyfn logs an app's worker under (see FunctionCategory):
// "default", "Function...", "Worker..."; the host's own categories
// (Host.Results, Host.Aggregator, Microsoft...) cannot.
func appCategory(rule string) bool {
	r := strings.ToLower(rule)
	if r == "default" {
		return true
	}
	r, _, _ = strings.Cut(r, "*")
	for _, c := range []string{"function.", "worker.languageworkerchannel."} {
		if strings.HasPrefix(c, r) || strings.HasPrefix(r, c) {
			return true
		}
	}
	return false
}

// ignoredKeys lists the keys of the object doc (under prefix) that tree
// does not honour, in document order, each once (any case).
func ignoredKeys(doc json.RawMessage, prefix string, tree map[string]any) []string {
	var out []string
	for _, kv := range members(doc) {
		name := prefix + kv.key
		sub, ok := tree[strings.ToLower(kv.key)]
		switch {
		case !ok:
			out = append(out, name)
		case sub == nil:
		default:
			next, _ := sub.(map[string]any)
			out = append(out, ignoredKeys(kv.value, name+".", next)...)
		}
	}
	return dedupe(out)
}

// dedupe keeps the first of the keys that are the same without regard to
// case.
func dedupe(out []string) []string {
	seen := map[string]bool{}
	return slices.DeleteFunc(out, func(k string) bool {
		l := strings.ToLower(k)
		if seen[l] {
			return true
		}
		seen[l] = true
		return false
	})
}

type member struct {
	key   string
	value json.RawMessage
}

// members returns the properties of the JSON object obj in document
// order; none when obj is not an object.
func members(obj json.RawMessage) []member {
	dec := json.NewDecoder(bytes.NewReader(obj))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return nil
	}
	var out []member
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return out
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return out
		}
		k, _ := t.(string)
		out = append(out, member{key: k, value: v})
	}
	return out
}

// last returns the last value at path (the one that wins), or nil.
func last(doc json.RawMessage, path ...string) json.RawMessage {
	all := lookupAll(doc, path...)
	if len(all) == 0 {
		return nil
	}
	return bytes.TrimSpace(all[len(all)-1])
}

// functionTimeoutSpan is .NET's TimeSpan text as functionTimeout takes
// it: [-][d.]hh:mm[:ss[.fffffff]] (a whole number of days is parsed
// apart).
var functionTimeoutSpan = regexp.MustCompile(`^(-)?(?:(\d+)\.)?(\d{1,2}):(\d{1,2})(?::(\d{1,2})(?:\.(\d{1,7}))?)?$`)

// parseFunctionTimeout parses functionTimeout: a TimeSpan string
// ("00:05:00", "1.00:00:00"); "-1" or null for unbounded (zero).
func parseFunctionTimeout(v json.RawMessage) (time.Duration, error) {
	if string(v) == "null" {
		return 0, nil
	}
	var s string
	if err := json.Unmarshal(v, &s); err != nil {
		return 0, fmt.Errorf("must be a string such as \"00:05:00\", not %s", v)
	}
	s = strings.TrimSpace(s)
	if s == "-1" {
		return 0, nil
	}
	if n, err := strconv.ParseUint(s, 10, 32); err == nil {
		if n == 0 {
			return 0, fmt.Errorf("%q: must be positive, or \"-1\" for unbounded", s)
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	m := functionTimeoutSpan.FindStringSubmatch(s)
	if m == nil {
		return 0, fmt.Errorf("%q is not a time span such as \"00:05:00\" ([d.]hh:mm:ss)", s)
	}
	num := func(i int) int64 { n, _ := strconv.ParseInt(m[i], 10, 64); return n }
	h, mi, sec := num(3), num(4), num(5)
	if h > 23 || mi > 59 || sec > 59 {
		return 0, fmt.Errorf("%q: hours, minutes or seconds out of range", s)
	}
	days := num(2)
	if days > math.MaxInt64/int64(24*time.Hour)-1 {
		return 0, fmt.Errorf("%q is too long", s)
	}
	d := time.Duration(days)*24*time.Hour + time.Duration(h)*time.Hour + time.Duration(mi)*time.Minute + time.Duration(sec)*time.Second
	if m[6] != "" {
		frac, _ := strconv.ParseInt((m[6] + "000000000")[:9], 10, 64)
		d += time.Duration(frac)
	}
	if m[1] != "" || d <= 0 {
		return 0, fmt.Errorf("%q: must be positive, or \"-1\" for unbounded", s)
	}
	return d, nil
}

// parseRequestBound parses maxConcurrentRequests or
// maxOutstandingRequests: a positive integer, or -1 (or null) for
// unbounded (zero).
func parseRequestBound(v json.RawMessage) (int, error) {
	if string(v) == "null" {
		return 0, nil
	}
	var n int
	if err := json.Unmarshal(v, &n); err != nil {
		return 0, fmt.Errorf("must be an integer, not %s", v)
	}
	switch {
	case n == -1:
		return 0, nil
	case n < 1:
		return 0, fmt.Errorf("%d: must be at least 1, or -1 for unbounded", n)
	}
	return n, nil
}
