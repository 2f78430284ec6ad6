package polyfn

import (
	"context"
	"reflect"
	"testing"
	"time"

	"google.golang.org/grpc/metadata"

	rpc "github.com/polyfn/polyfn/api/azure"
	"github.com/polyfn/polyfn/api/baetyl"
)

// semanticCase is one row of the programming model, checked in both
// protocols: a function, a payload, what the host must see.
type semanticCase struct {
	name     string
	function string
	payload  string
	want     got
	jsonBody bool // compare the payload as JSON
}

var semanticTable = []semanticCase{
	{name: "JSON event", function: "event", payload: `{"a":1}`, jsonBody: true,
		want: got{Payload: `{"kind":"map[string]interface {}","value":{"a":1},"raw":"{\"a\":1}","empty":false,"isJSON":true,"decoded":{"a":1},"decodeError":false}`}},
	{name: "JSON array event", function: "event", payload: `[1,"x"]`, jsonBody: true,
		want: got{Payload: `{"kind":"[]interface {}","value":[1,"x"],"raw":"[1,\"x\"]","empty":false,"isJSON":true,"decoded":null,"decodeError":true}`}},
	{name: "JSON string event", function: "event", payload: `"s"`, jsonBody: true,
		want: got{Payload: `{"kind":"string","value":"s","raw":"\"s\"","empty":false,"isJSON":true,"decoded":null,"decodeError":true}`}},
	{name: "raw event", function: "event", payload: "hello world", jsonBody: true,
		want: got{Payload: `{"kind":"[]uint8","value":"hello world","raw":"hello world","empty":false,"isJSON":false,"decoded":null,"decodeError":true}`}},
	{name: "empty event is {}", function: "event", payload: "", jsonBody: true,
		want: got{Payload: `{"kind":"map[string]interface {}","value":{},"raw":"","empty":true,"isJSON":true,"decoded":{},"decodeError":false}`}},
	{name: "echo raw bytes", function: "echo", payload: "\x00\x01binary\xff", want: got{Payload: "\x00\x01binary\xff"}},
	{name: "echo JSON as sent", function: "echo", payload: ` {"a": 1} `, want: got{Payload: ` {"a": 1} `}},
	{name: "echo empty is {}", function: "echo", payload: "", want: got{Payload: "{}"}},
	{name: "nil is empty", function: "nil", want: got{Payload: ""}},
	{name: "bytes as is", function: "bytes", want: got{Payload: "\xff\x00r"}},
	{name: "string is a JSON string", function: "string", want: got{Payload: `"hi"`}},
	{name: "map is JSON", function: "map", jsonBody: true, want: got{Payload: `{"k":"v","n":1}`}},
	{name: "struct is JSON", function: "struct", want: got{Payload: `{"a":1,"b":["x"]}`}},
	{name: "*Response", function: "response",
		want: got{Payload: `{"ok":true}`, HTTP: true, Status: 201, Headers: map[string]string{"x-a": "b"}}},
	{name: "Response, default status", function: "response-value",
		want: got{Payload: "plain", HTTP: true, Status: 200, Headers: map[string]string{}}},
	{name: "Response with a bad status", function: "response-bad",
		want: got{ErrKind: kindReturn, ErrType: "InvalidResponse", ErrMsg: "response status 42 is outside 100-599"}},
	{name: "error", function: "error", want: got{ErrKind: kindInvoke, ErrType: "errorString", ErrMsg: "boom"}},
	{name: "error naming its type", function: "typed-error", want: got{ErrKind: kindInvoke, ErrType: "ValueError", ErrMsg: "bad value"}},
	{name: "wrapped error", function: "wrapped-error",
		want: got{ErrKind: kindInvoke, ErrType: "PathError", ErrMsg: "loading: open /x: file does not exist"}},
	{name: "panic", function: "panic", want: got{ErrKind: kindInvoke, ErrType: "Panic", ErrMsg: "kaboom"}},
	{name: "still serving after a panic", function: "string", want: got{Payload: `"hi"`}},
	{name: "unencodable result", function: "unencodable",
		want: got{ErrKind: kindReturn, ErrType: "UnsupportedTypeError", ErrMsg: "json: unsupported type: chan int"}},
	{name: "unknown function", function: "nope", want: got{NotFound: true, ErrMsg: "nope"}},
}

func checkOutcome(t *testing.T, c semanticCase, g got) {
	t.Helper()
	if c.jsonBody && g.Payload != "" && jsonEqual(g.Payload, c.want.Payload) {
		g.Payload = c.want.Payload
	}
	if !reflect.DeepEqual(g, c.want) {
		t.Errorf("%s (%s, payload %q):\n got %+v\nwant %+v", c.name, c.function, c.payload, g, c.want)
	}
}

func TestSemanticsCall(t *testing.T) {
	t.Parallel()
	functions := semanticFunctions()
	w := startCallFixture(t, dispatch(functions), names(functions))
	for _, c := range semanticTable {
		checkOutcome(t, c, w.invoke(t, c.function, []byte(c.payload)))
	}
	// Failures are logged, tagged with the invocation; the panic with its stack.
	r := w.logs.await(t, "the panic's stack", func(r logRecord) bool { return r.function == "panic" && !r.runtime })
	if r.level != levelError || r.invocationID != "inv-panic" || !containsAll(r.msg, "Panic: kaboom", "semanticFunctions") {
		t.Errorf("panic record = %+v", r)
	}
}

func TestSemanticsStream(t *testing.T) {
	t.Parallel()
	functions := semanticFunctions()
	w := startStreamFixture(t, dispatch(functions), names(functions))
	for i, c := range semanticTable {
		checkOutcome(t, c, w.invoke(t, "inv-"+string(rune('a'+i)), c.function, []byte(c.payload)))
	}
	// The panic's stack travels in the exception and in the logs.
	w.ts.send(t, invocationRequest("p2", "panic", nil, nil))
	ex := w.awaitResponse(t, "p2").GetResult().GetException()
	if !containsAll(ex.GetStackTrace(), "semanticFunctions", "goroutine") || containsAll(ex.GetStackTrace(), "runtime/debug.Stack") {
		t.Errorf("panic stack trace = %q", ex.GetStackTrace())
	}
	logs := w.ts.logs(func(l *rpc.RpcLog) bool { return l.GetInvocationId() == "p2" })
	if len(logs) != 1 || logs[0].GetLevel() != rpc.RpcLog_Error || !containsAll(logs[0].GetMessage(), "Panic: kaboom", "semanticFunctions") {
		t.Errorf("panic logs = %v", logs)
	}
}

// TestContextCall checks the invocation context in call mode: the message's
// fields, the polyfn-context-bin metadata, and the gRPC deadline.
func TestContextCall(t *testing.T) {
	t.Parallel()
	functions := semanticFunctions()
	w := startCallFixture(t, dispatch(functions), []string{"context"})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	host := `{"trigger":"http","deadline":"2030-01-01T00:00:00Z","unknown":1,` +
		`"http":{"method":"POST","path":"/function/context","query":{"a":"1"},"headers":{"content-type":"application/json"}}}`
	ctx = metadata.AppendToOutgoingContext(ctx, contextMetadataKey, host)
	msg := &baetyl.FunctionMessage{ID: 7, QOS: 1, Topic: "t/1", Timestamp: 1700000000, FunctionName: "context", FunctionInvokeID: "inv-ctx", Payload: []byte("{}")}
	g, err := w.call(t, ctx, msg)
	if err != nil {
		t.Fatal(err)
	}
	c := decodeContext(t, g.Payload)
	want := Context{FunctionName: "context", InvocationID: "inv-ctx", Trigger: "http", MessageQOS: 1, MessageTopic: "t/1",
		MessageID: 7, MessageTimestamp: 1700000000,
		HTTP: &HTTPRequest{Method: "POST", Path: "/function/context", Query: map[string]string{"a": "1"}, Headers: map[string]string{"content-type": "application/json"}}}
	checkContext(t, c.Context, want, 10*time.Second)
	if !c.CtxDeadline {
		t.Error("the handler's ctx deadline is not Context.Deadline")
	}

	// Without metadata or deadline: trigger invoke, no deadline.
	g, err = w.call(t, context.Background(), &baetyl.FunctionMessage{FunctionName: "context", FunctionInvokeID: "inv-2"})
	if err != nil {
		t.Fatal(err)
	}
	c = decodeContext(t, g.Payload)
	checkContext(t, c.Context, Context{FunctionName: "context", InvocationID: "inv-2", Trigger: "invoke"}, 0)
	if c.CtxDeadline {
		t.Error("ctx has a deadline without one")
	}
}

// TestContextStream checks the invocation context in stream mode, from
// trigger_metadata; the function name is the loaded one.
func TestContextStream(t *testing.T) {
	t.Parallel()
	functions := semanticFunctions()
	w := startStreamFixture(t, dispatch(functions), []string{"context"})
	deadline := time.Now().Add(10 * time.Second).UTC()
	str := func(s string) *rpc.TypedData { return &rpc.TypedData{Data: &rpc.TypedData_String_{String_: s}} }
	num := func(n int64) *rpc.TypedData { return &rpc.TypedData{Data: &rpc.TypedData_Int{Int: n}} }
	md := map[string]*rpc.TypedData{
		"trigger":          str("http"),
		"functionName":     str("ignored"),
		"messageID":        num(7),
		"messageQOS":       num(1),
		"messageTopic":     str("t/1"),
		"messageTimestamp": num(1700000000),
		"deadline":         str(deadline.Format(time.RFC3339Nano)),
		"http":             {Data: &rpc.TypedData_Json{Json: `{"method":"POST","path":"/function/context","query":{"a":"1"},"headers":{"content-type":"application/json"}}`}},
	}
	w.ts.send(t, invocationRequest("ctx-1", "context", nil, md))
	g := streamOutcome(t, w.awaitResponse(t, "ctx-1"))
	c := decodeContext(t, g.Payload)
	want := Context{FunctionName: "context", InvocationID: "ctx-1", Trigger: "http", MessageQOS: 1, MessageTopic: "t/1",
		MessageID: 7, MessageTimestamp: 1700000000, Deadline: deadline,
		HTTP: &HTTPRequest{Method: "POST", Path: "/function/context", Query: map[string]string{"a": "1"}, Headers: map[string]string{"content-type": "application/json"}}}
	checkContext(t, c.Context, want, 0)
	if !c.CtxDeadline {
		t.Error("the handler's ctx deadline is not Context.Deadline")
	}

	w.ts.send(t, invocationRequest("ctx-2", "context", nil, nil))
	c = decodeContext(t, streamOutcome(t, w.awaitResponse(t, "ctx-2")).Payload)
	checkContext(t, c.Context, Context{FunctionName: "context", InvocationID: "ctx-2", Trigger: "invoke"}, 0)
	if c.CtxDeadline {
		t.Error("ctx has a deadline without one")
	}
}

// TestContextScheduledTime checks that a timer invocation's tick reaches
// Context.ScheduledTime to the nanosecond, in both protocols.
func TestContextScheduledTime(t *testing.T) {
	t.Parallel()
	at := time.Date(2030, 1, 2, 3, 4, 5, 200_000_001, time.UTC)
	stamp := at.Format(time.RFC3339Nano)

	cw := startCallFixture(t, dispatch(semanticFunctions()), []string{"context"})
	ctx := metadata.AppendToOutgoingContext(context.Background(), contextMetadataKey, `{"trigger":"timer","scheduledTime":"`+stamp+`"}`)
	g, err := cw.call(t, ctx, &baetyl.FunctionMessage{FunctionName: "context", FunctionInvokeID: "tick-1", Timestamp: at.Unix()})
	if err != nil {
		t.Fatal(err)
	}
	if c := decodeContext(t, g.Payload).Context; c.Trigger != "timer" || !c.ScheduledTime.Equal(at) || c.MessageTimestamp != at.Unix() {
		t.Errorf("call: trigger %q, scheduled time %v, timestamp %d; want timer, %v, %d", c.Trigger, c.ScheduledTime, c.MessageTimestamp, at, at.Unix())
	}

	sw := startStreamFixture(t, dispatch(semanticFunctions()), []string{"context"})
	str := func(s string) *rpc.TypedData { return &rpc.TypedData{Data: &rpc.TypedData_String_{String_: s}} }
	sw.ts.send(t, invocationRequest("tick-2", "context", nil, map[string]*rpc.TypedData{
		"trigger": str("timer"), "scheduledTime": str(stamp), "messageTimestamp": {Data: &rpc.TypedData_Int{Int: at.Unix()}}}))
	if c := decodeContext(t, streamOutcome(t, sw.awaitResponse(t, "tick-2")).Payload).Context; c.Trigger != "timer" || !c.ScheduledTime.Equal(at) || c.MessageTimestamp != at.Unix() {
		t.Errorf("stream: trigger %q, scheduled time %v, timestamp %d; want timer, %v, %d", c.Trigger, c.ScheduledTime, c.MessageTimestamp, at, at.Unix())
	}
}

type contextResult struct {
	Context     Context `json:"context"`
	CtxDeadline bool    `json:"ctxDeadline"`
}

func decodeContext(t *testing.T, payload string) contextResult {
	t.Helper()
	var c contextResult
	if err := NewEvent([]byte(payload)).Decode(&c); err != nil {
		t.Fatalf("context result %q: %v", payload, err)
	}
	return c
}

// checkContext compares c with want; with within > 0, c.Deadline must be
// about that far ahead instead of equal.
func checkContext(t *testing.T, c, want Context, within time.Duration) {
	t.Helper()
	if within > 0 {
		if left := time.Until(c.Deadline); left <= 0 || left > within {
			t.Errorf("deadline %v is not within %v from now", c.Deadline, within)
		}
		c.Deadline = time.Time{}
	}
	if !c.Deadline.Equal(want.Deadline) {
		t.Errorf("deadline = %v, want %v", c.Deadline, want.Deadline)
	}
	c.Deadline, want.Deadline = time.Time{}, time.Time{}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("context:\n got %+v\nwant %+v", c, want)
	}
}
