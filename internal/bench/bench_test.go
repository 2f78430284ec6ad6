package bench_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/polyfn/polyfn/internal/bench"
	"github.com/polyfn/polyfn/internal/cli"
	"github.com/polyfn/polyfn/internal/hosttest"
	polyfn "github.com/polyfn/polyfn/sdk/go"
)

// roleEnv makes this test binary play another program: a Go function
// (noop, echo) started by a host as a prebuilt binary, or polyfn's CLI
// (cli) for the rows the harness runs in a `polyfn serve` process. So the
// test needs no Python, no Node.js and no Go build.
const roleEnv = "POLYFN_BENCH_TEST_ROLE"

func TestMain(m *testing.M) {
	switch os.Getenv(roleEnv) {
	case "noop":
		if os.Getenv(workerProfileEnv) != "" {
			os.Exit(runProfiledNoop())
		}
		polyfn.Start(func(context.Context, polyfn.Event) (any, error) { return nil, nil })
	case "echo":
		polyfn.Start(func(_ context.Context, e polyfn.Event) (any, error) { return e.Raw(), nil })
	case "cli":
		os.Exit(cli.Main(os.Args[1:], os.Stdout, os.Stderr))
	case "load":
		os.Exit(runLoader())
	}
	os.Exit(m.Run())
}

// TestQuickRun runs the harness in quick mode on a config of Go functions
// and checks the JSON report has every row with numbers in it. It asserts
// nothing about speed.
func TestQuickRun(t *testing.T) {
	exe := hosttest.Self(t)
	dir := t.TempDir()
	hosttest.Reachable(t, dir)
	fn := func(name, protocol, role string) string {
		if protocol != "" {
			protocol = ", protocol: " + protocol
		}
		return fmt.Sprintf("  - {name: %s, runtime: go%s, handler: %s, codedir: ., env: {%s: %s}}\n", name, protocol, exe, roleEnv, role)
	}
	cfg := "http: {max_body: 20Mi}\nfunctions:\n" +
		fn("noop", "", "noop") + fn("noop-call", "call", "noop") +
		fn("echo", "", "echo") + fn("echo-call", "call", "echo")
	file := filepath.Join(dir, "polyfn.yaml")
	if err := os.WriteFile(file, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}

	var progress bytes.Buffer
	began := time.Now()
	rep, err := bench.Run(context.Background(), bench.Options{
		Config: file, Quick: true, Progress: &progress,
		Serve: []string{exe}, ServeEnv: []string{roleEnv + "=cli"}, Command: "test", Reference: "noop",
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("quick run took %s", time.Since(began).Round(time.Millisecond))
	out := filepath.Join(dir, "results", "latest.json")
	if err := rep.WriteJSON(out); err != nil {
		t.Fatal(err)
	}
	var table strings.Builder
	rep.WriteTable(&table)
	t.Logf("table:\n%s", table.String())
	if len(rep.Errors) > 0 {
		t.Errorf("harness errors: %q\nprogress:\n%s", rep.Errors, progress.String())
	}

	// Read it back as a consumer of the JSON would.
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Machine struct {
			CPUs int `json:"cpus"`
		} `json:"machine"`
		Rows []struct {
			Section     string             `json:"section"`
			Label       string             `json:"label"`
			Function    string             `json:"function"`
			Concurrency int                `json:"concurrency"`
			SizeBytes   int                `json:"size_bytes"`
			Values      map[string]float64 `json:"values"`
			Budget      *struct {
				Value string `json:"value"`
				Text  string `json:"text"`
			} `json:"budget"`
			Error string `json:"error"`
		} `json:"rows"`
		BudgetsTotal int `json:"budgets_total"`
	}
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatalf("report is not JSON: %v", err)
	}
	if got.Machine.CPUs <= 0 {
		t.Errorf("machine.cpus = %d", got.Machine.CPUs)
	}

	type key struct{ section, function, label string }
	rows := map[key]map[string]float64{}
	for _, r := range got.Rows {
		k := key{r.Section, r.Function, r.Label}
		if _, dup := rows[k]; dup {
			t.Errorf("row %v twice", k)
		}
		rows[k] = r.Values
		if r.Error != "" {
			t.Errorf("row %v: error %s", k, r.Error)
		}
		if r.Budget != nil {
			if _, ok := r.Values[r.Budget.Value]; !ok {
				t.Errorf("row %v: budget %q on a value it does not have", k, r.Budget.Text)
			}
		}
	}
	// want checks a row exists and the named values are numbers above zero.
	// host-added figures are differences of two measurements: only finite.
	want := func(section, function, label string, positive ...string) {
		t.Helper()
		v, ok := rows[key{section, function, label}]
		if !ok {
			t.Errorf("no row %s / %s / %s", section, function, label)
			return
		}
		for _, name := range positive {
			x, ok := v[name]
			switch {
			case !ok:
				t.Errorf("row %s / %s / %s: no %s", section, function, label, name)
			case section == bench.SectionHostAdded && (math.IsNaN(x) || math.IsInf(x, 0)):
				t.Errorf("row %s / %s / %s: %s = %v", section, function, label, name, x)
			case section != bench.SectionHostAdded && !(x > 0):
				t.Errorf("row %s / %s / %s: %s = %v, want > 0", section, function, label, name, x)
			}
		}
		if e, ok := v["errors"]; ok && e != 0 {
			t.Errorf("row %s / %s / %s: %v errors", section, function, label, e)
		}
	}
	for _, f := range []struct{ name, protocol string }{{"noop", "stream"}, {"noop-call", "call"}} {
		lat := []string{"samples", "p50_us", "p90_us", "p99_us"}
		want(bench.SectionFloor, f.name, "direct "+f.protocol+" (internal/"+f.protocol+")", lat...)
		want(bench.SectionFloor, f.name, "HTTP GET /healthz, no invocation", lat...)
		want(bench.SectionWarm, f.name, "HTTP trigger", lat...)
		want(bench.SectionWarm, f.name, "Host.Invoke", lat...)
		want(bench.SectionWarm, f.name, "Host.Invoke with HTTP context", lat...)
		want(bench.SectionHostAdded, f.name, "HTTP minus floor", "p50_us", "p99_us")
		for _, c := range []int{1, 16, 64} {
			want(bench.SectionThroughput, f.name, fmt.Sprintf("c=%d", c), "req_per_s", "p50_us", "p99_us", "instances")
		}
		found := false
		for k := range rows {
			if k.section == bench.SectionThroughput && k.function == f.name && strings.HasPrefix(k.label, "best ") {
				want(k.section, k.function, k.label, "req_per_s")
				found = true
			}
		}
		if !found {
			t.Errorf("no best throughput row for %s", f.name)
		}
		// CPU per invocation at the best point's concurrency: the workers'
		// and the host's, each read from its own process.
		found = false
		for k, v := range rows {
			if k.section == bench.SectionCPU && k.function == f.name {
				want(k.section, k.function, k.label, "worker_cpu_us", "host_cpu_us", "host_worker_cpu_us", "req_per_s", "instances")
				if _, ok := v["load_cpu_us"]; !ok {
					t.Errorf("row %v: no load_cpu_us", k)
				}
				if v["host_worker_cpu_us"] < v["worker_cpu_us"] || v["host_worker_cpu_us"] < v["host_cpu_us"] {
					t.Errorf("row %v: host+worker %v is less than a part of it", k, v)
				}
				found = true
			}
		}
		if !found {
			t.Errorf("no CPU row for %s", f.name)
		}
		want(bench.SectionColdStart, f.name, "first HTTP response", "samples", "p50_us", "p90_us")
		want(bench.SectionMemory, f.name, "RSS per idle instance", "rss_mib", "after_load_rss_mib")
	}
	// The ratio rows: noop-call against the reference, noop; none for noop itself.
	want(bench.SectionRatio, "noop-call", "vs noop", "host_worker_cpu_ratio", "best_req_per_s_ratio")
	if _, ok := rows[key{bench.SectionRatio, "noop", "vs noop"}]; ok {
		t.Error("a ratio row of the reference against itself")
	}
	want(bench.SectionMemory, "", "host RSS idle, 100 functions configured", "rss_mib")
	want(bench.SectionMemory, "", "host RSS idle, this config (4 functions)", "rss_mib")
	for _, f := range []string{"echo", "echo-call"} {
		for _, size := range []string{"1 KiB", "64 KiB", "1 MiB", "16 MiB"} {
			want(bench.SectionPayload, f, size, "samples", "p50_us", "max_us", "mib_per_s", "host_peak_rss_mib")
		}
	}
	// Budgets: host-added ×2, Go throughput ×2, Go cold start ×2, idle host.
	if got.BudgetsTotal != 7 {
		t.Errorf("budgets_total = %d, want 7", got.BudgetsTotal)
	}
	if t.Failed() {
		t.Logf("progress:\n%s", progress.String())
	}
}
