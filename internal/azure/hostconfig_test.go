package azure

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func readHostConfig(t *testing.T, text string) (*HostConfig, error) {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, HostJSON), []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return ReadHostConfig(dir)
}

// The template host.json of Core Tools, plus the settings polyfn honours
// and some it does not: each ignored key is listed once, the outermost
// key of what polyfn does not read.
func TestReadHostConfig(t *testing.T) {
	hc, err := readHostConfig(t, `{
	  "version": "2.0",
	  "functionTimeout": "00:00:05",
	  // comments are allowed
	  "logging": {
	    "logLevel": {"default": "Warning", "Function.hello.User": "debug", "Function": "Error", "Host.Results": "Error", "Worker": "Debug", "Func*": "Debug"},
	    "applicationInsights": {"samplingSettings": {"isEnabled": true, "excludedTypes": "Request"}}
	  },
	  "extensionBundle": {"id": "Microsoft.Azure.Functions.ExtensionBundle", "version": "[4.*, 5.0.0)"},
	  "extensions": {
	    "http": {"routePrefix": "v1", "maxConcurrentRequests": 2, "maxOutstandingRequests": 5,
	             "customHeaders": {"X-Content-Type-Options": "nosniff"}, "dynamicThrottlesEnabled": true, "hsts": {"isEnabled": true}},
	    "queues": {"batchSize": 16}
	  },
	  "concurrency": {"dynamicConcurrencyEnabled": true, "snapshotPersistenceEnabled": true},
	  "Concurrency": {"maximumFunctionConcurrency": 10},
	}`)
	if err != nil {
		t.Fatal(err)
	}
	if hc.RoutePrefix != "v1" || hc.FunctionTimeout != 5*time.Second || hc.MaxConcurrentRequests != 2 || hc.MaxOutstandingRequests != 5 {
		t.Errorf("got %+v", hc)
	}
	if hc.CustomHeaders["X-Content-Type-Options"] != "nosniff" {
		t.Errorf("custom headers: %v", hc.CustomHeaders)
	}
	want := []string{"logging.applicationInsights", "extensionBundle", "extensions.http.dynamicThrottlesEnabled", "extensions.http.hsts", "extensions.queues", "concurrency",
		"logging.logLevel.Host.Results"}
	if !slices.Equal(hc.Ignored, want) {
		t.Errorf("ignored keys:\n got %q\nwant %q", hc.Ignored, want)
	}
	for _, c := range []struct {
		category string
		want     LogLevel
	}{
		{"Function.hello.User", LevelDebug},
		{"Function.hello", LevelError},
		{"Function.other.User", LevelError},
		{"Worker.LanguageWorkerChannel.node", LevelDebug},
		{"Host.Results", LevelError},
	} {
		if got := hc.LogLevels.Min(c.category); got != c.want {
			t.Errorf("level of %s: %s, want %s", c.category, got, c.want)
		}
	}
}

func TestReadHostConfigDefaults(t *testing.T) {
	hc, err := ReadHostConfig(t.TempDir()) // no host.json
	if err != nil || hc.RoutePrefix != "api" || hc.FunctionTimeout != 0 || hc.Ignored != nil || hc.LogLevels.Set() {
		t.Fatalf("got %+v, %v", hc, err)
	}
	if !hc.LogLevels.Enabled("Function.f.User", LevelInformation) || hc.LogLevels.Enabled("Function.f.User", LevelDebug) {
		t.Error("without logLevel, Information and above pass and Debug does not (the official host's default)")
	}
}

// A value polyfn cannot use is named with the file and key; the others
// still apply.
func TestReadHostConfigErrors(t *testing.T) {
	hc, err := readHostConfig(t, `{"functionTimeout": "5 minutes", "logging": {"logLevel": {"default": "Loud", "Function": "Debug"}},
	  "extensions": {"http": {"maxConcurrentRequests": 0, "customHeaders": {"Bad Name": "x"}, "routePrefix": "ok"}}}`)
	if err == nil {
		t.Fatal("no error")
	}
	for _, key := range []string{"host.json: functionTimeout", "logging.logLevel.default", "extensions.http.maxConcurrentRequests", "extensions.http.customHeaders.Bad Name"} {
		if !strings.Contains(err.Error(), key) {
			t.Errorf("error does not name %s: %v", key, err)
		}
	}
	if hc.RoutePrefix != "ok" || hc.LogLevels.Min("Function.x") != LevelDebug || hc.FunctionTimeout != 0 {
		t.Errorf("the usable settings were not kept: %+v", hc)
	}
}

func TestParseFunctionTimeout(t *testing.T) {
	for in, want := range map[string]time.Duration{
		`"00:05:00"`: 5 * time.Minute, `"01:00:00"`: time.Hour, `"1.02:03:04"`: 26*time.Hour + 3*time.Minute + 4*time.Second,
		`"00:00:01.5"`: 1500 * time.Millisecond, `"2"`: 48 * time.Hour, `"-1"`: 0, `null`: 0, `"00:10"`: 10 * time.Minute,
	} {
		got, err := parseFunctionTimeout(json.RawMessage(in))
		if err != nil || got != want {
			t.Errorf("%s: got %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{`"00:00:00"`, `"-00:05:00"`, `"24:00:00"`, `"00:60:00"`, `"abc"`, `300`, `"0"`} {
		if d, err := parseFunctionTimeout(json.RawMessage(in)); err == nil {
			t.Errorf("%s: accepted as %v", in, d)
		}
	}
}

// Categories are matched as .NET's logger filter does: the longest rule
// that is a prefix wins, '*' is a wildcard, "default" is the fallback,
// None turns a category off.
func TestLogLevels(t *testing.T) {
	var l LogLevels
	l.set("default", LevelWarning)
	l.set("Function", LevelInformation)
	l.set("function.Quiet", LevelNone)
	l.set("Worker.*.python", LevelTrace)
	l.set("FUNCTION", LevelError) // replaces "Function"
	for _, c := range []struct {
		cat  string
		lvl  LogLevel
		want bool
	}{
		{"Function.a.User", LevelWarning, false},
		{"Function.a.User", LevelError, true},
		{"Function.Quiet.User", LevelCritical, false},
		{"Worker.LanguageWorkerChannel.python", LevelTrace, true},
		{"Worker.LanguageWorkerChannel.node", LevelInformation, false},
		{"Worker.LanguageWorkerChannel.node", LevelWarning, true},
	} {
		if got := l.Enabled(c.cat, c.lvl); got != c.want {
			t.Errorf("%s at %s: %v, want %v", c.cat, c.lvl, got, c.want)
		}
	}
}
