package host_test

import (
	"os/exec"
	"strings"
	"testing"
)

// The host turns a configuration into running functions and knows no
// trigger: triggers call it (internal/server wires them), never the other
// way round.
func TestHostImportsNoTrigger(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	for _, p := range strings.Fields(string(out)) {
		if strings.HasPrefix(p, "github.com/polyfn/polyfn/internal/trigger") {
			t.Errorf("internal/host depends on %s", p)
		}
	}
}
