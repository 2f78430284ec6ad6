// Package metrics holds the host's Prometheus metrics. Names and labels use
// the project's vocabulary (function, instance, invocation, trigger); the
// catalogue is documented in docs/operations.md.
package metrics

import (
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/polyfn/polyfn/internal/peer"
	"github.com/polyfn/polyfn/internal/pool"
)

// Metrics is told about the pools' instances and the refused worker
// connections.
var (
	_ pool.Observer       = (*Metrics)(nil)
	_ peer.RefusalCounter = (*Metrics)(nil)
)

// Metrics is the process's set of metrics, in a registry of its own. It
// outlives configurations: a reload keeps every counter, and the series of
// the functions it removed are deleted (Forget).
type Metrics struct {
	Registry *prometheus.Registry

	invocations   *prometheus.CounterVec
	duration      *prometheus.HistogramVec
	bytesIn       *prometheus.CounterVec
	bytesOut      *prometheus.CounterVec
	starts        *prometheus.CounterVec
	startDuration *prometheus.HistogramVec
	exits         *prometheus.CounterVec
	standby       *prometheus.CounterVec
	timerSkipped  *prometheus.CounterVec
	oomKills      *prometheus.CounterVec
	refused       *prometheus.CounterVec
	mqttMessages  *prometheus.CounterVec

	// pools reads the instance and queue gauges: the running
	// configuration's (SetPools).
	pools atomic.Pointer[func() []PoolStats]

	// series caches what Invocation updates, by seriesKey.
	series sync.Map
}

// PoolStats is what the instance and queue gauges are read from at scrape.
type PoolStats struct {
	Function string
	Idle     int
	Busy     int
	Starting int
	Queued   int
}

// New registers every metric, plus Go and process collectors, and the
// gauges read at each scrape from what SetPools gives.
func New() *Metrics {
	m := &Metrics{Registry: prometheus.NewRegistry()}
	m.invocations = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "polyfn_invocations_total",
		Help: "Invocations by function, trigger and outcome (success, or the error type such as Timeout).",
	}, []string{"function", "trigger", "outcome"})
	m.duration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "polyfn_invocation_duration_seconds",
		Help:    "Invocation duration from the host's point of view, queueing included.",
		Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
	}, []string{"function", "trigger"})
	m.bytesIn = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "polyfn_payload_in_bytes_total", Help: "Payload bytes sent to functions.",
	}, []string{"function"})
	m.bytesOut = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "polyfn_payload_out_bytes_total", Help: "Result bytes returned by functions.",
	}, []string{"function"})
	m.starts = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "polyfn_cold_starts_total",
		Help: "Instance starts (cold starts) by function and outcome (success, failure).",
	}, []string{"function", "outcome"})
	m.startDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "polyfn_cold_start_duration_seconds",
		Help:    "Time from starting a worker process to the instance being ready.",
		Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
	}, []string{"function"})
	m.exits = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "polyfn_worker_restarts_total",
		Help: "Instances lost and replaced, by function and cause (crashed, lost_invocation).",
	}, []string{"function", "cause"})
	m.standby = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "polyfn_standby_workers_total",
		Help: "Standby workers by runtime and event (ready: started and waiting; bound: taken by a function).",
	}, []string{"runtime", "event"})
	m.timerSkipped = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "polyfn_timer_ticks_skipped_total",
		Help: "Timer ticks not run because the previous run of the same schedule was still going (overlap off).",
	}, []string{"function"})
	m.oomKills = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "polyfn_worker_oom_kills_total",
		Help: "Processes of workers (the worker itself or what it started) the kernel killed at the memory limit (limits.memory).",
	}, []string{"function"})
	m.refused = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "polyfn_worker_connections_refused_total",
		Help: "Worker protocol connections refused because the process at the other end is not the instance's worker (or a process it started), by protocol (stream, call) and reason (unknown_worker_id, not_worker, unidentified).",
	}, []string{"protocol", "reason"})
	m.mqttMessages = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "polyfn_mqtt_messages_total",
		Help: "MQTT messages handled, by function and outcome (success, filtered: empty result, error: error document).",
	}, []string{"function", "outcome"})
	m.Registry.MustRegister(m.invocations, m.duration, m.bytesIn, m.bytesOut, m.starts, m.startDuration, m.exits, m.standby, m.timerSkipped, m.oomKills, m.refused, m.mqttMessages,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		&poolCollector{m: m})
	return m
}

// SetPools makes stats what the instance and queue gauges are read from:
// the pools of the configuration that serves.
func (m *Metrics) SetPools(stats func() []PoolStats) { m.pools.Store(&stats) }

// Forget deletes every series labelled with function (a function or an
// app a reload removed), so that what no longer runs is no longer exposed.
func (m *Metrics) Forget(function string) {
	l := prometheus.Labels{"function": function}
	for _, v := range []*prometheus.MetricVec{m.invocations.MetricVec, m.duration.MetricVec, m.bytesIn.MetricVec, m.bytesOut.MetricVec,
		m.starts.MetricVec, m.startDuration.MetricVec, m.exits.MetricVec, m.timerSkipped.MetricVec, m.oomKills.MetricVec, m.mqttMessages.MetricVec} {
		v.DeletePartialMatch(l)
	}
	m.series.Range(func(k, _ any) bool {
		if k.(seriesKey).function == function {
			m.series.Delete(k)
		}
		return true
	})
}

// MQTTMessage records an MQTT message handled for function with outcome.
func (m *Metrics) MQTTMessage(function, outcome string) {
	m.mqttMessages.WithLabelValues(function, outcome).Inc()
}

// Handler serves the registry in the Prometheus text format, followed by
// what extra gathers (the HTTP listener's metrics, which outlive a host).
func (m *Metrics) Handler(extra ...prometheus.Gatherer) http.Handler {
	if len(extra) == 0 {
		return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{})
	}
	return promhttp.HandlerFor(append(prometheus.Gatherers{m.Registry}, extra...), promhttp.HandlerOpts{})
}

// Reasons an HTTP request or connection is refused, named after the config
// key of the bound it hit.
const (
	RejectMaxConnections = "max_connections"
	RejectMaxBodyTotal   = "max_body_total"
	RejectMaxBody        = "max_body"
	RejectBodyTimeout    = "body_timeout"
)

// HTTPListener holds the metrics of the HTTP trigger's listener. The
// listener outlives configurations (a reload swaps the host behind it), so
// they live in a registry of their own, served with the current host's.
type HTTPListener struct {
	Registry     *prometheus.Registry
	rejected     *prometheus.CounterVec
	unauthorized *prometheus.CounterVec
	// refused holds the function labels unauthorized has series of.
	refused sync.Map
}

// NewHTTPListener registers the listener's metrics; open and buffered are
// read at each scrape.
func NewHTTPListener(open, buffered func() int64) *HTTPListener {
	m := &HTTPListener{Registry: prometheus.NewRegistry()}
	m.rejected = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "polyfn_http_rejected_total",
		Help: "HTTP connections and requests refused at a bound of the listener, by reason: the config key of the bound (max_connections, max_body_total, max_body, body_timeout).",
	}, []string{"reason"})
	for _, r := range []string{RejectMaxConnections, RejectMaxBodyTotal, RejectMaxBody, RejectBodyTimeout} {
		m.rejected.WithLabelValues(r)
	}
	m.unauthorized = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "polyfn_http_unauthorized_total",
		Help: "HTTP requests answered 401 for a missing or wrong key, by function (an app function as APP/FUNCTION; admin for /admin/* and /metrics).",
	}, []string{"function"})
	m.Registry.MustRegister(m.rejected, m.unauthorized,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "polyfn_http_connections",
			Help: "Open HTTP connections, idle keep-alive ones included (bounded by http.max_connections).",
		}, func() float64 { return float64(open()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "polyfn_http_body_buffered_bytes",
			Help: "Request-body bytes buffered by requests in flight (bounded by http.max_body_total).",
		}, func() float64 { return float64(buffered()) }))
	return m
}

// Rejected records a connection or request refused for reason.
func (m *HTTPListener) Rejected(reason string) { m.rejected.WithLabelValues(reason).Inc() }

// Unauthorized records a request answered 401 for function.
func (m *HTTPListener) Unauthorized(function string) {
	m.unauthorized.WithLabelValues(function).Inc()
	m.refused.LoadOrStore(function, struct{}{})
}

// Forget deletes the 401 series of function, and those of its functions
// when it names an app (labelled APP/FUNCTION).
func (m *HTTPListener) Forget(function string) {
	m.refused.Range(func(k, _ any) bool {
		if n := k.(string); n == function || strings.HasPrefix(n, function+"/") {
			m.unauthorized.DeleteLabelValues(n)
			m.refused.Delete(k)
		}
		return true
	})
}

// Invocation records one finished invocation.
func (m *Metrics) Invocation(function, trigger, outcome string, d time.Duration, in, out int) {
	s := m.invocationSeries(function, trigger, outcome)
	s.count.Inc()
	s.duration.Observe(d.Seconds())
	s.bytesIn.Add(float64(in))
	s.bytesOut.Add(float64(out))
}

// invocationSeries are the series one invocation updates.
type invocationSeries struct {
	count             prometheus.Counter
	duration          prometheus.Observer
	bytesIn, bytesOut prometheus.Counter
}

type seriesKey struct{ function, trigger, outcome string }

// invocationSeries returns the series of an invocation of function by
// trigger that ended with outcome, looked up in the vectors (label checks,
// hashing, a lock each) only the first time.
func (m *Metrics) invocationSeries(function, trigger, outcome string) *invocationSeries {
	k := seriesKey{function, trigger, outcome}
	if s, ok := m.series.Load(k); ok {
		return s.(*invocationSeries)
	}
	s, _ := m.series.LoadOrStore(k, &invocationSeries{
		count:    m.invocations.WithLabelValues(function, trigger, outcome),
		duration: m.duration.WithLabelValues(function, trigger),
		bytesIn:  m.bytesIn.WithLabelValues(function),
		bytesOut: m.bytesOut.WithLabelValues(function),
	})
	return s.(*invocationSeries)
}

// InstanceStarted records an instance start and how long it took.
func (m *Metrics) InstanceStarted(function string, d time.Duration) {
	m.starts.WithLabelValues(function, "success").Inc()
	m.startDuration.WithLabelValues(function).Observe(d.Seconds())
}

// InstanceStartFailed records an instance that could not start.
func (m *Metrics) InstanceStartFailed(function string) {
	m.starts.WithLabelValues(function, "failure").Inc()
}

// InstanceLost records an instance that died or was retired.
func (m *Metrics) InstanceLost(function, cause string) {
	m.exits.WithLabelValues(function, cause).Inc()
}

// StandbyReady records a standby worker that is started and waiting.
func (m *Metrics) StandbyReady(runtime string) { m.standby.WithLabelValues(runtime, "ready").Inc() }

// StandbyBound records a standby worker bound to a function.
func (m *Metrics) StandbyBound(runtime string) { m.standby.WithLabelValues(runtime, "bound").Inc() }

// TimerTickSkipped records a timer tick skipped because the previous run of
// its schedule was still going.
func (m *Metrics) TimerTickSkipped(function string) { m.timerSkipped.WithLabelValues(function).Inc() }

// OOMKills records n processes of function's workers killed at the memory
// limit.
func (m *Metrics) OOMKills(function string, n int) {
	m.oomKills.WithLabelValues(function).Add(float64(n))
}

// WorkerConnectionRefused records a worker protocol connection refused
// for reason.
func (m *Metrics) WorkerConnectionRefused(protocol, reason string) {
	m.refused.WithLabelValues(protocol, reason).Inc()
}

var (
	instancesDesc = prometheus.NewDesc("polyfn_instances", "Instances by function and state (idle, busy, starting).", []string{"function", "state"}, nil)
	queueDesc     = prometheus.NewDesc("polyfn_queue_depth", "Invocations waiting for a free slot.", []string{"function"}, nil)
)

// poolCollector reads instance and queue gauges from the pools at scrape.
type poolCollector struct{ m *Metrics }

func (c *poolCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- instancesDesc
	ch <- queueDesc
}

func (c *poolCollector) Collect(ch chan<- prometheus.Metric) {
	stats := c.m.pools.Load()
	if stats == nil {
		return
	}
	for _, s := range (*stats)() {
		ch <- prometheus.MustNewConstMetric(instancesDesc, prometheus.GaugeValue, float64(s.Idle), s.Function, "idle")
		ch <- prometheus.MustNewConstMetric(instancesDesc, prometheus.GaugeValue, float64(s.Busy), s.Function, "busy")
		ch <- prometheus.MustNewConstMetric(instancesDesc, prometheus.GaugeValue, float64(s.Starting), s.Function, "starting")
		ch <- prometheus.MustNewConstMetric(queueDesc, prometheus.GaugeValue, float64(s.Queued), s.Function)
	}
}
