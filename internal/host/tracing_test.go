package host_test

import (
	"context"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/trace/noop"
	collector "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/polyfn/polyfn/internal/hosttest"
	"github.com/polyfn/polyfn/internal/tracing"
)

// otlpReceiver is a real OTLP/HTTP trace endpoint that keeps what it gets.
type otlpReceiver struct {
	mu    sync.Mutex
	spans []*tracepb.Span
}

func (o *otlpReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	var req collector.ExportTraceServiceRequest
	if r.URL.Path != "/v1/traces" || proto.Unmarshal(body, &req) != nil {
		http.Error(w, "bad request", http.StatusBadRequest)
		return
	}
	o.mu.Lock()
	for _, rs := range req.ResourceSpans {
		for _, ss := range rs.ScopeSpans {
			o.spans = append(o.spans, ss.Spans...)
		}
	}
	o.mu.Unlock()
	w.Header().Set("Content-Type", "application/x-protobuf")
	b, _ := proto.Marshal(&collector.ExportTraceServiceResponse{})
	_, _ = w.Write(b)
}

func (o *otlpReceiver) byName() map[string]*tracepb.Span {
	o.mu.Lock()
	defer o.mu.Unlock()
	m := map[string]*tracepb.Span{}
	for _, s := range o.spans {
		m[s.Name] = s
	}
	return m
}

func TestTracing(t *testing.T) {
	recv := &otlpReceiver{}
	srv := httptest.NewServer(recv)
	defer srv.Close()
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", srv.URL)
	t.Setenv("OTEL_TRACES_EXPORTER", "otlp")
	t.Setenv("OTEL_BSP_SCHEDULE_DELAY", "20")
	shutdown, err := tracing.Setup(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = shutdown(context.Background())
		otel.SetTracerProvider(noop.NewTracerProvider())
	})

	th := startHost(t, responseConfig) // functions "call" and "stream" on fake workers
	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	const parentSpan = "00f067aa0ba902b7"
	incoming := "00-" + traceID + "-" + parentSpan + "-01"
	for _, fn := range []string{"call", "stream"} {
		r := th.Do(t, http.MethodPost, "/function/"+fn, []byte("trace"), http.Header{"Traceparent": {incoming}})
		got := strings.Trim(string(r.Body), `"`)
		if r.Status != 200 || !strings.HasPrefix(got, "00-"+traceID+"-") || got == incoming {
			t.Fatalf("%s: the worker got traceparent %q, want a child span of trace %s", fn, got, traceID)
		}
		var spans map[string]*tracepb.Span
		worker := map[string]string{"call": "call /baetyl.Function/Call", "stream": "stream InvocationRequest"}[fn]
		hosttest.WaitFor(t, 5*time.Second, "the spans at the OTLP receiver", func() bool {
			spans = recv.byName()
			return spans[worker] != nil && spans["invoke "+fn] != nil
		})
		server, inv, client := spans["POST /function/{name}"], spans["invoke "+fn], spans[worker]
		if server == nil || hex.EncodeToString(server.TraceId) != traceID || hex.EncodeToString(server.ParentSpanId) != parentSpan {
			t.Fatalf("%s: HTTP server span must continue the caller's trace: %v", fn, server)
		}
		if string(inv.ParentSpanId) != string(server.SpanId) || string(client.ParentSpanId) != string(inv.SpanId) {
			t.Errorf("%s: want HTTP server span → invocation → worker", fn)
		}
		if !strings.Contains(got, hex.EncodeToString(client.SpanId)) {
			t.Errorf("%s: the worker's traceparent %s does not name the worker span %x", fn, got, client.SpanId)
		}
		recv.mu.Lock()
		recv.spans = nil
		recv.mu.Unlock()
	}
}

// With export off (the default) the caller's trace context still reaches
// the worker.
func TestTraceContextCarriedWithoutExport(t *testing.T) {
	th := startHost(t, responseConfig)
	incoming := "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	for _, fn := range []string{"call", "stream"} {
		r := th.Do(t, http.MethodPost, "/function/"+fn, []byte("trace"), http.Header{"Traceparent": {incoming}})
		if got := strings.Trim(string(r.Body), `"`); r.Status != 200 || got != incoming {
			t.Errorf("%s: the worker got traceparent %q, want %q", fn, got, incoming)
		}
	}
}
