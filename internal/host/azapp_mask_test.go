package host_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/polyfn/polyfn/internal/hosttest"
)

// A broken app's 502 quotes the worker's last stderr lines, which may print
// a secret of the config: like any invocation error's message, it must be
// masked (RouteApp's AppBroken error does not pass through Host.Invoke).
func TestAzureAppBrokenMasksSecrets(t *testing.T) {
	t.Setenv("REVIEW_SECRET", "left-pad") // printed by the azapp-stderr worker
	th, _ := startAzapp(t, azappHostJSON, `  - {name: printed, runtime: stderr-worker, codedir: "{codedir}", env: {LEAK: "${REVIEW_SECRET}"}}
`)
	var msg string
	hosttest.WaitFor(t, 10*time.Second, "app printed's 502 quoting its stderr", func() bool {
		r := th.Do(t, http.MethodGet, "/api/nothing", nil, nil)
		msg = r.Err.Error.Message
		return r.Status == http.StatusBadGateway && r.Err.Error.Type == "AppBroken" && strings.Contains(msg, "the worker's last stderr lines")
	})
	if strings.Contains(msg, "left-pad") {
		t.Fatalf("the 502 quotes a secret of the config unmasked: %s", msg)
	}
}
