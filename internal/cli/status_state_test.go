package cli

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/polyfn/polyfn/internal/host"
	"github.com/polyfn/polyfn/internal/pool"
)

// polyfn status shows a broken function with its cause and, while it backs
// off, when the next start may begin.
func TestStatusShowsBrokenWithCauseAndBackoff(t *testing.T) {
	until := time.Date(2026, 12, 3, 12, 34, 56, 0, time.Local)
	doc := host.AdminStatus{Functions: []host.FunctionStatus{
		{Name: "loop", Runtime: "python3", Protocol: "stream", Stats: pool.Stats{State: pool.StateBroken, Instances: []pool.InstanceInfo{},
			LastError: "instance loop-3 exited: exit status 3", BackoffUntil: until}},
		{Name: "ok", Runtime: "python3", Protocol: "stream", Stats: pool.Stats{State: pool.StateIdle, Instances: []pool.InstanceInfo{}}},
	}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _ = json.NewEncoder(w).Encode(doc) }))
	defer srv.Close()
	cmd := statusCmd()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetArgs([]string{"--url", srv.URL})
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	var loop, ok string
	for _, line := range strings.Split(out.String(), "\n") {
		switch {
		case strings.HasPrefix(line, "loop "):
			loop = line
		case strings.HasPrefix(line, "ok "):
			ok = line
		}
	}
	if !strings.Contains(loop, "broken (retry at 12:34:56)") || !strings.Contains(loop, "exit status 3") {
		t.Errorf("loop's row %q: want broken with the retry time and the cause\n%s", loop, out.String())
	}
	if !strings.Contains(ok, " idle ") || strings.Contains(ok, "retry") {
		t.Errorf("ok's row %q: want idle, no retry time", ok)
	}
}
