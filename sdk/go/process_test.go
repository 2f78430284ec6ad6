//go:build unix

package polyfn

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	rpc "github.com/polyfn/polyfn/api/azure"
	"github.com/polyfn/polyfn/api/baetyl"
)

// testFunctionMain is a function written against the SDK as a user would,
// built into a real binary by TestProcess.
const testFunctionMain = `package main

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"time"

	polyfn "github.com/polyfn/polyfn/sdk/go"
)

func main() {
	polyfn.Start(handle)
}

func handle(ctx context.Context, event polyfn.Event) (any, error) {
	switch name := polyfn.FromContext(ctx).FunctionName; name {
	case "hello":
		var in struct {
			Name string ` + "`json:\"name\"`" + `
		}
		if err := event.Decode(&in); err != nil {
			return nil, err
		}
		polyfn.Logger(ctx).Info("saying hi", "name", in.Name)
		return map[string]string{"greeting": "hi " + in.Name}, nil
	case "fail":
		return nil, errors.New("boom")
	case "env":
		cwd, _ := os.Getwd()
		return map[string]string{"x": os.Getenv("POLYFN_X"), "cwd": cwd}, nil
	case "workerid":
		id, set := os.LookupEnv("POLYFN_WORKER_ID")
		return map[string]any{"id": id, "set": set}, nil
	case "hold":
		// Tells the test it started, then waits for the test to release it.
		dir := event.String()
		if err := os.WriteFile(filepath.Join(dir, "started"), nil, 0o600); err != nil {
			return nil, err
		}
		for {
			if _, err := os.Stat(filepath.Join(dir, "release")); err == nil {
				return "released", nil
			}
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(2 * time.Millisecond):
			}
		}
	default:
		return nil, errors.New("no function " + name)
	}
}
`

// buildTestFunction builds testFunctionMain in its own module, resolving the
// SDK from this repository through a go.work file.
func buildTestFunction(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds a binary")
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go tool on PATH")
	}
	out, err := exec.Command(goTool, "env", "GOMOD").Output()
	if err != nil {
		t.Fatalf("go env GOMOD: %v", err)
	}
	root := filepath.Dir(strings.TrimSpace(string(out)))
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "main.go"), testFunctionMain)
	writeFile(t, filepath.Join(dir, "go.mod"), "module polyfn.test/fn\n\ngo 1.26\n")
	writeFile(t, filepath.Join(dir, "go.work"), "go 1.26.8\n\nuse (\n\t.\n\t"+root+"\n)\n")
	bin := filepath.Join(dir, "fn")
	cmd := exec.Command(goTool, "build", "-o", bin, ".")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOWORK="+filepath.Join(dir, "go.work"))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// process is a running worker binary.
type process struct {
	cmd    *exec.Cmd
	exited chan struct{}
	err    error // the exit status, once exited is closed
	lines  *lineLog
}

// startProcess runs bin in its own process group; the group is killed when
// the test ends.
func startProcess(t *testing.T, bin, dir string, env []string, args ...string) *process {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	p := &process{cmd: cmd, exited: make(chan struct{}), lines: &lineLog{}}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		p.lines.read(stderr)
	}()
	go func() {
		<-copied
		p.err = cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-p.exited
		if t.Failed() {
			t.Logf("worker stderr:\n%s", p.lines.text())
		}
	})
	return p
}

// awaitExit waits for the process to exit and returns its status.
func (p *process) awaitExit(t *testing.T) int {
	t.Helper()
	receive(t, "the worker to exit", p.exited)
	var exit *exec.ExitError
	if errors.As(p.err, &exit) {
		return exit.ExitCode()
	}
	if p.err != nil {
		t.Fatal(p.err)
	}
	return 0
}

// lineLog keeps a process's stderr, line by line.
type lineLog struct {
	mu    sync.Mutex
	lines []string
}

func (l *lineLog) read(r io.Reader) {
	s := bufio.NewScanner(r)
	s.Buffer(nil, 1<<20)
	for s.Scan() {
		l.mu.Lock()
		l.lines = append(l.lines, s.Text())
		l.mu.Unlock()
	}
}

func (l *lineLog) text() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

// awaitJSON waits for a JSON log line that matches.
func (l *lineLog) awaitJSON(t *testing.T, what string, match func(jsonLine) bool) jsonLine {
	t.Helper()
	var found jsonLine
	eventually(t, "stderr line: "+what, func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		for _, line := range l.lines {
			var j jsonLine
			if json.Unmarshal([]byte(line), &j) == nil && match(j) {
				found = j
				return true
			}
		}
		return false
	})
	return found
}

func freeTCPAddress(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	return lis.Addr().String()
}

func awaitFile(t *testing.T, path string) {
	t.Helper()
	eventually(t, path, func() bool {
		_, err := os.Stat(path)
		return err == nil
	})
}

// TestProcess builds a function with the SDK and runs it as the host would,
// in both protocols.
func TestProcess(t *testing.T) {
	bin := buildTestFunction(t)
	t.Run("call", func(t *testing.T) {
		t.Parallel()
		testProcessCall(t, bin)
	})
	t.Run("stream", func(t *testing.T) {
		t.Parallel()
		testProcessStream(t, bin)
	})
	t.Run("stream, worker id in the environment", func(t *testing.T) {
		t.Parallel()
		testProcessStreamIDInEnv(t, bin)
	})
	t.Run("exit status", func(t *testing.T) {
		t.Parallel()
		testProcessExitStatus(t, bin)
	})
}

// testProcessStreamIDInEnv launches the worker as polyfn's host launches
// its own runtimes: the worker id in POLYFN_WORKER_ID, not on the command
// line, where any local user could read it.
func testProcessStreamIDInEnv(t *testing.T, bin string) {
	host := startTestHost(t)
	var args []string
	for _, a := range host.args("worker-8", "req-8") {
		switch a {
		case "worker-8":
		case "--workerId", "--functions-worker-id":
		default:
			args = append(args, a)
		}
	}
	p := startProcess(t, bin, t.TempDir(), []string{"POLYFN_WORKER_ID=worker-8"}, args...)
	ts := host.accept(t)
	handshake(t, ts, "worker-8", "req-8", []string{"workerid"})
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", p.cmd.Process.Pid))
	if err != nil && !os.IsNotExist(err) { // no /proc: not Linux
		t.Fatal(err)
	}
	if strings.Contains(string(cmdline), "worker-8") {
		t.Errorf("the worker id is on the command line: %q", cmdline)
	}
	ts.send(t, invocationRequest("i1", "workerid", nil, nil))
	r := ts.await(t, "response i1", func(m *rpc.StreamingMessage) bool { return m.GetInvocationResponse().GetInvocationId() == "i1" })
	if got := string(r.GetInvocationResponse().GetReturnValue().GetBytes()); got != `{"id":"","set":false}` {
		t.Errorf("the function sees POLYFN_WORKER_ID: %s", got)
	}
}

func testProcessCall(t *testing.T, bin string) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "service.yml"),
		"name: fn-1\nfunctions:\n  - {name: hello, handler: x.y, codedir: .}\n  - {name: fail}\n  - {name: hold}\n")
	addr := freeTCPAddress(t)
	p := startProcess(t, bin, dir, []string{"BAETYL_SERVICE_INSTANCE_ADDRESS=" + addr, "BAETYL_SERVICE_INSTANCE_NAME=fn-1"},
		"-c", filepath.Join(dir, "service.yml"), "--unknown-flag")
	// Retry quickly while the worker starts, as the host does.
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: backoff.Config{BaseDelay: 5 * time.Millisecond, Multiplier: 1.5, MaxDelay: 100 * time.Millisecond}}))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := baetyl.NewFunctionClient(conn)
	call := func(name, id string, payload []byte) (*baetyl.FunctionMessage, error) {
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		return client.Call(ctx, &baetyl.FunctionMessage{ID: 3, FunctionName: name, FunctionInvokeID: id, Payload: payload}, grpc.WaitForReady(true))
	}

	out, err := call("hello", "inv-1", []byte(`{"name":"ada"}`))
	if err != nil || string(out.Payload) != `{"greeting":"hi ada"}` || out.ID != 3 || out.FunctionInvokeID != "inv-1" {
		t.Fatalf("hello = %v, %v", out, err)
	}
	line := p.lines.awaitJSON(t, "the function's log", func(j jsonLine) bool { return j.InvocationID == "inv-1" })
	if line != (jsonLine{Level: "info", Msg: "saying hi name=ada", Function: "hello", InvocationID: "inv-1", Source: "user"}) {
		t.Errorf("log line = %+v", line)
	}
	p.lines.awaitJSON(t, "the unknown-argument warning", func(j jsonLine) bool {
		return j.Source == "runtime" && j.Level == "warning" && strings.Contains(j.Msg, "--unknown-flag")
	})

	_, err = call("fail", "inv-2", nil)
	if st := status.Convert(err); st.Code() != codes.Unknown || st.Message() != "[UserCodeInvoke] errorString: boom" {
		t.Fatalf("fail = %v", err)
	}
	_, err = call("nope", "inv-3", nil)
	if st := status.Convert(err); st.Code() != codes.Unknown || st.Message() != "function not found: nope" {
		t.Fatalf("unknown function = %v", err)
	}

	// SIGTERM with a call in flight: it finishes, then the worker exits 0.
	held := make(chan error, 1)
	go func() {
		out, err := call("hold", "inv-4", []byte(dir))
		if err == nil && string(out.Payload) != `"released"` {
			err = errors.New("payload " + string(out.Payload))
		}
		held <- err
	}()
	awaitFile(t, filepath.Join(dir, "started"))
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	p.lines.awaitJSON(t, "stopping", func(j jsonLine) bool { return strings.HasPrefix(j.Msg, "stopping") })
	select {
	case <-p.exited:
		t.Fatal("the worker exited with a call in flight")
	default:
	}
	writeFile(t, filepath.Join(dir, "release"), "")
	if err := receive(t, "the held call", held); err != nil {
		t.Fatalf("held call: %v", err)
	}
	if code := p.awaitExit(t); code != 0 {
		t.Fatalf("exit status %d, want 0", code)
	}
}

func testProcessStream(t *testing.T, bin string) {
	dir := t.TempDir()
	host := startTestHost(t)
	p := startProcess(t, bin, dir, nil, host.args("worker-7", "req-7")...)
	ts := host.accept(t)
	handshake(t, ts, "worker-7", "req-7", []string{"hello", "fail", "env", "hold"})
	invoke := func(id, function string, payload []byte) *rpc.InvocationResponse {
		t.Helper()
		ts.send(t, invocationRequest(id, function, payload, nil))
		return ts.await(t, "response "+id, func(m *rpc.StreamingMessage) bool {
			return m.GetInvocationResponse().GetInvocationId() == id
		}).GetInvocationResponse()
	}

	if r := invoke("i1", "hello", []byte(`{"name":"ada"}`)); string(r.GetReturnValue().GetBytes()) != `{"greeting":"hi ada"}` {
		t.Fatalf("hello = %v", r)
	}
	logs := ts.logs(func(l *rpc.RpcLog) bool { return l.GetInvocationId() == "i1" })
	if len(logs) != 1 || logs[0].GetMessage() != "saying hi name=ada" || logs[0].GetCategory() != "hello" || logs[0].GetLogCategory() != rpc.RpcLog_User {
		t.Errorf("logs of i1 = %v", logs)
	}
	if ex := invoke("i2", "fail", nil).GetResult().GetException(); ex.GetType() != "errorString" || ex.GetMessage() != "boom" || !ex.GetIsUserException() {
		t.Errorf("fail = %v", ex)
	}

	// A standby worker being specialised: new environment and directory.
	ts.send(t, &rpc.StreamingMessage{RequestId: "reload", Content: &rpc.StreamingMessage_FunctionEnvironmentReloadRequest{
		FunctionEnvironmentReloadRequest: &rpc.FunctionEnvironmentReloadRequest{
			EnvironmentVariables: map[string]string{"POLYFN_X": "y"}, FunctionAppDirectory: dir}}})
	reload := ts.await(t, "FunctionEnvironmentReloadResponse", func(m *rpc.StreamingMessage) bool { return m.GetRequestId() == "reload" })
	if r := reload.GetFunctionEnvironmentReloadResponse(); r.GetResult().GetStatus() != rpc.StatusResult_Success || r.GetCapabilities()["polyfn"] == "" {
		t.Fatalf("reload = %v", reload)
	}
	var env struct{ X, Cwd string }
	if err := json.Unmarshal(invoke("i3", "env", nil).GetReturnValue().GetBytes(), &env); err != nil {
		t.Fatal(err)
	}
	realDir, _ := filepath.EvalSymlinks(dir)
	if env.X != "y" || (env.Cwd != dir && env.Cwd != realDir) {
		t.Errorf("after reload: env %+v, want x=y cwd=%s", env, dir)
	}

	// WorkerTerminate with an invocation in flight: it finishes, the worker
	// closes the stream and exits 0.
	ts.send(t, invocationRequest("i4", "hold", []byte(dir), nil))
	awaitFile(t, filepath.Join(dir, "started"))
	ts.send(t, terminate(30*time.Second))
	ts.await(t, "the stopping message", func(m *rpc.StreamingMessage) bool {
		return strings.HasPrefix(m.GetRpcLog().GetMessage(), "stopping")
	})
	select {
	case <-p.exited:
		t.Fatal("the worker exited with an invocation in flight")
	default:
	}
	writeFile(t, filepath.Join(dir, "release"), "")
	r := ts.await(t, "response i4", func(m *rpc.StreamingMessage) bool { return m.GetInvocationResponse().GetInvocationId() == "i4" })
	if got := string(r.GetInvocationResponse().GetReturnValue().GetBytes()); got != `"released"` {
		t.Fatalf("held invocation = %v", r)
	}
	ts.awaitEnd(t)
	if code := p.awaitExit(t); code != 0 {
		t.Fatalf("exit status %d, want 0", code)
	}
}

// testProcessExitStatus: bad arguments exit 2, a failure 1.
func testProcessExitStatus(t *testing.T, bin string) {
	dir := t.TempDir()
	for _, tt := range []struct {
		args []string
		want int
	}{
		{[]string{"--host", "127.0.0.1"}, 2},
		{[]string{"-c", "missing.yml"}, 1},
		{[]string{"--host", "127.0.0.1", "--port", "1", "--workerId", "w"}, 1},
	} {
		p := startProcess(t, bin, dir, []string{"BAETYL_SERVICE_INSTANCE_ADDRESS="}, tt.args...)
		if code := p.awaitExit(t); code != tt.want {
			t.Errorf("%q: exit status %d, want %d", tt.args, code, tt.want)
		}
		p.lines.awaitJSON(t, "the reason", func(j jsonLine) bool { return j.Level == "error" && j.Source == "runtime" })
	}
}
