package polyfn

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	rpc "github.com/polyfn/polyfn/api/azure"
	"github.com/polyfn/polyfn/api/baetyl"
)

// barrier lets n invocations through only once all n are in their handler:
// if the worker ran them one at a time, the first would wait forever.
type barrier struct {
	n       int
	mu      sync.Mutex
	arrived int
	all     chan struct{}
}

func newBarrier(n int) *barrier { return &barrier{n: n, all: make(chan struct{})} }

func (b *barrier) handler(ctx context.Context, _ Event) (any, error) {
	b.mu.Lock()
	b.arrived++
	if b.arrived == b.n {
		close(b.all)
	}
	b.mu.Unlock()
	select {
	case <-b.all:
		return "through", nil
	case <-ctx.Done():
		return nil, fmt.Errorf("only %d of %d invocations in flight: %w", b.arrived, b.n, ctx.Err())
	}
}

const concurrentInvocations = 32

func TestConcurrencyCall(t *testing.T) {
	t.Parallel()
	b := newBarrier(concurrentInvocations)
	w := startCallFixture(t, b.handler, []string{"barrier"})
	results := make(chan got, concurrentInvocations)
	for range concurrentInvocations {
		go func() { results <- w.invoke(t, "barrier", nil) }()
	}
	for range concurrentInvocations {
		if g := receive(t, "a barrier invocation", results); g.Payload != `"through"` {
			t.Fatalf("barrier invocation = %+v", g)
		}
	}
}

func TestConcurrencyStream(t *testing.T) {
	t.Parallel()
	b := newBarrier(concurrentInvocations)
	w := startStreamFixture(t, b.handler, []string{"barrier"})
	for i := range concurrentInvocations {
		w.ts.send(t, invocationRequest(fmt.Sprint("b", i), "barrier", nil, nil))
	}
	for i := range concurrentInvocations {
		if g := streamOutcome(t, w.awaitResponse(t, fmt.Sprint("b", i))); g.Payload != `"through"` {
			t.Fatalf("barrier invocation %d = %+v", i, g)
		}
	}
}

// blocker is a function that reports when it starts and then waits for its
// ctx to end or for release.
type blocker struct {
	started  chan string
	ended    chan error // the ctx error the handler saw, nil when released
	release  chan struct{}
	ignoreCt bool // wait for release only, whatever ctx does
}

func newBlocker() *blocker {
	return &blocker{started: make(chan string, 16), ended: make(chan error, 16), release: make(chan struct{})}
}

func (b *blocker) handler(ctx context.Context, _ Event) (any, error) {
	b.started <- FromContext(ctx).InvocationID
	if b.ignoreCt {
		<-b.release
		b.ended <- nil
		return "released", nil
	}
	select {
	case <-b.release:
		b.ended <- nil
		return "released", nil
	case <-ctx.Done():
		b.ended <- ctx.Err()
		return nil, ctx.Err()
	}
}

func TestInvocationCancelStream(t *testing.T) {
	t.Parallel()
	b := newBlocker()
	functions := merge(semanticFunctions(), map[string]Handler{"block": b.handler})
	w := startStreamFixture(t, dispatch(functions), names(functions))
	w.ts.send(t, invocationRequest("c1", "block", nil, nil))
	if id := receive(t, "the invocation to start", b.started); id != "c1" {
		t.Fatalf("started %q", id)
	}
	w.ts.send(t, cancelMessage("c1"))
	if err := receive(t, "the handler to see the cancel", b.ended); !errors.Is(err, context.Canceled) {
		t.Fatalf("handler's ctx error = %v, want context.Canceled", err)
	}
	if r := w.awaitResponse(t, "c1"); r.GetResult().GetStatus() != rpc.StatusResult_Cancelled {
		t.Fatalf("response to a cancelled invocation = %v", r)
	}
	// A handler that returns normally after the cancel is still reported cancelled.
	stubborn := newBlocker()
	stubborn.ignoreCt = true
	functions["stubborn"] = stubborn.handler
	w.ts.send(t, &rpc.StreamingMessage{RequestId: "load-s", Content: &rpc.StreamingMessage_FunctionLoadRequest{
		FunctionLoadRequest: &rpc.FunctionLoadRequest{FunctionId: "id-stubborn", Metadata: &rpc.RpcFunctionMetadata{Name: "stubborn"}}}})
	w.ts.await(t, "the load of stubborn", func(m *rpc.StreamingMessage) bool { return m.GetRequestId() == "load-s" })
	w.ts.send(t, invocationRequest("c2", "stubborn", nil, nil))
	receive(t, "the stubborn invocation to start", stubborn.started)
	w.ts.send(t, cancelMessage("c2"))
	// A cancel for an invocation not in flight is ignored; the worker keeps serving.
	w.ts.send(t, cancelMessage("no-such-invocation"))
	if g := w.invoke(t, "after-cancel", "string", nil); g.Payload != `"hi"` {
		t.Fatalf("invocation after cancels = %+v", g)
	}
	close(stubborn.release)
	if r := w.awaitResponse(t, "c2"); r.GetResult().GetStatus() != rpc.StatusResult_Cancelled {
		t.Fatalf("response to a cancelled invocation that returned = %v", r)
	}
	if logs := w.ts.logs(func(l *rpc.RpcLog) bool { return l.GetInvocationId() == "c1" }); len(logs) != 0 {
		t.Errorf("a cancelled invocation logged an error: %v", logs)
	}
}

// TestCancelCall: the host cancelling the call (its timeout) cancels the
// handler's ctx.
func TestCancelCall(t *testing.T) {
	t.Parallel()
	b := newBlocker()
	w := startCallFixture(t, b.handler, []string{"block"})
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := w.call(t, ctx, &baetyl.FunctionMessage{FunctionName: "block", FunctionInvokeID: "c1"})
		errc <- err
	}()
	receive(t, "the invocation to start", b.started)
	cancel()
	if err := receive(t, "the handler to see the cancel", b.ended); !errors.Is(err, context.Canceled) {
		t.Fatalf("handler's ctx error = %v, want context.Canceled", err)
	}
	if err := receive(t, "the call to end", errc); status.Code(err) != codes.Canceled {
		t.Fatalf("call error = %v", err)
	}
}

// TestDeadlineCall: the gRPC deadline is the handler's ctx deadline.
func TestDeadlineCall(t *testing.T) {
	t.Parallel()
	b := newBlocker()
	functions := merge(semanticFunctions(), map[string]Handler{"block": b.handler})
	w := startCallFixture(t, dispatch(functions), names(functions))
	w.invoke(t, "string", nil) // the connection is ready: the next call's deadline is all the handler's
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	g, err := w.call(t, ctx, &baetyl.FunctionMessage{FunctionName: "block", FunctionInvokeID: "d1"})
	if status.Code(err) != codes.DeadlineExceeded && g.ErrKind != kindInvoke {
		t.Fatalf("call = %+v, %v; want the deadline", g, err)
	}
	// The server's deadline timer and the client's cancel (sent when its own
	// timer fires) race: the handler sees either.
	if err := receive(t, "the handler to see its deadline", b.ended); !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
		t.Fatalf("handler's ctx error = %v, want the deadline", err)
	}
}

// TestTerminateStream: WorkerTerminate stops taking invocations, lets the
// one in flight finish, closes the stream and makes Serve return nil.
func TestTerminateStream(t *testing.T) {
	t.Parallel()
	b := newBlocker()
	b.ignoreCt = true
	functions := merge(semanticFunctions(), map[string]Handler{"hold": b.handler})
	w := startStreamFixture(t, dispatch(functions), names(functions))
	w.ts.send(t, invocationRequest("h1", "hold", nil, nil))
	receive(t, "the invocation to start", b.started)
	w.ts.send(t, terminate(30*time.Second))
	w.ts.send(t, invocationRequest("late", "string", nil, nil))
	late := w.awaitResponse(t, "late").GetResult()
	if late.GetStatus() != rpc.StatusResult_Failure || late.GetException().GetType() != "WorkerStopping" {
		t.Fatalf("invocation after WorkerTerminate = %v", late)
	}
	select {
	case err := <-w.served:
		t.Fatalf("Serve returned with an invocation in flight: %v", err)
	default:
	}
	close(b.release)
	if g := streamOutcome(t, w.awaitResponse(t, "h1")); g.Payload != `"released"` {
		t.Fatalf("drained invocation = %+v", g)
	}
	if err := receive(t, "Serve to return", w.served); err != nil {
		t.Fatalf("Serve = %v, want nil", err)
	}
	w.served <- nil // for the cleanup
	if err := w.ts.awaitEnd(t); err == nil || !strings.Contains(err.Error(), "EOF") {
		t.Logf("stream end: %v", err)
	}
	w.logs.await(t, "stopped", func(r logRecord) bool { return r.runtime && r.msg == "stopped" })
}

// TestTerminateGraceStream: past the grace period, in-flight invocations
// have their ctx cancelled and the worker stops anyway.
func TestTerminateGraceStream(t *testing.T) {
	t.Parallel()
	b := newBlocker()
	w := startStreamFixture(t, b.handler, []string{"block"})
	w.ts.send(t, invocationRequest("g1", "block", nil, nil))
	receive(t, "the invocation to start", b.started)
	w.ts.send(t, terminate(50*time.Millisecond))
	if err := receive(t, "the handler's ctx to end", b.ended); !errors.Is(err, context.Canceled) {
		t.Fatalf("handler's ctx error = %v", err)
	}
	if err := receive(t, "Serve to return", w.served); err != nil {
		t.Fatalf("Serve = %v", err)
	}
	w.served <- nil
	w.ts.awaitEnd(t)
}

// TestStopStream: cancelling Serve's ctx (what SIGTERM does) drains too.
func TestStopStream(t *testing.T) {
	t.Parallel()
	b := newBlocker()
	w := startStreamFixture(t, b.handler, []string{"block"})
	w.ts.send(t, invocationRequest("s1", "block", nil, nil))
	receive(t, "the invocation to start", b.started)
	w.cancel()
	w.ts.await(t, "the stopping message", func(m *rpc.StreamingMessage) bool {
		return strings.HasPrefix(m.GetRpcLog().GetMessage(), "stopping")
	})
	close(b.release)
	if g := streamOutcome(t, w.awaitResponse(t, "s1")); g.Payload != `"released"` {
		t.Fatalf("drained invocation = %+v", g)
	}
	if err := receive(t, "Serve to return", w.served); err != nil {
		t.Fatalf("Serve = %v", err)
	}
	w.served <- nil
}

// TestStopCall: cancelling Serve's ctx (what SIGTERM does) refuses new calls
// and lets the one in flight finish.
func TestStopCall(t *testing.T) {
	t.Parallel()
	b := newBlocker()
	functions := merge(semanticFunctions(), map[string]Handler{"hold": b.handler})
	w := startCallFixture(t, dispatch(functions), names(functions))
	held := make(chan got, 1)
	go func() { held <- w.invoke(t, "hold", nil) }()
	receive(t, "the invocation to start", b.started)
	w.cancel()
	eventually(t, "new calls to be refused", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := w.client.Call(ctx, &baetyl.FunctionMessage{FunctionName: "string"})
		return status.Code(err) == codes.Unavailable
	})
	select {
	case err := <-w.served:
		t.Fatalf("Serve returned with a call in flight: %v", err)
	default:
	}
	close(b.release)
	if g := receive(t, "the held call", held); g.Payload != `"released"` {
		t.Fatalf("drained call = %+v", g)
	}
	if err := receive(t, "Serve to return", w.served); err != nil {
		t.Fatalf("Serve = %v", err)
	}
	w.served <- nil
}

// TestHostGoneStream: a stream the host ends is an error (the process
// exits 1).
func TestHostGoneStream(t *testing.T) {
	t.Parallel()
	w := startStreamFixture(t, semanticFunctions()["string"], []string{"string"})
	close(w.ts.hangup)
	err := receive(t, "Serve to return", w.served)
	if err == nil || !strings.Contains(err.Error(), "lost the stream") {
		t.Fatalf("Serve = %v, want a lost stream", err)
	}
	w.served <- nil
}

// TestTerminateThenHangUpStream: a host that ends the stream right after
// WorkerTerminate gets a clean stop.
func TestTerminateThenHangUpStream(t *testing.T) {
	t.Parallel()
	w := startStreamFixture(t, semanticFunctions()["string"], []string{"string"})
	w.ts.send(t, terminate(time.Second))
	close(w.ts.hangup)
	if err := receive(t, "Serve to return", w.served); err != nil {
		t.Fatalf("Serve = %v, want nil", err)
	}
	w.served <- nil
}

func TestNoHostStream(t *testing.T) {
	t.Parallel()
	host := startTestHost(t)
	args := host.args("w", "r")
	args[3] = "1" // --port 1: nothing listens there
	args[9] = "http://127.0.0.1:1/"
	err := serve(context.Background(), semanticFunctions()["nil"], args, &testLogs{})
	if err == nil || !strings.Contains(err.Error(), "127.0.0.1:1") {
		t.Fatalf("Serve = %v, want an error naming the host", err)
	}
}

// TestOtherMessagesStream: status, warm-up and unknown messages.
func TestOtherMessagesStream(t *testing.T) {
	t.Parallel()
	w := startStreamFixture(t, semanticFunctions()["string"], []string{"string"})
	w.ts.send(t, &rpc.StreamingMessage{RequestId: "st", Content: &rpc.StreamingMessage_WorkerStatusRequest{WorkerStatusRequest: &rpc.WorkerStatusRequest{}}})
	w.ts.await(t, "WorkerStatusResponse", func(m *rpc.StreamingMessage) bool {
		return m.GetRequestId() == "st" && m.GetWorkerStatusResponse() != nil
	})
	w.ts.send(t, &rpc.StreamingMessage{RequestId: "wu", Content: &rpc.StreamingMessage_WorkerWarmupRequest{WorkerWarmupRequest: &rpc.WorkerWarmupRequest{}}})
	wu := w.ts.await(t, "WorkerWarmupResponse", func(m *rpc.StreamingMessage) bool { return m.GetRequestId() == "wu" })
	if wu.GetWorkerWarmupResponse().GetResult().GetStatus() != rpc.StatusResult_Success {
		t.Fatalf("warm-up = %v", wu)
	}
	w.ts.send(t, &rpc.StreamingMessage{Content: &rpc.StreamingMessage_FileChangeEventRequest{FileChangeEventRequest: &rpc.FileChangeEventRequest{}}})
	if g := w.invoke(t, "x", "string", nil); g.Payload != `"hi"` {
		t.Fatalf("invocation = %+v", g)
	}
}

// ---- logs ----

func TestLogsCall(t *testing.T) {
	t.Parallel()
	functions := semanticFunctions()
	w := startCallFixture(t, dispatch(functions), names(functions))
	w.invoke(t, "log", nil)
	r := w.logs.await(t, "the function's info record", func(r logRecord) bool { return r.invocationID == "inv-log" && r.level == slog.LevelInfo })
	if r.function != "log" || r.runtime || r.msg != `hello from the function k="v w"` {
		t.Errorf("info record = %+v", r)
	}
	r = w.logs.await(t, "the function's warning", func(r logRecord) bool { return r.invocationID == "inv-log" && r.level == slog.LevelWarn })
	if r.msg != "careful n=1 g.x=true" {
		t.Errorf("warning record = %+v", r)
	}
	w.invoke(t, "error", nil)
	r = w.logs.await(t, "the error record", func(r logRecord) bool { return r.invocationID == "inv-error" })
	if r.level != slog.LevelError || r.msg != "errorString: boom" || r.function != "error" {
		t.Errorf("error record = %+v", r)
	}
	w.logs.await(t, "listening", func(r logRecord) bool { return r.runtime && strings.HasPrefix(r.msg, "listening on unix:") })
}

func TestLogsStream(t *testing.T) {
	t.Parallel()
	functions := semanticFunctions()
	w := startStreamFixture(t, dispatch(functions), names(functions))
	w.invoke(t, "l1", "log", nil)
	logs := w.ts.logs(func(l *rpc.RpcLog) bool { return l.GetInvocationId() == "l1" })
	if len(logs) != 2 {
		t.Fatalf("logs of the invocation = %v", logs)
	}
	info, warn := logs[0], logs[1]
	if info.GetLogCategory() != rpc.RpcLog_User || info.GetCategory() != "log" || info.GetLevel() != rpc.RpcLog_Information ||
		info.GetMessage() != `hello from the function k="v w"` {
		t.Errorf("info RpcLog = %v", info)
	}
	if warn.GetLevel() != rpc.RpcLog_Warning || warn.GetMessage() != "careful n=1 g.x=true" {
		t.Errorf("warning RpcLog = %v", warn)
	}
	// A function's records reach the host before its response.
	logAt := w.ts.index(func(m *rpc.StreamingMessage) bool { return m.GetRpcLog().GetInvocationId() == "l1" })
	respAt := w.ts.index(func(m *rpc.StreamingMessage) bool { return m.GetInvocationResponse().GetInvocationId() == "l1" })
	if logAt < 0 || respAt < logAt {
		t.Errorf("log at %d, response at %d", logAt, respAt)
	}
	// The SDK's own messages are System records.
	loaded := w.ts.logs(func(l *rpc.RpcLog) bool { return strings.HasPrefix(l.GetMessage(), "loaded function log") })
	if len(loaded) != 1 || loaded[0].GetLogCategory() != rpc.RpcLog_System || loaded[0].GetInvocationId() != "" {
		t.Errorf("runtime RpcLog = %v", loaded)
	}
	// Before the host's first message, records go to stderr.
	w.logs.await(t, "the start message on stderr", func(r logRecord) bool { return strings.Contains(r.msg, "starting in stream mode") })
}

// TestLoggerOutsideInvocation: Logger works without an invocation, and
// NewContext tags records.
func TestLoggerOutsideInvocation(t *testing.T) {
	logs := &testLogs{}
	ctx := withInvocation(context.Background(), &Context{FunctionName: "f", InvocationID: "i"}, logs)
	Logger(ctx).Error("failed", "err", errors.New("x y"), slog.Group("req", "id", 3, slog.Group("empty")))
	r, _ := logs.find(func(logRecord) bool { return true })
	if r.function != "f" || r.invocationID != "i" || r.level != slog.LevelError || r.msg != `failed err="x y" req.id=3` {
		t.Errorf("record = %+v", r)
	}
	if FromContext(context.Background()) != nil {
		t.Error("FromContext of a plain ctx is not nil")
	}
	if got := FromContext(NewContext(context.Background(), &Context{FunctionName: "g"})); got == nil || got.FunctionName != "g" {
		t.Errorf("FromContext(NewContext) = %v", got)
	}
	Logger(context.Background()).Debug("to stderr") // must not panic
}
