package bench

import "fmt"

// The budgets of polyfn's design brief ("Budgets"), measured on a 2-core
// machine.
const (
	// BudgetHostAddedP50 bounds the HTTP trigger end to end minus a direct
	// call to the same worker, p50, in microseconds.
	BudgetHostAddedP50 = 50
	// BudgetWarmPythonP50 bounds a warm no-op Python function over HTTP,
	// one instance, sequential, p50, in microseconds.
	BudgetWarmPythonP50 = 300
	// BudgetPythonRPS and BudgetGoRPS are the throughput floors of a no-op
	// Python and Go function over HTTP, requests per second.
	BudgetPythonRPS = 8000
	BudgetGoRPS     = 20000
	// BudgetHostIdleRSS bounds the host's resident memory, idle, with 100
	// functions configured, in MiB.
	BudgetHostIdleRSS = 30
)

// BudgetColdStart bounds cold starts (no instance -> first response), p50,
// in milliseconds, per built-in runtime.
var BudgetColdStart = map[string]float64{"python3": 50, "node": 60, "go": 10}

func atMost(value string, limit float64, text string) *Budget {
	return &Budget{Value: value, Op: "<=", Limit: limit, Text: text}
}

func atLeast(value string, limit float64, text string) *Budget {
	return &Budget{Value: value, Op: ">=", Limit: limit, Text: text}
}

func hostAddedBudget() *Budget {
	return atMost("p50_us", BudgetHostAddedP50, fmt.Sprintf("p50 ≤ %d µs", BudgetHostAddedP50))
}

func warmBudget(runtime string) *Budget {
	if runtime != "python3" {
		return nil
	}
	return atMost("p50_us", BudgetWarmPythonP50, fmt.Sprintf("p50 ≤ %d µs (Python)", BudgetWarmPythonP50))
}

func throughputBudget(runtime string) *Budget {
	switch runtime {
	case "python3":
		return atLeast("req_per_s", BudgetPythonRPS, fmt.Sprintf("≥ %s req/s (Python)", thousands(BudgetPythonRPS)))
	case "go":
		return atLeast("req_per_s", BudgetGoRPS, fmt.Sprintf("≥ %s req/s (Go)", thousands(BudgetGoRPS)))
	}
	return nil
}

func coldBudget(runtime string) *Budget {
	ms, ok := BudgetColdStart[runtime]
	if !ok {
		return nil
	}
	return atMost("p50_us", ms*1000, fmt.Sprintf("p50 ≤ %.0f ms (%s)", ms, runtime))
}

func idleHostBudget() *Budget {
	return atMost("rss_mib", BudgetHostIdleRSS, fmt.Sprintf("≤ %d MiB", BudgetHostIdleRSS))
}
