package host_test

import (
	"bytes"
	"regexp"
	"testing"
	"time"

	"github.com/polyfn/polyfn/internal/cli"
	"github.com/polyfn/polyfn/internal/hosttest"
)

// polyfn status names an app's functions app/function and lists its broken
// ones with their reasons, from a running host's /admin/functions.
func TestStatusTableOfAnApp(t *testing.T) {
	th := startAzureHost(t, "")
	hosttest.WaitFor(t, 30*time.Second, "both apps indexed and ready", func() bool {
		ready := 0
		for _, a := range th.AppStatus() {
			if a.State == "ready" && len(a.Functions) > 0 {
				ready++
			}
		}
		return ready == 2
	})
	var out, errOut bytes.Buffer
	if code := cli.Main([]string{"status", "--url", th.URL}, &out, &errOut); code != 0 {
		t.Fatalf("polyfn status: exit %d: %s", code, errOut.String())
	}
	for _, want := range []string{
		`(?m)^nodeapp/hello\s+node-worker\s+stream\s+ready\s+1 \(0 busy\)`,
		`(?m)^nodeapp/broken\s+node-worker\s+stream\s+broken\s+SyntaxError: Unexpected token`,
		`(?m)^pyapp/HttpExample\s+python-worker\s+stream\s`,
	} {
		if !regexp.MustCompile(want).MatchString(out.String()) {
			t.Errorf("polyfn status output does not match %s:\n%s", want, out.String())
		}
	}
}
