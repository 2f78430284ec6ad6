package bench

import (
	"fmt"
	"math"
	"strings"
)

// SectionRatio holds each no-op function's figures relative to the
// reference function's (Options.Reference), measured in the same run.
const SectionRatio = "ratio"

// ratios adds, for every no-op function but the references, its
// host+worker CPU per invocation and its best throughput divided by each
// reference's (Options.Reference, comma-separated names).
func (r *runner) ratios() {
	if r.o.Reference == "" {
		return
	}
	cpu, rps := map[string]float64{}, map[string]float64{}
	var fns []Row
	for _, row := range r.rep.Rows {
		if row.Error != "" {
			continue
		}
		switch {
		case row.Section == SectionCPU:
			cpu[row.Function] = row.Values["host_worker_cpu_us"]
			fns = append(fns, Row{Function: row.Function, Runtime: row.Runtime, Protocol: row.Protocol})
		case row.Section == SectionThroughput && strings.HasPrefix(row.Label, "best "):
			rps[row.Function] = row.Values["req_per_s"]
		}
	}
	for _, ref := range strings.Split(r.o.Reference, ",") {
		ref = strings.TrimSpace(ref)
		if cpu[ref] <= 0 || rps[ref] <= 0 {
			r.note("reference %s: no CPU or throughput figure to compare with", ref)
			continue
		}
		for _, fn := range fns {
			if fn.Function == ref {
				continue
			}
			row := fn
			row.Section, row.Label = SectionRatio, "vs "+ref
			row.Values = map[string]float64{"host_worker_cpu_ratio": round2(cpu[fn.Function] / cpu[ref])}
			if x, ok := rps[fn.Function]; ok {
				row.Values["best_req_per_s_ratio"] = round2(x / rps[ref])
			}
			r.add(row)
		}
	}
}

// ratioFigures formats a ratio row.
func ratioFigures(v map[string]float64) []string {
	var parts []string
	if x, ok := v["host_worker_cpu_ratio"]; ok && !math.IsNaN(x) {
		parts = append(parts, fmt.Sprintf("host+worker CPU per invocation %.2f×", x))
	}
	if x, ok := v["best_req_per_s_ratio"]; ok && !math.IsNaN(x) {
		parts = append(parts, fmt.Sprintf("best throughput %.2f×", x))
	}
	return parts
}
