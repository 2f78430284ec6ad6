package host_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/polyfn/polyfn/internal/cli"
	"github.com/polyfn/polyfn/internal/host"
	"github.com/polyfn/polyfn/internal/hosttest"
)

const observedConfig = `
runtimes:
  fake-stream:
    protocol: stream
    discovery: config
    command: ["{self}"]
    env: {POLYFN_FAKE_WORKER: stream}
  fake-exit:
    protocol: call
    command: ["{self}"]
    env: {POLYFN_FAKE_WORKER: exit}
functions:
  - {name: good, runtime: fake-stream, handler: h.h, codedir: "{codedir}"}
  - {name: exits, runtime: fake-exit, handler: h.h, codedir: "{codedir}"}
`

// scrape fetches /metrics and parses the Prometheus text format.
func scrape(t *testing.T, th *hosttest.Host) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(th.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("/metrics is not the Prometheus text format: %v", err)
	}
	return families
}

// value returns the value of the sample of family name whose labels include
// want, or -1.
func value(families map[string]*dto.MetricFamily, name string, want map[string]string) float64 {
	f := families[name]
	if f == nil {
		return -1
	}
next:
	for _, m := range f.Metric {
		labels := map[string]string{}
		for _, l := range m.Label {
			labels[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if labels[k] != v {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount())
		}
	}
	return -1
}

func TestMetricsAndAdmin(t *testing.T) {
	th := startHost(t, observedConfig)
	for i := 0; i < 3; i++ {
		if r := th.Call(t, "good", "ping"); r.Status != 200 {
			t.Fatalf("good: %d %s", r.Status, r.Body)
		}
	}
	if r := th.Call(t, "good", "raise"); r.Status != 500 {
		t.Fatalf("raise: %d", r.Status)
	}
	if r := th.Call(t, "good", "crash"); r.Status != http.StatusBadGateway {
		t.Fatalf("crash: %d", r.Status)
	}
	if r := th.Call(t, "exits", "x"); r.Status != http.StatusBadGateway {
		t.Fatalf("exits: %d", r.Status)
	}
	if r := th.Warm(t, "good", "again"); r.Status != 200 {
		t.Fatalf("good after the crash: %d", r.Status)
	}

	m := scrape(t, th)
	checks := []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"polyfn_invocations_total", map[string]string{"function": "good", "trigger": "http", "outcome": "success"}, 4},
		{"polyfn_invocations_total", map[string]string{"function": "good", "outcome": "FunctionError"}, 1},
		{"polyfn_invocations_total", map[string]string{"function": "good", "outcome": "WorkerCrashed"}, 1},
		{"polyfn_invocations_total", map[string]string{"function": "exits", "outcome": "WorkerStartFailed"}, 1},
		{"polyfn_invocation_duration_seconds", map[string]string{"function": "good", "trigger": "http"}, 6},
		{"polyfn_cold_starts_total", map[string]string{"function": "good", "outcome": "success"}, 2},
		{"polyfn_cold_starts_total", map[string]string{"function": "exits", "outcome": "failure"}, 1},
		{"polyfn_cold_start_duration_seconds", map[string]string{"function": "good"}, 2},
		{"polyfn_worker_restarts_total", map[string]string{"function": "good", "cause": "lost_invocation"}, 1},
		{"polyfn_instances", map[string]string{"function": "good", "state": "idle"}, 1},
		{"polyfn_instances", map[string]string{"function": "good", "state": "busy"}, 0},
		{"polyfn_queue_depth", map[string]string{"function": "good"}, 0},
		{"polyfn_payload_in_bytes_total", map[string]string{"function": "good"}, float64(3*len("ping") + len("raise") + len("crash") + len("again"))},
		{"polyfn_payload_out_bytes_total", map[string]string{"function": "good"}, float64(3*len("stream:ping") + len("stream:again"))},
	}
	for _, c := range checks {
		if got := value(m, c.name, c.labels); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	if value(m, "process_resident_memory_bytes", nil) <= 0 {
		t.Error("process metrics missing")
	}

	// GET /admin/functions
	resp, err := http.Get(th.URL + "/admin/functions")
	if err != nil {
		t.Fatal(err)
	}
	var st host.AdminStatus
	err = json.NewDecoder(resp.Body).Decode(&st)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("/admin/functions is not JSON: %v", err)
	}
	byName := map[string]host.FunctionStatus{}
	for _, f := range st.Functions {
		byName[f.Name] = f
	}
	good, exits := byName["good"], byName["exits"]
	if good.State != "ready" || good.Runtime != "fake-stream" || good.Protocol != "stream" || len(good.Instances) != 1 || good.Instances[0].State != "idle" ||
		!strings.Contains(good.LastError, "exited") {
		t.Errorf("good: %+v", good)
	}
	if exits.State != "broken" || !strings.Contains(exits.LastError, "exit status 3") || len(exits.Instances) != 0 {
		t.Errorf("exits: %+v", exits)
	}

	// polyfn status prints the same.
	var out, errOut bytes.Buffer
	if code := cli.Main([]string{"status", "--url", th.URL}, &out, &errOut); code != 0 {
		t.Fatalf("polyfn status: exit %d: %s", code, errOut.String())
	}
	for _, want := range []string{"FUNCTION", "good", "ready", "1 (0 busy)", "exits", "broken", "exit status 3"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("polyfn status output lacks %q:\n%s", want, out.String())
		}
	}
}
