package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
	"unicode/utf8"
)

// Sections of the report, in the order they are printed.
const (
	SectionFloor      = "floor"
	SectionWarm       = "warm"
	SectionHostAdded  = "host-added"
	SectionThroughput = "throughput"
	SectionCPU        = "cpu"
	SectionColdStart  = "cold-start"
	SectionMemory     = "memory"
	SectionPayload    = "payload"
)

var sectionTitles = []struct{ id, title string }{
	{SectionBuild, "BUILD: a function's dependencies (internal/build), one function at a time; the installers' download caches as they are"},
	{SectionFloor, "FLOOR: the same worker called directly with the host's protocol client (no HTTP, no pool), sequential"},
	{SectionWarm, "WARM LATENCY: no-op, one instance, sequential"},
	{SectionHostAdded, "HOST-ADDED LATENCY: HTTP trigger end to end minus the floor"},
	{SectionThroughput, "THROUGHPUT: no-op over HTTP, keep-alive connections, instances as configured"},
	{SectionCPU, "CPU PER INVOCATION: no-op over HTTP at the best throughput point's concurrency, load generator in a process of its own; CPU time per request"},
	{SectionRatio, "RATIOS: against the reference function, same run (CPU: lower is cheaper; throughput: higher is faster)"},
	{SectionColdStart, "COLD START: no instance -> first HTTP response"},
	{SectionMemory, "MEMORY: resident set sizes"},
	{SectionPayload, "PAYLOAD: echo over HTTP, host in its own process"},
}

// Report is one run of the harness. Every figure in it was measured in the
// same run on the same machine.
type Report struct {
	Version   int       `json:"version"`
	Command   string    `json:"command"`
	Config    string    `json:"config"`
	Quick     bool      `json:"quick"`
	Started   time.Time `json:"started"`
	DurationS float64   `json:"duration_s"`
	Machine   Machine   `json:"machine"`
	Settings  Settings  `json:"settings"`
	Rows      []Row     `json:"rows"`
	// BudgetsMet and BudgetsTotal count the rows that carry a budget.
	BudgetsMet   int      `json:"budgets_met"`
	BudgetsTotal int      `json:"budgets_total"`
	Notes        []string `json:"notes,omitempty"`
	// Errors are failures of the harness itself (a function that could not
	// be measured, a process left behind).
	Errors []string `json:"errors,omitempty"`
}

// Machine describes where the run happened.
type Machine struct {
	CPUs        int               `json:"cpus"`
	CPUModel    string            `json:"cpu_model"`
	MemTotalMiB float64           `json:"mem_total_mib"`
	OS          string            `json:"os"`
	Kernel      string            `json:"kernel,omitempty"`
	Go          string            `json:"go"`
	Polyfn      string            `json:"polyfn"`
	Runtimes    map[string]string `json:"runtimes,omitempty"`
}

// Settings are the sample counts and durations the run used.
type Settings struct {
	LatencyRounds    int     `json:"latency_rounds"`
	LatencyPerRound  int     `json:"latency_samples_per_round"`
	LoadWarmupS      float64 `json:"load_warmup_s"`
	LoadDurationS    float64 `json:"load_duration_s"`
	Concurrency      []int   `json:"concurrency"`
	ColdSamples      int     `json:"cold_samples"`
	BuildFirst       int     `json:"build_first_samples"`
	BuildCached      int     `json:"build_cached_samples"`
	IdleFunctions    int     `json:"idle_functions"`
	PayloadSizes     []int   `json:"payload_sizes"`
	PayloadSamples   []int   `json:"payload_samples"`
	LoadGenerator    string  `json:"load_generator"`
	FloorClient      string  `json:"floor_client"`
	ColdStartMeaning string  `json:"cold_start"`
}

// Row is one line of the report. Values holds its figures; the keys say
// the unit: *_us microseconds, *_mib MiB, req_per_s, errors, samples,
// instances.
type Row struct {
	Section  string `json:"section"`
	Label    string `json:"label"`
	Function string `json:"function,omitempty"`
	Runtime  string `json:"runtime,omitempty"`
	Protocol string `json:"protocol,omitempty"`
	// Concurrency is set on throughput points, SizeBytes on payload rows.
	Concurrency int                `json:"concurrency,omitempty"`
	SizeBytes   int                `json:"size_bytes,omitempty"`
	Values      map[string]float64 `json:"values"`
	Budget      *Budget            `json:"budget,omitempty"`
	Error       string             `json:"error,omitempty"`
}

// Budget is a design budget a row is held to.
type Budget struct {
	// Value is the key in Values the budget applies to.
	Value string `json:"value"`
	// Op is "<=" or ">=".
	Op    string  `json:"op"`
	Limit float64 `json:"limit"`
	Text  string  `json:"text"`
	Met   bool    `json:"met"`
}

// check evaluates b against the row's values.
func (r *Row) check() {
	b := r.Budget
	if b == nil {
		return
	}
	v, ok := r.Values[b.Value]
	switch {
	case !ok || r.Error != "":
		b.Met = false
	case b.Op == "<=":
		b.Met = v <= b.Limit
	default:
		b.Met = v >= b.Limit
	}
}

// WriteJSON writes the report to path, creating its directory.
func (r *Report) WriteJSON(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// WriteTable prints the report as a table: every figure with the budget it
// is held to, if any, and whether it is met.
func (r *Report) WriteTable(w io.Writer) {
	m := r.Machine
	fmt.Fprintf(w, "polyfn bench: %s\n", r.Config)
	fmt.Fprintf(w, "machine: %d CPUs, %s, %.1f GiB RAM, %s %s, %s; polyfn %s\n",
		m.CPUs, m.CPUModel, m.MemTotalMiB/1024, m.OS, m.Kernel, m.Go, m.Polyfn)
	if len(m.Runtimes) > 0 {
		var rts []string
		for _, k := range sortedKeys(m.Runtimes) {
			rts = append(rts, k+" "+m.Runtimes[k])
		}
		fmt.Fprintf(w, "runtimes: %s\n", strings.Join(rts, ", "))
	}
	mode := "full"
	if r.Quick {
		mode = "quick (smoke run: few samples, short load points; the figures are rough)"
	}
	fmt.Fprintf(w, "started %s, took %.0f s, mode %s\n", r.Started.Format(time.RFC3339), r.DurationS, mode)
	s := r.Settings
	fmt.Fprintf(w, "latency: %d rounds x %d samples per path (floor, HTTP, Host.Invoke bare and with HTTP context, /healthz, in turn); load: %.1f s warm-up + %.1f s per point; cold start: %d samples; build: %d first, %d cached per function\n",
		s.LatencyRounds, s.LatencyPerRound, s.LoadWarmupS, s.LoadDurationS, s.ColdSamples, s.BuildFirst, s.BuildCached)

	fw, lw := len("function"), len("what")
	for _, row := range r.Rows {
		fw = max(fw, len(rowSubject(row)))
		lw = max(lw, len(row.Label))
	}
	for _, sec := range sectionTitles {
		var rows []Row
		for _, row := range r.Rows {
			if row.Section == sec.id {
				rows = append(rows, row)
			}
		}
		if len(rows) == 0 {
			continue
		}
		fmt.Fprintf(w, "\n%s\n", sec.title)
		for _, row := range rows {
			fig := figures(row)
			if row.Error != "" {
				fig = strings.TrimSpace(fig + "  ERROR: " + row.Error)
			}
			line := fmt.Sprintf("  %-*s  %-*s  %s", fw, rowSubject(row), lw, row.Label, fig)
			if b := row.Budget; b != nil {
				verdict := "met"
				if !b.Met {
					verdict = "NOT MET"
				}
				line = fmt.Sprintf("%s  budget %s: %s", pad(line, 2+fw+2+lw+2+52), b.Text, verdict)
			}
			fmt.Fprintln(w, strings.TrimRight(line, " "))
		}
	}
	fmt.Fprintf(w, "\nbudgets: %d of %d met\n", r.BudgetsMet, r.BudgetsTotal)
	for _, row := range r.Rows {
		if row.Budget != nil && !row.Budget.Met {
			fmt.Fprintf(w, "  not met: %s %s %s: %s (budget %s)\n", row.Section, rowSubject(row), row.Label, budgetFigure(row), row.Budget.Text)
		}
	}
	for _, n := range r.Notes {
		fmt.Fprintf(w, "note: %s\n", n)
	}
	for _, e := range r.Errors {
		fmt.Fprintf(w, "error: %s\n", e)
	}
}

// rowSubject names what a row measures: function and runtime/protocol.
func rowSubject(r Row) string {
	switch {
	case r.Function != "" && r.Runtime != "":
		return fmt.Sprintf("%s (%s/%s)", r.Function, r.Runtime, r.Protocol)
	case r.Function != "":
		return r.Function
	case r.Runtime != "":
		return r.Runtime
	}
	return "host"
}

func budgetFigure(r Row) string {
	v := r.Values[r.Budget.Value]
	switch {
	case strings.HasSuffix(r.Budget.Value, "_us"):
		return dur(v)
	case strings.HasSuffix(r.Budget.Value, "_mib"):
		return fmt.Sprintf("%.1f MiB", v)
	}
	return thousands(v) + " req/s"
}

// figures formats a row's values for the table.
func figures(r Row) string {
	v := r.Values
	var parts []string
	add := func(format string, args ...any) { parts = append(parts, fmt.Sprintf(format, args...)) }
	lat := func(keys ...string) {
		for _, k := range keys {
			if x, ok := v[k+"_us"]; ok {
				add("%s %s", k, dur(x))
			}
		}
	}
	switch r.Section {
	case SectionThroughput:
		add("%s req/s", thousands(v["req_per_s"]))
		add("%d errors", int(v["errors"]))
		lat("p50", "p99")
		if n, ok := v["instances"]; ok {
			add("(%s)", plural(int(n), "instance"))
		}
	case SectionCPU:
		for _, k := range []struct{ key, name string }{{"worker_cpu_us", "worker"}, {"host_cpu_us", "host"}, {"host_worker_cpu_us", "host+worker"}, {"load_cpu_us", "load generator"}} {
			if x, ok := v[k.key]; ok {
				add("%s %.0f µs", k.name, x)
			}
		}
		if x, ok := v["req_per_s"]; ok {
			add("%s req/s", thousands(x))
		}
		if n, ok := v["instances"]; ok {
			add("(%s)", plural(int(n), "instance"))
		}
	case SectionRatio:
		parts = append(parts, ratioFigures(v)...)
	case SectionMemory:
		add("%.1f MiB", v["rss_mib"])
		if x, ok := v["after_load_rss_mib"]; ok {
			add("(%.1f MiB right after the latency rounds)", x)
		}
		if n, ok := v["instances"]; ok && n > 1 {
			add("(mean of %d)", int(n))
		}
	case SectionPayload:
		lat("p50", "max")
		if x, ok := v["mib_per_s"]; ok {
			if x < 10 {
				add("%.2f MiB/s", x)
			} else {
				add("%.0f MiB/s", x)
			}
		}
		if x, ok := v["host_peak_rss_mib"]; ok {
			add("host peak RSS %.1f MiB", x)
		}
		add("(%d samples)", int(v["samples"]))
	default:
		lat("p50", "p90", "p99")
	}
	return strings.Join(parts, "  ")
}

// dur formats microseconds with a readable unit.
func dur(usec float64) string {
	switch a := math.Abs(usec); {
	case a < 1000:
		return fmt.Sprintf("%.0f µs", usec)
	case a < 1e6:
		return fmt.Sprintf("%.2f ms", usec/1e3)
	}
	return fmt.Sprintf("%.2f s", usec/1e6)
}

func thousands(x float64) string {
	s := fmt.Sprintf("%.0f", x)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 && s[i-1] != '-' {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

// pad pads s with spaces to n runes.
func pad(s string, n int) string {
	if k := utf8.RuneCountInString(s); k < n {
		return s + strings.Repeat(" ", n-k)
	}
	return s
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}

func sortedKeys(m map[string]string) []string { return slices.Sorted(maps.Keys(m)) }
