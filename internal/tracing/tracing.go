// Package tracing sets up OpenTelemetry tracing from the standard OTEL_*
// environment variables. It is off unless asked for; the W3C trace context
// of incoming requests is carried to workers either way. While it is off the
// host starts no spans at all: the caller's trace context, when it sent one,
// goes to the workers unchanged.
package tracing

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.26.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/polyfn/polyfn/internal/buildinfo"
)

// Tracer is the host's tracer; it is a no-op until Setup enables export.
func Tracer() trace.Tracer { return otel.Tracer("github.com/polyfn/polyfn") }

// Propagator is the W3C trace-context propagator used for HTTP and workers.
var Propagator = propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})

// Enabled reports whether the environment asks for trace export:
// OTEL_TRACES_EXPORTER=otlp, or an OTLP endpoint set while
// OTEL_TRACES_EXPORTER is unset. OTEL_SDK_DISABLED=true turns it off.
func Enabled() bool {
	if os.Getenv("OTEL_SDK_DISABLED") == "true" {
		return false
	}
	switch os.Getenv("OTEL_TRACES_EXPORTER") {
	case "otlp":
		return true
	case "":
		return os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != ""
	}
	return false
}

// Setup installs the propagator and, when Enabled, an OTLP/HTTP exporter
// configured by the OTEL_EXPORTER_OTLP_* variables and a batching tracer
// provider. The returned function flushes and stops it.
func Setup(ctx context.Context) (shutdown func(context.Context) error, err error) {
	otel.SetTextMapPropagator(Propagator)
	switch e := os.Getenv("OTEL_TRACES_EXPORTER"); e {
	case "", "otlp", "none":
	default:
		return nil, fmt.Errorf("OTEL_TRACES_EXPORTER=%s: polyfn exports traces with otlp (or none)", e)
	}
	if !Enabled() {
		return func(context.Context) error { return nil }, nil
	}
	if p := os.Getenv("OTEL_EXPORTER_OTLP_PROTOCOL"); p != "" && p != "http/protobuf" {
		return nil, fmt.Errorf("OTEL_EXPORTER_OTLP_PROTOCOL=%s: polyfn exports traces over http/protobuf", p)
	}
	exp, err := otlptracehttp.New(ctx)
	if err != nil {
		return nil, fmt.Errorf("OTLP trace exporter: %w", err)
	}
	res, err := resource.Merge(resource.Default(), resource.NewSchemaless(
		semconv.ServiceVersion(buildinfo.Version),
	))
	if err != nil && !errors.Is(err, resource.ErrSchemaURLConflict) {
		return nil, err
	}
	if os.Getenv("OTEL_SERVICE_NAME") == "" {
		res, _ = resource.Merge(res, resource.NewSchemaless(semconv.ServiceName("polyfn")))
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	otel.SetTracerProvider(tp)
	return tp.Shutdown, nil
}

// Exporting reports whether spans are recorded and exported: Setup
// installed the SDK's tracer provider. When it is false the host starts no
// spans (they would record nothing) and only carries the caller's trace
// context.
func Exporting() bool {
	_, ok := otel.GetTracerProvider().(*sdktrace.TracerProvider)
	return ok
}

// Start starts a span of the given kind under the span in ctx, or, while
// trace export is off, none: it returns ctx unchanged and a no-op span, so
// the invocation path pays nothing for tracing it does not export.
func Start(ctx context.Context, name string, kind trace.SpanKind, attrs ...attribute.KeyValue) (context.Context, trace.Span) {
	if !Exporting() {
		return ctx, noop.Span{}
	}
	// A copy, so that attrs does not escape: callers' slices stay on the
	// stack when nothing is exported.
	return Tracer().Start(ctx, name, trace.WithSpanKind(kind), trace.WithAttributes(slices.Clone(attrs)...))
}

// TraceParent returns the W3C traceparent and tracestate of the span in
// ctx, empty when there is none.
func TraceParent(ctx context.Context) (parent, state string) {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return "", ""
	}
	carrier := propagation.MapCarrier{}
	propagation.TraceContext{}.Inject(ctx, carrier)
	return carrier["traceparent"], carrier["tracestate"]
}
