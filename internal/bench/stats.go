package bench

import (
	"math"
	"slices"
	"time"
)

// durations is a series of measured times.
type durations []time.Duration

// sorted returns a sorted copy.
func (d durations) sorted() durations {
	s := slices.Clone(d)
	slices.Sort(s)
	return s
}

// pct returns the p-th quantile (0 < p ≤ 1) of a sorted series, nearest
// rank: the smallest value with at least p of the series at or below it.
func (d durations) pct(p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	i := int(math.Ceil(p*float64(len(d)))) - 1
	return d[min(max(i, 0), len(d)-1)]
}

// latencyValues are the figures of a latency series, in microseconds.
func latencyValues(d durations) map[string]float64 {
	s := d.sorted()
	return map[string]float64{
		"samples": float64(len(s)),
		"p50_us":  us(s.pct(0.50)),
		"p90_us":  us(s.pct(0.90)),
		"p99_us":  us(s.pct(0.99)),
	}
}

func us(d time.Duration) float64 { return math.Round(float64(d)/10) / 100 }

func mib(kb int64) float64 { return math.Round(float64(kb)/1024*10) / 10 }
