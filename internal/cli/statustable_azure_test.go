package cli

import (
	"strings"
	"testing"

	"github.com/polyfn/polyfn/internal/host"
	"github.com/polyfn/polyfn/internal/pool"
)

// A function polyfn cannot serve has a row of its own, state unsupported,
// with the bindings why.
func TestStatusTableNamesUnsupportedAppFunctions(t *testing.T) {
	st := host.AdminStatus{Apps: []host.AppStatus{{
		Name: "shop", Runtime: "azure-node", Functions: []string{"hello"},
		Unsupported: []string{`function orders: unsupported binding queueTrigger "queueItem" (trigger): polyfn serves httpTrigger and timerTrigger functions with http outputs only`},
		Stats:       pool.Stats{State: "ready", Instances: []pool.InstanceInfo{{State: "idle"}}},
	}}}
	var b strings.Builder
	if err := writeStatusTable(&b, st); err != nil {
		t.Fatal(err)
	}
	want := `
FUNCTION     RUNTIME     PROTOCOL  STATE        INSTANCES   IN-FLIGHT  QUEUED  LAST ERROR
shop/hello   azure-node  stream    ready        1 (0 busy)  0          0
shop/orders  azure-node  stream    unsupported                                 unsupported binding queueTrigger "queueItem" (trigger): polyfn serves httpTrigger and timerTrigger functions with htt...
`[1:]
	if got := trimLines(b.String()); got != trimLines(want) {
		t.Errorf("status table:\n%s\nwant:\n%s", got, want)
	}
}
