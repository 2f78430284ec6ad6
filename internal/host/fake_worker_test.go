package host_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"

	"github.com/polyfn/polyfn/api/baetyl"
)

// The fake worker is this test binary re-executed with POLYFN_FAKE_WORKER set
// to a behaviour. It speaks the call protocol (or fails to, on purpose).
const fakeEnv = "POLYFN_FAKE_WORKER"

func runFakeWorker(mode string) {
	// A grandchild in the worker's process group: stopping the instance must
	// take it down too (the tests check no process is left in the host's run
	// directory, which the grandchild inherits as its working directory).
	if sleep, err := exec.LookPath("sleep"); err == nil {
		_ = exec.Command(sleep, "1000").Start()
	}
	if slices.Contains(os.Args, "--standby") {
		runFakeStandby(mode)
	}
	switch mode {
	case "hog": // a process of a worker that allocates too much
		fmt.Println(fakeHog())
		os.Exit(0)
	case "slow-start":
		// Takes 300 ms to become ready; records when it started and when it
		// was ready, so tests can see how many started at once.
		began := time.Now().UnixNano()
		time.Sleep(300 * time.Millisecond)
		_ = os.WriteFile(filepath.Join(os.Getenv("POLYFN_FAKE_TIMES"), fmt.Sprint(os.Getpid())),
			[]byte(fmt.Sprintf("%d %d", began, time.Now().UnixNano())), 0o600)
	case "exit-3-times":
		// Fails its first three starts (counted in files, one a start:
		// each worker runs as a user of its own), then serves.
		f := os.Getenv("POLYFN_FAKE_COUNTER")
		seen, _ := filepath.Glob(f + ".*")
		n := len(seen)
		_ = os.WriteFile(fmt.Sprintf("%s.%d", f, n), nil, 0o644)
		if n < 3 {
			fmt.Fprintf(os.Stderr, "start %d: missing dependency\n", n+1)
			os.Exit(3)
		}
	case "exit":
		fmt.Fprintln(os.Stderr, "fatal: cannot load handler module nope")
		os.Exit(3)
	case "exit-secret":
		// Quotes its environment, as a crashing worker may.
		fmt.Fprintln(os.Stderr, "fatal: cannot connect with token", os.Getenv("API_TOKEN"))
		os.Exit(3)
	case "ok-gated":
		// Listens once the test opens its gate.
		waitGate(os.Getenv("BAETYL_SERVICE_INSTANCE_ADDRESS"))
		serveFakeOn(listenFake(true))
	case "ok-gated-early":
		// Listens at once, accepts once the test opens its gate.
		l := listenFake(true)
		waitGate(os.Getenv("BAETYL_SERVICE_INSTANCE_ADDRESS"))
		serveFakeOn(l)
	case "never-ready":
		fmt.Fprintln(os.Stderr, "thinking about it")
		select {}
	case "garbage-listener":
		addr := strings.TrimPrefix(os.Getenv("BAETYL_SERVICE_INSTANCE_ADDRESS"), "unix:")
		l, err := net.Listen("tcp", addr)
		if err != nil {
			os.Exit(4)
		}
		for {
			c, err := l.Accept()
			if err != nil {
				os.Exit(5)
			}
			_, _ = c.Write([]byte("220 this is not HTTP/2\r\n\x00\xff\xfe"))
			c.Close()
		}
	case "garbage":
		// Binary junk, an overlong line and a broken JSON line on both streams.
		os.Stdout.Write([]byte("\x00\x01\xff\xfe binary\n"))
		os.Stderr.Write([]byte(strings.Repeat("x", 200<<10) + "\n"))
		os.Stderr.Write([]byte("{\"msg\": broken json\n"))
	}
	serveFake()
}

// runFakeStandby is a call standby worker (started with --standby, its
// standard input the handshake socket) that fails on purpose.
func runFakeStandby(mode string) {
	switch mode {
	case "standby-exit": // fails before it is ready
		fmt.Fprintln(os.Stderr, "standby: cannot import grpc")
		os.Exit(3)
	case "standby-exit-on-claim": // ready, then fails once claimed
		_, _ = os.Stdin.Write([]byte("ready\n"))
		line := make([]byte, 1<<20)
		n, _ := os.Stdin.Read(line)
		fmt.Fprintf(os.Stderr, "standby: claimed with %d bytes, failing\n", n)
		os.Exit(4)
	}
}

type fakeServer struct {
	baetyl.UnimplementedFunctionServer
}

func (fakeServer) Call(ctx context.Context, m *baetyl.FunctionMessage) (*baetyl.FunctionMessage, error) {
	switch p := string(m.Payload); {
	case p == "crash":
		fmt.Fprintln(os.Stderr, "crashing on purpose")
		os.Exit(7)
	case p == "hang":
		<-ctx.Done()
		select {} // and never give the thread back
	case strings.HasPrefix(p, "sleep:"):
		d, _ := time.ParseDuration(strings.TrimPrefix(p, "sleep:"))
		time.Sleep(d)
	case p == "respond", p == "respond-bad":
		status := 201
		if p == "respond-bad" {
			status = 999
		}
		_ = grpc.SetHeader(ctx, metadata.Pairs("polyfn-response-bin", fmt.Sprintf(`{"status": %d, "headers": {"x-a": "b"}}`, status)))
		out := proto.Clone(m).(*baetyl.FunctionMessage)
		out.Payload = []byte("created")
		return out, nil
	case p == "trace":
		md, _ := metadata.FromIncomingContext(ctx)
		var ic struct {
			TraceParent string `json:"traceparent"`
		}
		if v := md.Get("polyfn-context-bin"); len(v) > 0 {
			_ = json.Unmarshal([]byte(v[0]), &ic)
		}
		out := proto.Clone(m).(*baetyl.FunctionMessage)
		out.Payload = []byte(ic.TraceParent)
		return out, nil
	case strings.HasPrefix(p, "fetch:"):
		// GET a URL from inside the worker; return the status code and body.
		out := proto.Clone(m).(*baetyl.FunctionMessage)
		resp, err := http.Get(strings.TrimPrefix(p, "fetch:"))
		if err != nil {
			out.Payload = []byte(err.Error())
			return out, nil
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		out.Payload = []byte(fmt.Sprintf("%d %s", resp.StatusCode, body))
		return out, nil
	case p == "whoami":
		out := proto.Clone(m).(*baetyl.FunctionMessage)
		out.Payload = []byte(m.FunctionName)
		return out, nil
	case p == "ids":
		out := proto.Clone(m).(*baetyl.FunctionMessage)
		out.Payload = []byte(fakeIDs())
		return out, nil
	case strings.HasPrefix(p, "read:"):
		// Tries to read a file or list a directory: "read" or why not.
		path, res := strings.TrimPrefix(p, "read:"), "read"
		if st, err := os.Stat(path); err != nil {
			res = err.Error()
		} else if st.IsDir() {
			if _, err := os.ReadDir(path); err != nil {
				res = err.Error()
			}
		} else if _, err := os.ReadFile(path); err != nil {
			res = err.Error()
		}
		out := proto.Clone(m).(*baetyl.FunctionMessage)
		out.Payload = []byte(res)
		return out, nil
	case p == "env:HOME":
		out := proto.Clone(m).(*baetyl.FunctionMessage)
		out.Payload = []byte(os.Getenv("HOME"))
		return out, nil
	case p == "escape":
		// A process in a session of its own, out of the worker's process
		// group: it must die with the instance all the same.
		cmd := exec.Command("sleep", "1000")
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		res := ""
		if err := cmd.Start(); err != nil {
			res = err.Error()
		} else {
			res = strconv.Itoa(cmd.Process.Pid)
			go func() { _ = cmd.Wait() }()
		}
		out := proto.Clone(m).(*baetyl.FunctionMessage)
		out.Payload = []byte(res)
		return out, nil
	case p == "hog":
		out := proto.Clone(m).(*baetyl.FunctionMessage)
		out.Payload = []byte(fakeHog())
		return out, nil
	case p == "hog-child":
		out := proto.Clone(m).(*baetyl.FunctionMessage)
		out.Payload = []byte(fakeHogChild())
		return out, nil
	case p == "forkbomb":
		out := proto.Clone(m).(*baetyl.FunctionMessage)
		out.Payload = []byte(fakeForkBomb())
		return out, nil
	case p == "threads":
		out := proto.Clone(m).(*baetyl.FunctionMessage)
		out.Payload = []byte(fakeThreads())
		return out, nil
	}
	out := proto.Clone(m).(*baetyl.FunctionMessage)
	out.Payload = append([]byte("fake:"), m.Payload...)
	return out, nil
}

func serveFake() { serveFakeOn(listenFake(false)) }

// listenFake listens on BAETYL_SERVICE_INSTANCE_ADDRESS, sharing a TCP
// port with SO_REUSEPORT when reusePort is set (as gRPC's C core does).
func listenFake(reusePort bool) net.Listener {
	addr := os.Getenv("BAETYL_SERVICE_INSTANCE_ADDRESS")
	network := "tcp"
	if strings.HasPrefix(addr, "unix:") {
		network, addr = "unix", strings.TrimPrefix(addr, "unix:")
	}
	var lc net.ListenConfig
	if reusePort && network == "tcp" {
		lc.Control = setReusePort
	}
	l, err := lc.Listen(context.Background(), network, addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "listen:", err)
		os.Exit(6)
	}
	return l
}

func serveFakeOn(l net.Listener) {
	s := grpc.NewServer()
	baetyl.RegisterFunctionServer(s, fakeServer{})
	go func() {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGTERM)
		<-sig
		if d, err := time.ParseDuration(os.Getenv("POLYFN_FAKE_STOP_DELAY")); err == nil {
			time.Sleep(d) // a worker slow to stop
		}
		s.GracefulStop()
	}()
	_ = s.Serve(l)
	os.Exit(0)
}
