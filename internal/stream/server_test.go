package stream

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	rpc "github.com/polyfn/polyfn/api/azure"
	"github.com/polyfn/polyfn/internal/config"
	"github.com/polyfn/polyfn/internal/testlog"
)

// helperEnv makes the test binary a worker: "ADDR ID" opens a stream to
// ADDR with StartStream ID and prints the type of each message it gets.
const helperEnv = "POLYFN_STREAM_HELPER"

func TestMain(m *testing.M) {
	if h := os.Getenv(helperEnv); h != "" {
		f := strings.Fields(h)
		st, _, err := openStream(f[0], f[1])
		if err != nil {
			fmt.Println("error", err)
			os.Exit(2)
		}
		for {
			m, err := st.Recv()
			if err != nil {
				fmt.Println("refused", status.Code(err))
				os.Exit(0)
			}
			fmt.Printf("got %T\n", m.Content)
		}
	}
	os.Exit(m.Run())
}

// openStream connects to addr and sends StartStream with workerID.
func openStream(addr, workerID string) (rpc.FunctionRpc_EventStreamClient, *grpc.ClientConn, error) {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, nil, err
	}
	st, err := rpc.NewFunctionRpcClient(conn).EventStream(context.Background())
	if err == nil {
		err = st.Send(&rpc.StreamingMessage{Content: &rpc.StreamingMessage_StartStream{StartStream: &rpc.StartStream{WorkerId: workerID}}})
	}
	if err != nil {
		conn.Close()
		return nil, nil, err
	}
	return st, conn, nil
}

type refusals struct {
	mu sync.Mutex
	n  map[string]int
}

func (r *refusals) WorkerConnectionRefused(protocol, reason string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.n[protocol+"/"+reason]++
}

func (r *refusals) count(key string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.n[key]
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func newTestServer(t *testing.T) (*Server, *testlog.Buffer, *refusals) {
	t.Helper()
	logs := &testlog.Buffer{}
	counts := &refusals{n: map[string]int{}}
	s, err := NewServer(slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})), counts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s, logs, counts
}

// A stream that presents a worker's id before the host knows the worker's
// process waits for it; then the worker's own stream is accepted and an
// impostor's is refused, whichever came first, and the refusal does not
// use up the id.
func TestStreamIsAcceptedOnlyFromTheWorker(t *testing.T) {
	s, logs, counts := newTestServer(t)
	e := s.expect("w1", "fn", "inst-1")
	defer s.forget("w1", e)

	// The impostor (this process, which is not the worker's tree) comes first.
	impostor, conn, err := openStream(s.Addr(), "w1")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	waitFor(t, "the impostor's stream to wait for the worker's pid", func() bool {
		return strings.Contains(logs.String(), "stream waits for its worker's process id")
	})

	worker := exec.Command(os.Args[0])
	worker.Env = append(os.Environ(), helperEnv+"="+s.Addr()+" w1")
	worker.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := worker.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := worker.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = syscall.Kill(-worker.Process.Pid, syscall.SIGKILL); _ = worker.Wait() }()
	e.started(worker.Process.Pid)

	if _, err := impostor.Recv(); status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "does not come from the worker process") {
		t.Fatalf("impostor: got %v, want PermissionDenied", err)
	}
	var c *Conn
	select {
	case c = <-e.conn:
	case <-time.After(10 * time.Second):
		t.Fatal("the worker's stream was not accepted")
	}
	if err := c.Send(context.Background(), &rpc.StreamingMessage{Content: &rpc.StreamingMessage_WorkerInitRequest{WorkerInitRequest: &rpc.WorkerInitRequest{}}}); err != nil {
		t.Fatal(err)
	}
	if line, _ := bufio.NewReader(out).ReadString('\n'); line != "got *azure.StreamingMessage_WorkerInitRequest\n" {
		t.Fatalf("worker: %q", line)
	}
	c.Close()
	if n := counts.count("stream/not_worker"); n != 1 {
		t.Errorf("not_worker refusals counted: %d, want 1", n)
	}
	if want := fmt.Sprintf("reason=not_worker pid=0 uid=%d worker_pid=%d", os.Getuid(), worker.Process.Pid); !strings.Contains(logs.String(), want) {
		t.Errorf("refusal not logged with %q:\n%s", want, logs.String())
	}

	// The id is spent once the worker is in.
	again, conn2, err := openStream(s.Addr(), "w1")
	if err != nil {
		t.Fatal(err)
	}
	defer conn2.Close()
	if _, err := again.Recv(); status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "unknown worker id") {
		t.Fatalf("second stream with the id: got %v, want unknown worker id", err)
	}
	if n := counts.count("stream/unknown_worker_id"); n != 1 {
		t.Errorf("unknown_worker_id refusals counted: %d, want 1", n)
	}
}

// A stream waiting for a worker whose start is abandoned is refused.
func TestStreamForAbandonedStartIsRefused(t *testing.T) {
	s, logs, counts := newTestServer(t)
	e := s.expect("w2", "fn", "inst-2")
	st, conn, err := openStream(s.Addr(), "w2")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	waitFor(t, "the stream to wait for the worker's pid", func() bool {
		return strings.Contains(logs.String(), "stream waits for its worker's process id")
	})
	s.forget("w2", e)
	if _, err := st.Recv(); status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "unknown worker id") {
		t.Fatalf("got %v, want unknown worker id", err)
	}
	if n := counts.count("stream/unknown_worker_id"); n != 1 {
		t.Errorf("unknown_worker_id refusals counted: %d, want 1", n)
	}
}

// Foreign workers get the launch of the official Azure Functions host, the
// worker id in both spellings; polyfn's own runtimes get it in the
// environment and the rest of the command line unchanged.
func TestLaunch(t *testing.T) {
	s, _, _ := newTestServer(t)
	host, port, _ := strings.Cut(s.Addr(), ":")
	uri := "http://" + s.Addr() + "/"
	o := Options{Server: s, Runtime: config.Runtime{Name: "azure-node", Command: []string{"node", "worker.js"}}, Dir: "/d", AppDir: "/a"}
	args, env := launch(o, host, port, "W", "R")
	want := []string{"node", "worker.js", "--host", host, "--port", port, "--workerId", "W", "--requestId", "R",
		"--grpcMaxMessageLength", "2147483647", "--functions-uri", uri, "--functions-worker-id", "W",
		"--functions-request-id", "R", "--functions-grpc-max-message-length", "2147483647"}
	if !slices.Equal(args, want) {
		t.Errorf("foreign worker's launch:\n got %q\nwant %q", args, want)
	}
	if _, ok := env[WorkerIDEnv]; ok {
		t.Errorf("foreign worker's environment has %s", WorkerIDEnv)
	}

	o.Runtime = config.Runtime{Name: "python3", Command: []string{"python3", "-m", "polyfn_runtime"}, BuiltIn: true}
	args, env = launch(o, host, port, "W", "R")
	want = []string{"python3", "-m", "polyfn_runtime", "--host", host, "--port", port, "--requestId", "R",
		"--grpcMaxMessageLength", "2147483647", "--functions-uri", uri,
		"--functions-request-id", "R", "--functions-grpc-max-message-length", "2147483647"}
	if !slices.Equal(args, want) || env[WorkerIDEnv] != "W" {
		t.Errorf("built-in runtime's launch:\n got %q, %s=%q\nwant %q, %s=W", args, WorkerIDEnv, env[WorkerIDEnv], want, WorkerIDEnv)
	}
}

// A stream that never sends its first message is ended after
// StartStreamTimeout, logged and counted, instead of holding the server.
func TestSilentStreamIsEnded(t *testing.T) {
	old := StartStreamTimeout
	StartStreamTimeout = 200 * time.Millisecond
	t.Cleanup(func() { StartStreamTimeout = old })
	s, logs, counts := newTestServer(t)
	conn, err := grpc.NewClient(s.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	st, err := rpc.NewFunctionRpcClient(conn).EventStream(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Recv(); status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("a silent stream got %v, want DeadlineExceeded", err)
	}
	if counts.count("stream/"+ReasonNoStartStream) != 1 || !strings.Contains(logs.String(), "stream refused: no StartStream in time") {
		t.Errorf("the silent stream was not counted and logged: %v\n%s", counts.n, logs.String())
	}
}
