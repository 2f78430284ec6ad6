package polyfn

import (
	"context"
	"strconv"
	"testing"

	rpc "github.com/polyfn/polyfn/api/azure"
	"github.com/polyfn/polyfn/api/baetyl"
)

func noop(context.Context, Event) (any, error) { return nil, nil }

// BenchmarkCall is one no-op invocation at a time over a unix socket, call
// mode: the worker's share of a host's direct gRPC call.
func BenchmarkCall(b *testing.B) {
	w := startCallFixture(b, noop, []string{"noop"})
	w.invoke(b, "noop", nil)
	msg := &baetyl.FunctionMessage{FunctionName: "noop", FunctionInvokeID: "i", Payload: []byte(`{"a":1}`)}
	ctx := context.Background()
	for b.Loop() {
		if _, err := w.client.Call(ctx, msg); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCallParallel is no-op invocations from GOMAXPROCS×4 clients at
// once: throughput.
func BenchmarkCallParallel(b *testing.B) {
	w := startCallFixture(b, noop, []string{"noop"})
	w.invoke(b, "noop", nil)
	b.SetParallelism(4)
	b.RunParallel(func(pb *testing.PB) {
		msg := &baetyl.FunctionMessage{FunctionName: "noop", FunctionInvokeID: "i", Payload: []byte(`{"a":1}`)}
		for pb.Next() {
			if _, err := w.client.Call(context.Background(), msg); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkStream is one no-op invocation at a time over the stream (TCP
// loopback), measured at the host.
func BenchmarkStream(b *testing.B) {
	w := startStreamFixture(b, noop, []string{"noop"})
	at := 0
	i := 0
	for b.Loop() {
		id := strconv.Itoa(i)
		i++
		w.ts.send(b, invocationRequest(id, "noop", []byte(`{"a":1}`), nil))
		_, at = w.ts.awaitFrom(b, at, func(m *rpc.StreamingMessage) bool {
			return m.GetInvocationResponse().GetInvocationId() == id
		})
	}
}
