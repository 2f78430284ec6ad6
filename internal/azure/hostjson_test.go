package azure

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf16"
)

func TestReadRoutePrefix(t *testing.T) {
	utf16LE := func(s string) string {
		b := []byte{0xFF, 0xFE}
		for _, u := range utf16.Encode([]rune(s)) {
			b = append(b, byte(u), byte(u>>8))
		}
		return string(b)
	}
	tests := []struct {
		name     string
		hostJSON *string // nil: no host.json
		want     string
		wantErr  string // substring of the error, after the file's path
	}{
		{name: "absent", want: "api"},
		{name: "no extensions", hostJSON: ptr(`{"version": "2.0"}`), want: "api"},
		{name: "no http", hostJSON: ptr(`{"version": "2.0", "extensions": {"queues": {}}}`), want: "api"},
		{name: "api", hostJSON: ptr(`{"version": "2.0", "extensions": {"http": {"routePrefix": "api"}}}`), want: "api"},
		{name: "empty", hostJSON: ptr(`{"version": "2.0", "extensions": {"http": {"routePrefix": ""}}}`), want: ""},
		{name: "slash only", hostJSON: ptr(`{"extensions": {"http": {"routePrefix": "/"}}}`), want: ""},
		{name: "slashes trimmed", hostJSON: ptr(`{"extensions": {"http": {"routePrefix": "/v1/"}}}`), want: "v1"},
		{name: "segments", hostJSON: ptr(`{"extensions": {"http": {"routePrefix": "v1/Beta"}}}`), want: "v1/Beta"},
		{name: "null", hostJSON: ptr(`{"extensions": {"http": {"routePrefix": null}}}`), want: ""},
		{name: "keys any case", hostJSON: ptr(`{"Extensions": {"HTTP": {"ROUTEPREFIX": "x"}}}`), want: "x"},
		{name: "last wins", hostJSON: ptr(`{"extensions": {"http": {"routePrefix": "a", "routeprefix": "b"}}, "EXTENSIONS": {"http": {"routePrefix": "c"}}}`), want: "c"},
		{name: "later section without it", hostJSON: ptr(`{"extensions": {"http": {"routePrefix": "a"}}, "Extensions": {"http": {}}}`), want: "a"},
		{name: "object value ignored", hostJSON: ptr(`{"extensions": {"http": {"routePrefix": "a"}}, "Extensions": {"http": {"routePrefix": {}}}}`), want: "a"},
		{name: "escaped", hostJSON: ptr(`{"extensions": {"http": {"routePrefix": "\u0076\u0031"}}}`), want: "v1"},
		{name: "UTF-8 BOM", hostJSON: ptr("\ufeff" + `{"version": "2.0", "extensions": {"http": {"routePrefix": "bom"}}}`), want: "bom"},
		{name: "UTF-16 BOM", hostJSON: ptr(utf16LE(`{"extensions": {"http": {"routePrefix": "wide"}}}`)), want: "wide"},
		{name: "comments and trailing commas", hostJSON: ptr(`// host configuration
{
  "version": "2.0", /* the schema */
  "extensions": {
    "http": {
      // "routePrefix": "old",
      "routePrefix": "v2/*kept*/", // trailing
    },
  },
  "list": [1, 2,],
}`), want: "v2/*kept*"},
		{name: "slashes in strings", hostJSON: ptr(`{"a": "http://x/*y", "extensions": {"http": {"routePrefix": "p"}}, "b": "//,}"}`), want: "p"},

		{name: "invalid JSON", hostJSON: ptr(`{"version": "2.0",` + "\n" + `  "extensions": {"http": {"routePrefix": "api"}`), wantErr: "invalid JSON"},
		{name: "syntax error position", hostJSON: ptr("{\n  \"version\": \"2.0\"\n  \"extensions\": {}\n}"), wantErr: "line 3, column 3"},
		{name: "empty file", hostJSON: ptr(""), wantErr: "invalid JSON"},
		{name: "not an object", hostJSON: ptr(`["api"]`), wantErr: "must be an object"},
		{name: "trailing text", hostJSON: ptr(`{} {}`), wantErr: "invalid JSON"},
		{name: "open comment", hostJSON: ptr(`{} /* no end`), wantErr: "comment at line 1, column 4 is not closed"},
		{name: "number", hostJSON: ptr(`{"extensions": {"http": {"routePrefix": 1}}}`), wantErr: "must be a string"},
		{name: "parameter", hostJSON: ptr(`{"extensions": {"http": {"routePrefix": "{tenant}/api"}}}`), wantErr: "route parameters are not supported"},
		{name: "empty segment", hostJSON: ptr(`{"extensions": {"http": {"routePrefix": "a//b"}}}`), wantErr: "empty segment"},
		{name: "space", hostJSON: ptr(`{"extensions": {"http": {"routePrefix": "my api"}}}`), wantErr: "not allowed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			app := t.TempDir()
			path := filepath.Join(app, "host.json")
			if tt.hostJSON != nil {
				if err := os.WriteFile(path, []byte(*tt.hostJSON), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			got, err := ReadRoutePrefix(app)
			if tt.wantErr != "" {
				if err == nil {
					t.Fatalf("ReadRoutePrefix = %q, want an error containing %q", got, tt.wantErr)
				}
				if !strings.HasPrefix(err.Error(), path+": ") || !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("error = %q, want %q: ...%s...", err, path, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("ReadRoutePrefix = %q, want %q", got, tt.want)
			}
			if _, err := NewRouter(nil, got); err != nil {
				t.Errorf("NewRouter refuses the prefix: %v", err)
			}
		})
	}
}

func TestReadRoutePrefixErrors(t *testing.T) {
	// An app directory that does not exist: no host.json, the default (as
	// the official host, which defaults a missing file).
	if got, err := ReadRoutePrefix(filepath.Join(t.TempDir(), "nope")); err != nil || got != DefaultRoutePrefix {
		t.Errorf("missing app: %q, %v", got, err)
	}
	// host.json that cannot be read.
	app := t.TempDir()
	if err := os.Mkdir(filepath.Join(app, "host.json"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadRoutePrefix(app); err == nil || !strings.Contains(err.Error(), filepath.Join(app, "host.json")) {
		t.Errorf("host.json directory: %v", err)
	}
}

func ptr(s string) *string { return &s }
