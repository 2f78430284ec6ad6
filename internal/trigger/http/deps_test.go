package http_test

import (
	"os/exec"
	"strings"
	"testing"
)

// The HTTP trigger and the invocation it builds know no worker protocol:
// neither depends, even through another package, on the Azure wire types,
// the protocol adapters or the host.
func TestKnowsNoProtocol(t *testing.T) {
	for _, pkg := range []string{".", "../../invoke", "../../trigger"} {
		out, err := exec.Command("go", "list", "-deps", pkg).Output()
		if err != nil {
			t.Fatalf("go list -deps %s: %v", pkg, err)
		}
		for _, p := range strings.Fields(string(out)) {
			switch strings.TrimPrefix(p, "github.com/polyfn/polyfn/") {
			case "api/azure", "api/baetyl", "internal/azure", "internal/stream", "internal/call", "internal/host":
				t.Errorf("%s depends on %s", pkg, p)
			}
		}
	}
}
