package polyfn

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	rpc "github.com/polyfn/polyfn/api/azure"
	"github.com/polyfn/polyfn/api/baetyl"
)

// waitTimeout bounds every wait of the tests: they poll until a condition
// holds and fail when it does not hold in time.
const waitTimeout = 15 * time.Second

// eventually polls cond until it holds, failing the test after waitTimeout.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// receive waits for a value on ch, failing the test after waitTimeout.
func receive[T any](t testing.TB, what string, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(waitTimeout):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

// shortTempDir is a temporary directory with a short path, for unix sockets.
func shortTempDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "pfsdk")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// testLogs is a logSink that keeps every record.
type testLogs struct {
	mu      sync.Mutex
	records []logRecord
}

func (l *testLogs) emit(r logRecord) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.records = append(l.records, r)
}

func (l *testLogs) find(match func(logRecord) bool) (logRecord, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, r := range l.records {
		if match(r) {
			return r, true
		}
	}
	return logRecord{}, false
}

func (l *testLogs) await(t testing.TB, what string, match func(logRecord) bool) logRecord {
	t.Helper()
	var r logRecord
	eventually(t, "log record: "+what, func() bool {
		var ok bool
		r, ok = l.find(match)
		return ok
	})
	return r
}

// got is what a host sees of one invocation, in either protocol.
type got struct {
	Payload  string
	HTTP     bool
	Status   int
	Headers  map[string]string
	ErrKind  string // UserCodeInvoke, UserCodeReturn
	ErrType  string
	ErrMsg   string
	NotFound bool
}

// ---- semantic functions, shared by both protocols ----

type valueError struct{ msg string }

func (e *valueError) Error() string     { return e.msg }
func (e *valueError) ErrorType() string { return "ValueError" }

// eventDescription is what the "event" function reports of its event.
type eventDescription struct {
	Kind        string         `json:"kind"`
	Value       any            `json:"value"`
	Raw         string         `json:"raw"`
	Empty       bool           `json:"empty"`
	IsJSON      bool           `json:"isJSON"`
	Decoded     map[string]any `json:"decoded"`
	DecodeError bool           `json:"decodeError"`
}

func describeEvent(ev Event) eventDescription {
	v := ev.Value()
	d := eventDescription{Kind: fmt.Sprintf("%T", v), Value: v, Raw: string(ev.Raw()), Empty: ev.Empty(), IsJSON: ev.IsJSON()}
	if b, ok := v.([]byte); ok {
		d.Value = string(b)
	}
	if err := ev.Decode(&d.Decoded); err != nil {
		d.DecodeError = true
		d.Decoded = nil
	}
	return d
}

// semanticFunctions are the functions of the semantic table, by name.
func semanticFunctions() map[string]Handler {
	return map[string]Handler{
		"event":  func(_ context.Context, ev Event) (any, error) { return describeEvent(ev), nil },
		"echo":   func(_ context.Context, ev Event) (any, error) { return ev, nil },
		"nil":    func(context.Context, Event) (any, error) { return nil, nil },
		"bytes":  func(context.Context, Event) (any, error) { return []byte{0xff, 0x00, 'r'}, nil },
		"string": func(context.Context, Event) (any, error) { return "hi", nil },
		"map":    func(context.Context, Event) (any, error) { return map[string]any{"k": "v", "n": 1}, nil },
		"struct": func(context.Context, Event) (any, error) {
			return struct {
				A int      `json:"a"`
				B []string `json:"b"`
			}{1, []string{"x"}}, nil
		},
		"response": func(context.Context, Event) (any, error) {
			return &Response{Status: 201, Header: map[string]string{"x-a": "b"}, Body: map[string]bool{"ok": true}}, nil
		},
		"response-value": func(context.Context, Event) (any, error) { return Response{Body: []byte("plain")}, nil },
		"response-bad":   func(context.Context, Event) (any, error) { return &Response{Status: 42}, nil },
		"context": func(ctx context.Context, _ Event) (any, error) {
			c := FromContext(ctx)
			d, ok := ctx.Deadline()
			return map[string]any{"context": c, "ctxDeadline": ok && d.Equal(c.Deadline)}, nil
		},
		"error":       func(context.Context, Event) (any, error) { return nil, errors.New("boom") },
		"typed-error": func(context.Context, Event) (any, error) { return nil, &valueError{"bad value"} },
		"wrapped-error": func(context.Context, Event) (any, error) {
			return nil, fmt.Errorf("loading: %w", &fs.PathError{Op: "open", Path: "/x", Err: fs.ErrNotExist})
		},
		"panic":       func(context.Context, Event) (any, error) { panic("kaboom") },
		"unencodable": func(context.Context, Event) (any, error) { return make(chan int), nil },
		"log": func(ctx context.Context, _ Event) (any, error) {
			Logger(ctx).Info("hello from the function", "k", "v w")
			Logger(ctx).With("n", 1).WithGroup("g").Warn("careful", "x", true)
			return "logged", nil
		},
	}
}

// dispatch is a handler that runs functions[FunctionName].
func dispatch(functions map[string]Handler) Handler {
	return func(ctx context.Context, ev Event) (any, error) {
		name := FromContext(ctx).FunctionName
		if f, ok := functions[name]; ok {
			return f(ctx, ev)
		}
		return nil, fmt.Errorf("test handler has no function %q", name)
	}
}

func merge(maps ...map[string]Handler) map[string]Handler {
	out := map[string]Handler{}
	for _, m := range maps {
		for k, v := range m {
			out[k] = v
		}
	}
	return out
}

func names(functions map[string]Handler) []string {
	var out []string
	for name := range functions {
		out = append(out, name)
	}
	return out
}

// jsonEqual compares two JSON texts as values.
func jsonEqual(a, b string) bool {
	var va, vb any
	if json.Unmarshal([]byte(a), &va) != nil || json.Unmarshal([]byte(b), &vb) != nil {
		return false
	}
	return reflect.DeepEqual(va, vb)
}

// ---- call mode: a worker served in-process and a Baetyl client ----

type callFixture struct {
	client baetyl.FunctionClient
	logs   *testLogs
	cancel context.CancelFunc
	served chan error
}

// startCallFixture serves h in call mode on a unix socket, for the functions
// given, through Serve's own argument and config handling.
func startCallFixture(t testing.TB, h Handler, functions []string) *callFixture {
	t.Helper()
	dir := shortTempDir(t)
	sock := dir + "/w.sock"
	config := "name: test-worker\nfunctions:\n"
	for _, f := range functions {
		config += fmt.Sprintf("  - name: %q\n    handler: main.handler\n    codedir: .\n", f)
	}
	config += fmt.Sprintf("server:\n  address: unix:%s\n  grace: 30\n", sock)
	path := dir + "/service.yml"
	if err := os.WriteFile(path, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	w := &callFixture{logs: &testLogs{}, served: make(chan error, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	w.cancel = cancel
	go func() { w.served <- serve(ctx, h, []string{"-c", path}, w.logs) }()
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	w.client = baetyl.NewFunctionClient(conn)
	t.Cleanup(func() {
		cancel()
		conn.Close()
		select {
		case <-w.served:
		case <-time.After(waitTimeout):
			t.Error("Serve did not return after its context was cancelled")
		}
	})
	return w
}

// call invokes a function and reports what the host sees.
func (w *callFixture) call(t testing.TB, ctx context.Context, msg *baetyl.FunctionMessage, opts ...grpc.CallOption) (got, error) {
	t.Helper()
	var header metadata.MD
	opts = append(opts, grpc.WaitForReady(true), grpc.Header(&header))
	out, err := w.client.Call(ctx, msg, opts...)
	if err != nil {
		st := status.Convert(err)
		if st.Code() != codes.Unknown {
			return got{}, err
		}
		return parseCallError(t, st.Message()), nil
	}
	g := got{Payload: string(out.Payload)}
	if v := header.Get(responseMetadataKey); len(v) > 0 {
		var meta struct {
			Status  int               `json:"status"`
			Headers map[string]string `json:"headers"`
		}
		if err := json.Unmarshal([]byte(v[0]), &meta); err != nil {
			t.Fatalf("%s metadata %q: %v", responseMetadataKey, v[0], err)
		}
		g.HTTP, g.Status, g.Headers = true, meta.Status, meta.Headers
	}
	return g, nil
}

var callErrorRE = regexp.MustCompile(`(?s)^\[(UserCode\w+)\] ([A-Za-z_][\w.]*): (.*)$`)

func parseCallError(t testing.TB, msg string) got {
	t.Helper()
	if m := callErrorRE.FindStringSubmatch(msg); m != nil {
		return got{ErrKind: m[1], ErrType: m[2], ErrMsg: m[3]}
	}
	if name, ok := strings.CutPrefix(msg, "function not found: "); ok {
		return got{NotFound: true, ErrMsg: name}
	}
	t.Fatalf("unexpected call error details %q", msg)
	return got{}
}

// invoke runs function with payload.
func (w *callFixture) invoke(t testing.TB, function string, payload []byte) got {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	g, err := w.call(t, ctx, &baetyl.FunctionMessage{FunctionName: function, FunctionInvokeID: "inv-" + function, Payload: payload})
	if err != nil {
		t.Fatalf("call %s: %v", function, err)
	}
	return g
}

// ---- stream mode: a host served in-process by grpc-go ----

// testHost is the host side of the stream protocol.
type testHost struct {
	rpc.UnimplementedFunctionRpcServer
	addr    *net.TCPAddr
	streams chan *testStream
}

func startTestHost(t testing.TB) *testHost {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := &testHost{addr: lis.Addr().(*net.TCPAddr), streams: make(chan *testStream, 4)}
	srv := grpc.NewServer(grpc.MaxRecvMsgSize(maxMessageSize), grpc.MaxSendMsgSize(maxMessageSize))
	rpc.RegisterFunctionRpcServer(srv, h)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	return h
}

// args are the launch arguments the host passes, in both spellings.
func (h *testHost) args(workerID, requestID string) []string {
	port := strconv.Itoa(h.addr.Port)
	return []string{
		"--host", "127.0.0.1", "--port", port, "--workerId", workerID, "--requestId", requestID,
		"--grpcMaxMessageLength", "2147483647",
		"--functions-uri", "http://127.0.0.1:" + port + "/", "--functions-worker-id", workerID,
		"--functions-request-id", requestID, "--functions-grpc-max-message-length", "2147483647",
	}
}

func (h *testHost) EventStream(s rpc.FunctionRpc_EventStreamServer) error {
	ts := &testStream{srv: s, changed: make(chan struct{}), hangup: make(chan struct{})}
	h.streams <- ts
	recvDone := make(chan struct{})
	go func() {
		defer close(recvDone)
		for {
			m, err := s.Recv()
			if err != nil {
				ts.end(err)
				return
			}
			ts.add(m)
		}
	}()
	select {
	case <-recvDone:
	case <-ts.hangup:
	}
	return nil
}

func (h *testHost) accept(t testing.TB) *testStream {
	t.Helper()
	return receive(t, "the worker's stream", h.streams)
}

// testStream is one worker's stream, seen from the host.
type testStream struct {
	srv    rpc.FunctionRpc_EventStreamServer
	sendMu sync.Mutex
	hangup chan struct{}

	mu      sync.Mutex
	msgs    []*rpc.StreamingMessage
	ended   bool
	endErr  error
	changed chan struct{} // closed and replaced on every change
}

func (s *testStream) add(m *rpc.StreamingMessage) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.msgs = append(s.msgs, m)
	close(s.changed)
	s.changed = make(chan struct{})
}

func (s *testStream) end(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ended, s.endErr = true, err
	close(s.changed)
	s.changed = make(chan struct{})
}

func (s *testStream) send(t testing.TB, m *rpc.StreamingMessage) {
	t.Helper()
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	if err := s.srv.Send(m); err != nil {
		t.Fatalf("host send: %v", err)
	}
}

// await returns the first message received so far or later that matches.
func (s *testStream) await(t testing.TB, what string, match func(*rpc.StreamingMessage) bool) *rpc.StreamingMessage {
	t.Helper()
	deadline := time.After(waitTimeout)
	seen := 0
	for {
		s.mu.Lock()
		msgs, changed, ended := s.msgs, s.changed, s.ended
		s.mu.Unlock()
		for _, m := range msgs[seen:] {
			if match(m) {
				return m
			}
		}
		seen = len(msgs)
		if ended {
			t.Fatalf("the worker ended the stream before %s", what)
		}
		select {
		case <-changed:
		case <-deadline:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// awaitFrom is await over the messages from position from on; it returns
// the message and its position.
func (s *testStream) awaitFrom(t testing.TB, from int, match func(*rpc.StreamingMessage) bool) (*rpc.StreamingMessage, int) {
	t.Helper()
	deadline := time.After(waitTimeout)
	for {
		s.mu.Lock()
		msgs, changed := s.msgs, s.changed
		s.mu.Unlock()
		for i := from; i < len(msgs); i++ {
			if match(msgs[i]) {
				return msgs[i], i
			}
		}
		from = len(msgs)
		select {
		case <-changed:
		case <-deadline:
			t.Fatal("timed out waiting for a message")
		}
	}
}

// index is the position of the first message that matches, or -1.
func (s *testStream) index(match func(*rpc.StreamingMessage) bool) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, m := range s.msgs {
		if match(m) {
			return i
		}
	}
	return -1
}

// awaitEnd waits until the worker has closed its side of the stream.
func (s *testStream) awaitEnd(t testing.TB) error {
	t.Helper()
	eventually(t, "the worker to close the stream", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.ended
	})
	return s.endErr
}

func (s *testStream) logs(match func(*rpc.RpcLog) bool) []*rpc.RpcLog {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*rpc.RpcLog
	for _, m := range s.msgs {
		if l := m.GetRpcLog(); l != nil && match(l) {
			out = append(out, l)
		}
	}
	return out
}

// handshake plays the host's side of the lifecycle up to loading the
// functions (one FunctionLoadRequest for the first, a collection for the
// rest). Each function id is "id-<name>".
func handshake(t testing.TB, ts *testStream, workerID, requestID string, functions []string) {
	t.Helper()
	start := ts.await(t, "StartStream", func(m *rpc.StreamingMessage) bool { return m.GetStartStream() != nil })
	if start.GetStartStream().GetWorkerId() != workerID || start.GetRequestId() != requestID {
		t.Fatalf("StartStream = %v, want worker %s request %s", start, workerID, requestID)
	}
	ts.send(t, &rpc.StreamingMessage{RequestId: "init", Content: &rpc.StreamingMessage_WorkerInitRequest{
		WorkerInitRequest: &rpc.WorkerInitRequest{HostVersion: "test", Capabilities: map[string]string{"RpcHttpBodyOnly": "true"}}}})
	init := ts.await(t, "WorkerInitResponse", func(m *rpc.StreamingMessage) bool { return m.GetWorkerInitResponse() != nil })
	ir := init.GetWorkerInitResponse()
	if init.GetRequestId() != "init" || ir.GetResult().GetStatus() != rpc.StatusResult_Success {
		t.Fatalf("WorkerInitResponse = %v", init)
	}
	for _, c := range []string{"HandlesInvocationCancelMessage", "HandlesWorkerTerminateMessage", "polyfn"} {
		if ir.GetCapabilities()[c] == "" {
			t.Errorf("capability %s not advertised: %v", c, ir.GetCapabilities())
		}
	}
	if ir.GetWorkerMetadata().GetRuntimeName() != "go" {
		t.Errorf("worker metadata = %v", ir.GetWorkerMetadata())
	}
	ts.send(t, &rpc.StreamingMessage{RequestId: "meta", Content: &rpc.StreamingMessage_FunctionsMetadataRequest{
		FunctionsMetadataRequest: &rpc.FunctionsMetadataRequest{FunctionAppDirectory: "."}}})
	meta := ts.await(t, "FunctionMetadataResponse", func(m *rpc.StreamingMessage) bool { return m.GetFunctionMetadataResponse() != nil })
	if !meta.GetFunctionMetadataResponse().GetUseDefaultMetadataIndexing() || meta.GetRequestId() != "meta" {
		t.Fatalf("FunctionMetadataResponse = %v", meta)
	}
	if len(functions) == 0 {
		return
	}
	load := func(name string) *rpc.FunctionLoadRequest {
		return &rpc.FunctionLoadRequest{FunctionId: "id-" + name, Metadata: &rpc.RpcFunctionMetadata{
			Name: name, Directory: ".", EntryPoint: "main", Language: "go",
			Bindings: map[string]*rpc.BindingInfo{
				"event":   {Type: "polyfn", Direction: rpc.BindingInfo_in, DataType: rpc.BindingInfo_binary},
				"$return": {Type: "polyfn", Direction: rpc.BindingInfo_out, DataType: rpc.BindingInfo_binary},
			},
			Properties: map[string]string{"polyfn": "1"},
		}}
	}
	ts.send(t, &rpc.StreamingMessage{RequestId: "load-0", Content: &rpc.StreamingMessage_FunctionLoadRequest{FunctionLoadRequest: load(functions[0])}})
	lr := ts.await(t, "FunctionLoadResponse", func(m *rpc.StreamingMessage) bool { return m.GetRequestId() == "load-0" })
	if r := lr.GetFunctionLoadResponse(); r.GetFunctionId() != "id-"+functions[0] || r.GetResult().GetStatus() != rpc.StatusResult_Success {
		t.Fatalf("FunctionLoadResponse = %v", lr)
	}
	if len(functions) == 1 {
		return
	}
	var loads []*rpc.FunctionLoadRequest
	for _, name := range functions[1:] {
		loads = append(loads, load(name))
	}
	ts.send(t, &rpc.StreamingMessage{RequestId: "load-c", Content: &rpc.StreamingMessage_FunctionLoadRequestCollection{
		FunctionLoadRequestCollection: &rpc.FunctionLoadRequestCollection{FunctionLoadRequests: loads}}})
	lc := ts.await(t, "FunctionLoadResponseCollection", func(m *rpc.StreamingMessage) bool { return m.GetRequestId() == "load-c" })
	responses := lc.GetFunctionLoadResponseCollection().GetFunctionLoadResponses()
	if len(responses) != len(loads) {
		t.Fatalf("FunctionLoadResponseCollection = %v", lc)
	}
	for _, r := range responses {
		if r.GetResult().GetStatus() != rpc.StatusResult_Success {
			t.Fatalf("FunctionLoadResponse = %v", r)
		}
	}
}

type streamFixture struct {
	ts     *testStream
	logs   *testLogs
	cancel context.CancelFunc
	served chan error
}

// startStreamFixture serves h in stream mode against an in-test host and
// loads the functions given.
func startStreamFixture(t testing.TB, h Handler, functions []string) *streamFixture {
	t.Helper()
	host := startTestHost(t)
	w := &streamFixture{logs: &testLogs{}, served: make(chan error, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	w.cancel = cancel
	go func() { w.served <- serve(ctx, h, host.args("worker-1", "req-1"), w.logs) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-w.served:
		case <-time.After(waitTimeout):
			t.Error("Serve did not return after its context was cancelled")
		}
	})
	w.ts = host.accept(t)
	handshake(t, w.ts, "worker-1", "req-1", functions)
	return w
}

// invocation builds a polyfn InvocationRequest as the host sends it.
func invocationRequest(id, function string, payload []byte, md map[string]*rpc.TypedData) *rpc.StreamingMessage {
	return &rpc.StreamingMessage{RequestId: "r-" + id, Content: &rpc.StreamingMessage_InvocationRequest{
		InvocationRequest: &rpc.InvocationRequest{
			InvocationId:    id,
			FunctionId:      "id-" + function,
			InputData:       []*rpc.ParameterBinding{{Name: "event", RpcData: &rpc.ParameterBinding_Data{Data: &rpc.TypedData{Data: &rpc.TypedData_Bytes{Bytes: payload}}}}},
			TriggerMetadata: md,
		}}}
}

func (w *streamFixture) awaitResponse(t testing.TB, id string) *rpc.InvocationResponse {
	t.Helper()
	m := w.ts.await(t, "InvocationResponse "+id, func(m *rpc.StreamingMessage) bool {
		return m.GetInvocationResponse().GetInvocationId() == id
	})
	if m.GetRequestId() != "r-"+id {
		t.Errorf("InvocationResponse %s has request id %q, want %q", id, m.GetRequestId(), "r-"+id)
	}
	return m.GetInvocationResponse()
}

// invoke runs function with payload and reports what the host sees.
func (w *streamFixture) invoke(t testing.TB, id, function string, payload []byte) got {
	t.Helper()
	w.ts.send(t, invocationRequest(id, function, payload, map[string]*rpc.TypedData{"trigger": {Data: &rpc.TypedData_String_{String_: "invoke"}}}))
	return streamOutcome(t, w.awaitResponse(t, id))
}

func streamOutcome(t testing.TB, r *rpc.InvocationResponse) got {
	t.Helper()
	res := r.GetResult()
	switch res.GetStatus() {
	case rpc.StatusResult_Success:
		if h := r.GetReturnValue().GetHttp(); h != nil {
			status, err := strconv.Atoi(h.GetStatusCode())
			if err != nil {
				t.Fatalf("status code %q", h.GetStatusCode())
			}
			headers := h.GetHeaders()
			if headers == nil {
				headers = map[string]string{} // an empty map does not travel
			}
			return got{Payload: string(h.GetBody().GetBytes()), HTTP: true, Status: status, Headers: headers}
		}
		if r.GetReturnValue() != nil && r.GetReturnValue().GetData() == nil {
			t.Errorf("return value without data: %v", r)
		}
		return got{Payload: string(r.GetReturnValue().GetBytes())}
	case rpc.StatusResult_Failure:
		ex := res.GetException()
		if ex.GetType() == "FunctionNotFound" {
			// The message names the function id, "id-<name>" in these tests.
			id, _ := strings.CutPrefix(ex.GetMessage(), "function not found: ")
			return got{NotFound: true, ErrMsg: strings.TrimPrefix(id, "id-")}
		}
		kind := kindInvoke
		if ex.GetSource() == kindReturn {
			kind = kindReturn
		}
		if !ex.GetIsUserException() {
			t.Errorf("exception %v is not a user exception", ex)
		}
		return got{ErrKind: kind, ErrType: ex.GetType(), ErrMsg: ex.GetMessage()}
	}
	t.Fatalf("unexpected result %v", res)
	return got{}
}

func terminate(grace time.Duration) *rpc.StreamingMessage {
	return &rpc.StreamingMessage{Content: &rpc.StreamingMessage_WorkerTerminate{WorkerTerminate: &rpc.WorkerTerminate{GracePeriod: durationpb.New(grace)}}}
}

func cancelMessage(id string) *rpc.StreamingMessage {
	return &rpc.StreamingMessage{Content: &rpc.StreamingMessage_InvocationCancel{InvocationCancel: &rpc.InvocationCancel{InvocationId: id}}}
}

const levelError = slog.LevelError

func containsAll(s string, parts ...string) bool {
	for _, p := range parts {
		if !strings.Contains(s, p) {
			return false
		}
	}
	return true
}

func writeFile(t testing.TB, path, text string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
}
