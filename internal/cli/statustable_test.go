package cli

import (
	"strings"
	"testing"

	"github.com/polyfn/polyfn/internal/host"
	"github.com/polyfn/polyfn/internal/pool"
)

func TestStatusTableNamesAppFunctions(t *testing.T) {
	st := host.AdminStatus{
		Functions: []host.FunctionStatus{
			{Name: "sayhi", Runtime: "python3", Protocol: "stream", Stats: pool.Stats{State: "ready", Instances: []pool.InstanceInfo{{State: "busy"}}, InFlight: 1}},
			{Name: "resize", Runtime: "python3", Protocol: "call", App: "images", Stats: pool.Stats{State: "idle"}},
		},
		Apps: []host.AppStatus{
			{Name: "v1bad", Runtime: "azure-python", Functions: []string{"Other", "Second"},
				Broken: []string{
					"/srv/v1bad/Bad/function.json: no bindings",
					"function Broken: ImportError: no module named nope",
					`function "quoted-name": binding "req": missing "type"`,
					"load Loader: SyntaxError: Unexpected token",
					"worker indexing: the entry point does not load",
				},
				Stats: pool.Stats{State: "ready", Instances: []pool.InstanceInfo{{State: "idle"}, {State: "busy"}}, InFlight: 1, Queued: 2}},
			{Name: "gone", Runtime: "azure-node", Error: "the worker could not index the app: boom", Stats: pool.Stats{State: "idle"}},
		},
	}
	var b strings.Builder
	if err := writeStatusTable(&b, st); err != nil {
		t.Fatal(err)
	}
	want := `
FUNCTION           RUNTIME       PROTOCOL  STATE   INSTANCES   IN-FLIGHT  QUEUED  LAST ERROR
sayhi              python3       stream    ready   1 (1 busy)  1          0
images/resize      python3       call      idle    0 (0 busy)  0          0
v1bad/Other        azure-python  stream    ready   2 (1 busy)  1          2
v1bad/Second       azure-python  stream    ready
v1bad/Bad          azure-python  stream    broken                                 function.json: no bindings
v1bad/Broken       azure-python  stream    broken                                 ImportError: no module named nope
v1bad/quoted-name  azure-python  stream    broken                                 binding "req": missing "type"
v1bad/Loader       azure-python  stream    broken                                 SyntaxError: Unexpected token
v1bad/*            azure-python  stream    broken                                 worker indexing: the entry point does not load
gone/*             azure-node    stream    broken  0 (0 busy)  0          0       the worker could not index the app: boom
`[1:]
	if got := trimLines(b.String()); got != trimLines(want) {
		t.Errorf("status table:\n%s\nwant:\n%s", got, want)
	}
}

// trimLines drops the spaces tabwriter leaves at the ends of lines.
func trimLines(s string) string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		lines[i] = strings.TrimRight(l, " ")
	}
	return strings.Join(lines, "\n")
}
