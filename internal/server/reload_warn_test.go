package server

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"github.com/polyfn/polyfn/internal/config"
)

// warnRestartOnly warns of what a reload does not apply, and of nothing
// else: http.max_body, http.max_stream_body and http.cors follow reloads
// (each handler reads its own config's), while http.max_header_bytes, say,
// is the listener's and waits for a restart.
func TestReloadWarnsOnlyOfRestartSettings(t *testing.T) {
	load := func(http string) *config.Config {
		t.Helper()
		cfg, err := config.Parse("polyfn.yaml", []byte("http: {"+http+"}\nfunctions: []\n"))
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	started := load("max_body: 1Mi, max_stream_body: 16Mi")
	for _, tc := range []struct {
		http string
		warn bool
	}{
		{"max_body: 2Mi, max_stream_body: 16Mi", false},
		{"max_body: 1Mi, max_stream_body: 32Mi", false},
		{`max_body: 1Mi, max_stream_body: 16Mi, cors: {allow_origins: ["https://spa.example.com"]}`, false},
		{"max_body: 1Mi, max_stream_body: 16Mi, max_header_bytes: 4Ki", true},
	} {
		var logs bytes.Buffer
		s := &Server{log: slog.New(slog.NewTextHandler(&logs, nil)), http: started.HTTP, mqtt: started.MQTT, stateDir: started.StateDir}
		s.startedAdmin, _ = s.adminAddress(started)
		s.warnRestartOnly(load(tc.http))
		if got := strings.Contains(logs.String(), "take effect on restart"); got != tc.warn {
			t.Errorf("reload to http {%s}: warned %v, want %v:\n%s", tc.http, got, tc.warn, logs.String())
		}
	}
}
