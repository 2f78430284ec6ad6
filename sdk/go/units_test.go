package polyfn

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestParseLaunch(t *testing.T) {
	t.Parallel()
	stream := func(host string, port int, worker, request string, max int) *streamOptions {
		return &streamOptions{host: host, port: port, workerID: worker, requestID: request, maxMessage: max}
	}
	tests := []struct {
		args    []string
		env     string // POLYFN_WORKER_ID
		want    launch
		wantErr string
	}{
		{args: nil, want: launch{config: defaultConfigPath}},
		{args: []string{"-c", "s.yml"}, want: launch{config: "s.yml"}},
		{args: []string{"--config=s.yml", "extra", "--verbose"}, want: launch{config: "s.yml", unknown: []string{"extra", "--verbose"}}},
		{args: []string{"--host", "127.0.0.1", "--port", "5000", "--workerId", "w", "--requestId", "r", "--grpcMaxMessageLength", "2147483647"},
			want: launch{config: defaultConfigPath, stream: stream("127.0.0.1", 5000, "w", "r", maxMessageSize)}},
		{args: []string{"--functions-uri", "http://127.0.0.1:5001/", "--functions-worker-id", "w", "--functions-request-id", "r",
			"--functions-grpc-max-message-length", "1048576"},
			want: launch{config: defaultConfigPath, stream: stream("127.0.0.1", 5001, "w", "r", 1<<20)}},
		{args: []string{"--host=::1", "--port=5000", "--workerId=w", "--functions-uri", "http://127.0.0.1:1/"},
			want: launch{config: defaultConfigPath, stream: stream("::1", 5000, "w", "", maxMessageSize)}},
		{args: []string{"--functions-uri", "127.0.0.1:5002", "--functions-worker-id", "w", "--grpcMaxMessageLength", "99999999999"},
			want: launch{config: defaultConfigPath, stream: stream("127.0.0.1", 5002, "w", "", maxMessageSize)}},
		{args: []string{"--host", "127.0.0.1", "--workerId", "w"}, wantErr: "--host and --port go together"},
		{args: []string{"--host", "h", "--port", "x", "--workerId", "w"}, wantErr: "not a number"},
		{args: []string{"--host", "h", "--port", "70000", "--workerId", "w"}, wantErr: "out of range"},
		{args: []string{"--host", "h", "--port", "1"}, wantErr: "needs a worker id"},
		// polyfn's host passes the worker id in the environment; an argument wins.
		{args: []string{"--host", "h", "--port", "1"}, env: "e",
			want: launch{config: defaultConfigPath, stream: stream("h", 1, "e", "", maxMessageSize)}},
		{args: []string{"--host", "h", "--port", "1", "--workerId", "a"}, env: "e",
			want: launch{config: defaultConfigPath, stream: stream("h", 1, "a", "", maxMessageSize)}},
		{args: []string{"--functions-uri", "http://nohost/", "--workerId", "w"}, wantErr: "expected http://HOST:PORT/"},
		{args: []string{"-c"}, wantErr: "needs a value"},
		{args: []string{"--host", "h", "--port", "1", "--workerId", "w", "--grpcMaxMessageLength", "0"}, wantErr: "must be a positive number"},
	}
	for _, tt := range tests {
		got, err := parseLaunch(tt.args, tt.env)
		if tt.wantErr != "" {
			var usage *usageError
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !errors.As(err, &usage) {
				t.Errorf("parseLaunch(%q) error = %v, want a usage error with %q", tt.args, err, tt.wantErr)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("parseLaunch(%q) = %+v, %v; want %+v", tt.args, got, err, tt.want)
		}
	}
	if got := stream("::1", 5, "w", "", 1).target(); got != "[::1]:5" {
		t.Errorf("target = %q", got)
	}
}

func TestParseCallConfig(t *testing.T) {
	t.Setenv(addressEnv, "")
	t.Setenv(nameEnv, "")
	cfg, err := parseCallConfig([]byte("name: n\nfunctions:\n  - {name: a, handler: x.y}\n  - {name: b}\nserver: {address: 'unix:/s', grace: 1.5, engine: x}\nextra: 1\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := callConfig{name: "n", functions: map[string]bool{"a": true, "b": true}, address: "unix:/s", grace: 1500 * time.Millisecond}
	if !reflect.DeepEqual(cfg, want) {
		t.Errorf("config = %+v, want %+v", cfg, want)
	}
	t.Setenv(addressEnv, "127.0.0.1:9")
	t.Setenv(nameEnv, "inst")
	cfg, err = parseCallConfig([]byte("functions: [{name: a}]\n"))
	if err != nil || cfg.address != "127.0.0.1:9" || cfg.name != "inst" || cfg.grace != defaultGrace {
		t.Errorf("config with environment = %+v, %v", cfg, err)
	}
	for text, wantErr := range map[string]string{
		"name: n\n":                                   "functions: required",
		"functions: [{handler: x}]\n":                 "functions[0].name: required",
		"functions: [{name: a}, {name: a}]\n":         "duplicate function name",
		"functions: [{name: a}]\nserver: {grace: -1}": "server.grace",
		"functions: {name: a}\n":                      "invalid config",
	} {
		if _, err := parseCallConfig([]byte(text)); err == nil || !strings.Contains(err.Error(), wantErr) {
			t.Errorf("parseCallConfig(%q) = %v, want %q", text, err, wantErr)
		}
	}
}

func TestServeCallErrors(t *testing.T) {
	t.Setenv(addressEnv, "")
	h := func(context.Context, Event) (any, error) { return nil, nil }
	dir := t.TempDir()
	err := serve(context.Background(), h, []string{"-c", dir + "/missing.yml"}, &testLogs{})
	if err == nil || !strings.Contains(err.Error(), "missing.yml") {
		t.Errorf("missing config: %v", err)
	}
	path := dir + "/s.yml"
	writeFile(t, path, "functions: [{name: a}]\n")
	var usage *usageError
	if err := serve(context.Background(), h, []string{"-c", path}, &testLogs{}); !errors.As(err, &usage) || !strings.Contains(err.Error(), addressEnv) {
		t.Errorf("no address: %v", err)
	}
	writeFile(t, path, "functions: [{name: a}]\nserver: {address: 'unix:"+dir+"/no/such/dir/s.sock'}\n")
	if err := serve(context.Background(), h, []string{"-c", path}, &testLogs{}); err == nil || !strings.Contains(err.Error(), "cannot listen") {
		t.Errorf("bad address: %v", err)
	}
	if err := serve(context.Background(), nil, nil, &testLogs{}); err == nil {
		t.Error("nil handler accepted")
	}
}

// TestServeCallTCP serves on BAETYL_SERVICE_INSTANCE_ADDRESS, a TCP address.
func TestServeCallTCP(t *testing.T) {
	t.Setenv(addressEnv, "127.0.0.1:0")
	h := func(context.Context, Event) (any, error) { return "tcp", nil }
	dir := t.TempDir()
	writeFile(t, dir+"/s.yml", "functions: [{name: a}]\n")
	logs := &testLogs{}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- serve(ctx, h, []string{"-c", dir + "/s.yml"}, logs) }()
	r := logs.await(t, "listening", func(r logRecord) bool { return strings.HasPrefix(r.msg, "listening on 127.0.0.1:") })
	if strings.HasSuffix(r.msg, ":0") {
		t.Errorf("listening message %q does not name the port", r.msg)
	}
	cancel()
	if err := receive(t, "Serve to return", served); err != nil {
		t.Fatal(err)
	}
}

type namedErr[T any] struct{}

func (namedErr[T]) Error() string { return "generic" }

type typedNil struct{ msg string }

func (e *typedNil) Error() string { return e.msg }

func TestErrorType(t *testing.T) {
	t.Parallel()
	pathErr := &fs.PathError{Op: "open", Path: "x", Err: fs.ErrNotExist}
	tests := []struct {
		err  error
		want string
	}{
		{errors.New("x"), "errorString"},
		{pathErr, "PathError"},
		{fmt.Errorf("a: %w", pathErr), "PathError"},
		{fmt.Errorf("a: %w", fmt.Errorf("b: %w", pathErr)), "PathError"},
		{fmt.Errorf("a: %w and %w", pathErr, pathErr), "wrapErrors"},
		{fmt.Errorf("no wrap %v", pathErr), "errorString"},
		{fmt.Errorf("a: %w", &valueError{"v"}), "ValueError"},
		{namedErr[int]{}, "namedErr"},
		{context.DeadlineExceeded, "deadlineExceededError"},
		{errors.Join(pathErr), "joinError"},
	}
	for _, tt := range tests {
		if got := errorType(tt.err); got != tt.want {
			t.Errorf("errorType(%#v) = %q, want %q", tt.err, got, tt.want)
		}
	}
}

// TestInvokeHostileValues: a nil-pointer error and a panicking MarshalJSON
// fail the invocation instead of the worker.
func TestInvokeHostileValues(t *testing.T) {
	t.Parallel()
	var nilErr *typedNil
	o := invoke(context.Background(), func(context.Context, Event) (any, error) { return nil, nilErr }, Event{})
	if o.fail == nil || o.fail.typ != "typedNil" || o.fail.kind != kindInvoke {
		t.Errorf("typed nil error: %+v", o.fail)
	}
	o = invoke(context.Background(), func(context.Context, Event) (any, error) { return panicky{}, nil }, Event{})
	if o.fail == nil || o.fail.typ != panicType || o.fail.kind != kindReturn || o.fail.msg != "marshal" {
		t.Errorf("panicking MarshalJSON: %+v", o.fail)
	}
	o = invoke(context.Background(), func(context.Context, Event) (any, error) { panic(errors.New("as error")) }, Event{})
	if o.fail == nil || o.fail.msg != "as error" || !strings.Contains(o.fail.stack, "TestInvokeHostileValues") {
		t.Errorf("panic with an error: %+v", o.fail)
	}
}

type panicky struct{}

func (panicky) MarshalJSON() ([]byte, error) { panic("marshal") }

func TestEncodeResult(t *testing.T) {
	t.Parallel()
	var nilResp *Response
	tests := []struct {
		v       any
		payload string
		http    *httpMeta
		err     string
	}{
		{v: nil, payload: ""},
		{v: nilResp, payload: ""},
		{v: []byte("x"), payload: "x"},
		{v: "s", payload: `"s"`},
		{v: 1.5, payload: "1.5"},
		{v: NewEvent(nil), payload: "{}"},
		{v: NewEvent([]byte("raw")), payload: "raw"},
		{v: map[string]any{"e": NewEvent([]byte("raw"))}, payload: `{"e":"cmF3"}`},
		{v: Response{Status: 204}, payload: "", http: &httpMeta{Status: 204, Headers: map[string]string{}}},
		{v: &Response{Body: "s", Header: map[string]string{"a": "b"}}, payload: `"s"`, http: &httpMeta{Status: 200, Headers: map[string]string{"a": "b"}}},
		{v: &Response{Status: 600}, err: "outside 100-599"},
		{v: &Response{Body: &Response{}}, err: "cannot be a Response"},
		{v: &Response{Body: func() {}}, err: "unsupported type"},
	}
	for _, tt := range tests {
		r, err := encodeResult(tt.v)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("encodeResult(%#v) error = %v, want %q", tt.v, err, tt.err)
			}
			continue
		}
		if err != nil || string(r.payload) != tt.payload || !reflect.DeepEqual(r.http, tt.http) {
			t.Errorf("encodeResult(%#v) = %q %+v, %v; want %q %+v", tt.v, r.payload, r.http, err, tt.payload, tt.http)
		}
	}
}

func TestEvent(t *testing.T) {
	t.Parallel()
	var zero Event
	if !zero.IsJSON() || !zero.Empty() || len(zero.Raw()) != 0 || !reflect.DeepEqual(zero.Value(), map[string]any{}) {
		t.Errorf("zero Event: json %v empty %v value %#v", zero.IsJSON(), zero.Empty(), zero.Value())
	}
	var s struct{ A int }
	if err := zero.Decode(&s); err != nil || s.A != 0 {
		t.Errorf("Decode of the empty event: %v %+v", err, s)
	}
	for payload, want := range map[string]bool{"1": true, " null ": true, `"x"`: true, "{": false, "  ": false, "NaN": false, "\xff": false} {
		if NewEvent([]byte(payload)).IsJSON() != want {
			t.Errorf("IsJSON(%q) != %v", payload, want)
		}
	}
	if v := NewEvent([]byte("null")).Value(); v != nil {
		t.Errorf("Value of null = %#v", v)
	}
	if s := NewEvent([]byte("abc")).String(); s != "abc" {
		t.Errorf("String = %q", s)
	}
	if err := NewEvent([]byte("abc")).Decode(&s); err == nil || !strings.Contains(err.Error(), "not JSON") {
		t.Errorf("Decode of a raw event = %v", err)
	}
}

func TestTruncateDetails(t *testing.T) {
	t.Parallel()
	if got := truncateDetails("short"); got != "short" {
		t.Errorf("short = %q", got)
	}
	long := strings.Repeat("é", maxDetailsBytes) // 2 bytes each
	got := truncateDetails("x" + long)
	if !strings.HasSuffix(got, " [truncated]") || len(got) > maxDetailsBytes+len(" [truncated]") || !strings.HasPrefix(got, "xé") {
		t.Errorf("long details cut to %d bytes: %q...", len(got), got[:10])
	}
	if body := strings.TrimSuffix(got, " [truncated]"); !isValidUTF8(body) {
		t.Error("cut inside a character")
	}
}

func isValidUTF8(s string) bool { return strings.ToValidUTF8(s, "\uFFFD") == s }

func TestPanicStack(t *testing.T) {
	t.Parallel()
	stack := "goroutine 7 [running]:\nruntime/debug.Stack()\n\t/x/stack.go:26 +0x5e\npolyfn.callHandler.func1()\n\t/x/result.go:1\npanic({0x1, 0x2})\n\t/x/panic.go:9 +0x1\nmain.handler()\n\t/x/main.go:3 +0x2\n"
	want := "goroutine 7 [running]:\nmain.handler()\n\t/x/main.go:3 +0x2"
	if got := panicStack([]byte(stack)); got != want {
		t.Errorf("panicStack =\n%s\nwant\n%s", got, want)
	}
}
