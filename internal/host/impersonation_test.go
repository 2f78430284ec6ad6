package host_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	rpc "github.com/polyfn/polyfn/api/azure"
	"github.com/polyfn/polyfn/api/baetyl"
	"github.com/polyfn/polyfn/internal/hosttest"
)

// gateEnv names a directory through which the test holds a worker back: the
// worker writes <pid>.waiting (holding what the test needs to know) and
// waits for <pid>.go. Attackers are set up in between, so they always come
// first.
const gateEnv = "POLYFN_FAKE_GATE"

// waitGate holds the worker at its gate, if it has one.
func waitGate(info string) {
	dir := os.Getenv(gateEnv)
	if dir == "" {
		return
	}
	base := filepath.Join(dir, strconv.Itoa(os.Getpid()))
	if err := os.WriteFile(base+".tmp", []byte(info), 0o644); err != nil {
		os.Exit(11)
	}
	if err := os.Rename(base+".tmp", base+".waiting"); err != nil {
		os.Exit(11)
	}
	for {
		if _, err := os.Stat(base + ".go"); err == nil {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func setReusePort(network, address string, c syscall.RawConn) error {
	var serr error
	if err := c.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, 0xf /* SO_REUSEPORT */, 1)
	}); err != nil {
		return err
	}
	return serr
}

// runAttacker is a local process out to take over other functions'
// workers. It reads commands on stdin and reports on stdout:
//
//	stream PID TAG        read PID's command line for the stream server's
//	                      address and the worker id, connect, StartStream
//	                      with that id: "refused TAG CODE" or "ACCEPTED TAG"
//	bind ADDR reuse|plain listen on ADDR (host:port with SO_REUSEPORT or
//	                      not, or unix:PATH) and serve the call protocol:
//	                      "bound ADDR"
//	bind-env PID MODE     the same at the address read from PID's environment
//	unbind ADDR           stop listening: "unbound ADDR"
//
// Whatever it receives as a worker is reported as a "GOT ..." line.
func runAttacker() {
	var mu sync.Mutex
	say := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Printf(format+"\n", args...)
	}
	servers := map[string]*grpc.Server{}
	say("ready")
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		switch {
		case len(f) == 3 && f[0] == "stream":
			attackStream(say, f[1], f[2])
		case len(f) == 3 && (f[0] == "bind" || f[0] == "bind-env"):
			addr := f[1]
			if f[0] == "bind-env" {
				env, err := os.ReadFile("/proc/" + f[1] + "/environ")
				if err != nil {
					say("bind-failed %s %v", f[1], err)
					continue
				}
				for _, kv := range strings.Split(string(env), "\x00") {
					if v, ok := strings.CutPrefix(kv, "BAETYL_SERVICE_INSTANCE_ADDRESS="); ok {
						addr = v
					}
				}
			}
			var lc net.ListenConfig
			if f[2] == "reuse" {
				lc.Control = setReusePort
			}
			network, laddr := "tcp", addr
			if path, ok := strings.CutPrefix(addr, "unix:"); ok {
				network, laddr = "unix", path
			}
			l, err := lc.Listen(context.Background(), network, laddr)
			if err != nil {
				say("bind-failed %s %v", addr, err)
				continue
			}
			s := grpc.NewServer()
			baetyl.RegisterFunctionServer(s, attackerServer{say: say})
			go func() { _ = s.Serve(l) }()
			servers[addr] = s
			say("bound %s", addr)
		case len(f) == 2 && f[0] == "unbind":
			if s := servers[f[1]]; s != nil {
				s.Stop()
				delete(servers, f[1])
			}
			say("unbound %s", f[1])
		default:
			say("bad command %q", sc.Text())
		}
	}
	os.Exit(0)
}

type attackerServer struct {
	baetyl.UnimplementedFunctionServer
	say func(string, ...any)
}

func (a attackerServer) Call(ctx context.Context, m *baetyl.FunctionMessage) (*baetyl.FunctionMessage, error) {
	a.say("GOT Call %q", m.Payload)
	out := proto.Clone(m).(*baetyl.FunctionMessage)
	out.Payload = []byte("attacker")
	return out, nil
}

// attackStream poses as the worker whose process is pid.
func attackStream(say func(string, ...any), pid, tag string) {
	cmdline, err := os.ReadFile("/proc/" + pid + "/cmdline")
	if err != nil {
		say("error %s %v", tag, err)
		return
	}
	var uri, id string
	args := strings.Split(string(cmdline), "\x00")
	for i := 0; i+1 < len(args); i++ {
		switch args[i] {
		case "--functions-uri":
			uri = args[i+1]
		case "--functions-worker-id":
			id = args[i+1]
		}
	}
	if uri == "" || id == "" {
		say("error %s no worker id in the command line of %s", tag, pid)
		return
	}
	conn, err := grpc.NewClient(strings.TrimSuffix(strings.TrimPrefix(uri, "http://"), "/"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		say("error %s %v", tag, err)
		return
	}
	st, err := rpc.NewFunctionRpcClient(conn).EventStream(context.Background())
	if err == nil {
		err = st.Send(&rpc.StreamingMessage{Content: &rpc.StreamingMessage_StartStream{StartStream: &rpc.StartStream{WorkerId: id}}})
	}
	var m *rpc.StreamingMessage
	if err == nil {
		m, err = st.Recv()
	}
	if err != nil {
		say("refused %s %s", tag, status.Code(err))
		conn.Close()
		return
	}
	say("ACCEPTED %s", tag)
	// Play the worker, to receive as much as possible.
	go func() {
		ok := &rpc.StatusResult{Status: rpc.StatusResult_Success}
		for ; err == nil; m, err = st.Recv() {
			say("GOT %T", m.Content)
			var out *rpc.StreamingMessage
			switch x := m.Content.(type) {
			case *rpc.StreamingMessage_WorkerInitRequest:
				out = &rpc.StreamingMessage{RequestId: m.RequestId, Content: &rpc.StreamingMessage_WorkerInitResponse{WorkerInitResponse: &rpc.WorkerInitResponse{Result: ok}}}
			case *rpc.StreamingMessage_FunctionLoadRequest:
				out = &rpc.StreamingMessage{RequestId: m.RequestId, Content: &rpc.StreamingMessage_FunctionLoadResponse{FunctionLoadResponse: &rpc.FunctionLoadResponse{
					FunctionId: x.FunctionLoadRequest.FunctionId, Result: ok}}}
			case *rpc.StreamingMessage_InvocationRequest:
				out = &rpc.StreamingMessage{Content: &rpc.StreamingMessage_InvocationResponse{InvocationResponse: &rpc.InvocationResponse{
					InvocationId: x.InvocationRequest.InvocationId, Result: ok,
					ReturnValue: &rpc.TypedData{Data: &rpc.TypedData_Bytes{Bytes: []byte("attacker")}}}}}
			}
			if out != nil {
				_ = st.Send(out)
			}
		}
	}()
}

// attacker drives an attacker process.
type attacker struct {
	name     string
	pid, uid int
	in       io.WriteCloser
	replies  chan string
	mu       sync.Mutex
	got      []string // ACCEPTED and GOT lines: what it must never report
}

func startAttacker(t *testing.T, bin, name string, cred *syscall.Credential) *attacker {
	t.Helper()
	cmd := exec.Command(bin)
	cmd.Env = []string{fakeEnv + "=attacker", "PATH=" + os.Getenv("PATH")}
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: cred}
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		in.Close()
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		_ = cmd.Wait()
	})
	a := &attacker{name: name, pid: cmd.Process.Pid, uid: os.Getuid(), in: in, replies: make(chan string, 64)}
	if cred != nil {
		a.uid = int(cred.Uid)
	}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			line := sc.Text()
			if strings.HasPrefix(line, "GOT ") || strings.HasPrefix(line, "ACCEPTED ") {
				a.mu.Lock()
				a.got = append(a.got, line)
				a.mu.Unlock()
			}
			if !strings.HasPrefix(line, "GOT ") {
				a.replies <- line
			}
		}
		close(a.replies)
	}()
	if r := a.recv(); r != "ready" {
		t.Fatalf("attacker %s: %q", name, r)
	}
	return a
}

// attackerReplyTimeout bounds the wait for an attacker's report.
const attackerReplyTimeout = 20 * time.Second

func (a *attacker) recv() string {
	select {
	case r, ok := <-a.replies:
		if !ok {
			return "attacker exited"
		}
		return r
	case <-time.After(attackerReplyTimeout):
		return "no reply"
	}
}

// do sends one command and returns the attacker's report.
func (a *attacker) do(cmd string) string {
	if _, err := fmt.Fprintln(a.in, cmd); err != nil {
		return err.Error()
	}
	return a.recv()
}

func (a *attacker) received() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.got...)
}

// gated waits for the next worker held at the gate and returns its pid and
// what it wrote.
func gated(t *testing.T, dir string, seen map[string]bool) (pid, info string) {
	t.Helper()
	hosttest.WaitFor(t, 20*time.Second, "a worker at the gate", func() bool {
		ents, _ := os.ReadDir(dir)
		for _, e := range ents {
			if p, ok := strings.CutSuffix(e.Name(), ".waiting"); ok && !seen[p] {
				seen[p] = true
				pid = p
				return true
			}
		}
		return false
	})
	b, err := os.ReadFile(filepath.Join(dir, pid+".waiting"))
	if err != nil {
		t.Fatal(err)
	}
	return pid, string(b)
}

func openGate(t *testing.T, dir, pid string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, pid+".go"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
}

// callAsync invokes fn over HTTP in the background (the invocation waits
// for its instance to start, which the test holds at the gate).
func callAsync(th *hosttest.Host, fn, body string) <-chan hosttest.Response {
	ch := make(chan hosttest.Response, 1)
	go func() {
		r := hosttest.Response{}
		resp, err := http.Post(th.URL+"/function/"+fn, "application/octet-stream", bytes.NewReader([]byte(body)))
		if err != nil {
			r.Body = []byte(err.Error())
			ch <- r
			return
		}
		defer resp.Body.Close()
		r.Status = resp.StatusCode
		r.Body, _ = io.ReadAll(resp.Body)
		if r.Status >= 300 {
			_ = json.Unmarshal(r.Body, &r.Err)
		}
		ch <- r
	}()
	return ch
}

// impersonationConfig runs the workers as the host's user (isolation.user
// host), the weakest case: an attacker of the workers' own user can share a
// port with them and enter their directories.
const impersonationConfig = `
isolation: {user: host}
runtimes:
  gated-stream:
    protocol: stream
    discovery: config
    command: ["{bin}"]
    env: {POLYFN_FAKE_WORKER: stream, POLYFN_FAKE_GATE: "{gate}"}
    init_timeout: 30s
  gated-call:
    protocol: call
    command: ["{bin}"]
    env: {POLYFN_FAKE_WORKER: ok-gated, POLYFN_FAKE_GATE: "{gate}"}
    start_timeout: 30s
  gated-call-unix:
    protocol: call
    address: unix
    command: ["{bin}"]
    env: {POLYFN_FAKE_WORKER: ok-gated, POLYFN_FAKE_GATE: "{gate}"}
    start_timeout: 30s
  gated-call-early:
    protocol: call
    command: ["{bin}"]
    env: {POLYFN_FAKE_WORKER: ok-gated-early, POLYFN_FAKE_GATE: "{gate}"}
    start_timeout: 30s
functions:
{functions}
`

// TestWorkersCannotBeImpersonated races local processes — one of another
// user, one of the host's own user — against real workers: they read a
// stream worker's id from its command line and present it first, and they
// take a call worker's port first or share it with SO_REUSEPORT. None of
// them ever receives a FunctionLoadRequest or an invocation; the real
// workers are served; every refusal is logged with the offending process and
// counted.
func TestWorkersCannotBeImpersonated(t *testing.T) {
	const streamRounds, attempts, squatRounds, shareRounds, unixRounds, invocations = 6, 2, 3, 3, 2, 4
	bin := hosttest.Self(t)
	gate := hosttest.Writable(t, t.TempDir())
	var fns strings.Builder
	for i := range streamRounds {
		fmt.Fprintf(&fns, "  - {name: stream-%d, runtime: gated-stream, handler: h.h, codedir: \"{codedir}\"}\n", i)
	}
	for i := range squatRounds {
		fmt.Fprintf(&fns, "  - {name: squat-%d, runtime: gated-call, handler: h.h, codedir: \"{codedir}\"}\n", i)
	}
	for i := range shareRounds {
		fmt.Fprintf(&fns, "  - {name: share-%d, runtime: gated-call-early, handler: h.h, codedir: \"{codedir}\"}\n", i)
	}
	for i := range unixRounds {
		fmt.Fprintf(&fns, "  - {name: unix-%d, runtime: gated-call-unix, handler: h.h, codedir: \"{codedir}\"}\n", i)
	}
	th := hosttest.Start(t, t.TempDir(), strings.Replace(impersonationConfig, "{functions}", fns.String(), 1),
		"{bin}", bin, "{gate}", gate, "{codedir}", t.TempDir())

	same := startAttacker(t, bin, "same-user", nil)
	attackers := []*attacker{same}
	other := same // takes the port first: another user's process when the test may start one
	if nobody, err := user.Lookup("nobody"); err == nil && os.Geteuid() == 0 {
		uid, _ := strconv.Atoi(nobody.Uid)
		gid, _ := strconv.Atoi(nobody.Gid)
		other = startAttacker(t, bin, "other-user", &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)})
		attackers = append(attackers, other)
	} else {
		t.Log("not root or no user nobody: only a process of the host's own user attacks")
	}
	seen := map[string]bool{}

	// served checks that fn's real worker answers every invocation.
	served := func(fn, prefix string) {
		t.Helper()
		for k := range invocations {
			body := fmt.Sprintf("card-%s-%d", fn, k)
			if r := th.Call(t, fn, body); r.Status != 200 || string(r.Body) != prefix+body {
				t.Fatalf("%s: got %d %q, want 200 %q from the real worker", fn, r.Status, r.Body, prefix+body)
			}
		}
	}

	// Call: an attacker holds the worker's address when the host dials it.
	// The start fails (the worker cannot serve an address another process
	// holds) and the next start, with a new address, is served. (These
	// rounds come first: the lookups of offenders' pids are rate limited,
	// and the stream rounds spend them fast.)
	// listening says whether the worker listens already at its gate (it
	// accepts once through it) or listens once through it.
	callRound := func(fn string, listening bool, a *attacker, bind func(pid, addr string) string) {
		t.Helper()
		first := callAsync(th, fn, "card-first")
		pid, addr := gated(t, gate, seen)
		if r := a.do(bind(pid, addr)); r != "bound "+addr {
			t.Fatalf("%s binding %s: %q", a.name, addr, r)
		}
		if listening {
			openGate(t, gate, pid)
		}
		r := <-first
		openGate(t, gate, pid)
		if r.Status != http.StatusBadGateway || r.Err.Error.Type != "WorkerStartFailed" ||
			!strings.Contains(r.Err.Error.Message, fmt.Sprintf("pid %d (uid %d), not worker process %s", a.pid, a.uid, pid)) {
			t.Fatalf("%s: with %s on the worker's address got %d %s, want 502 WorkerStartFailed naming pid %d", fn, a.name, r.Status, r.Body, a.pid)
		}
		if r := a.do("unbind " + addr); r != "unbound "+addr {
			t.Fatalf("%s unbinding: %q", a.name, r)
		}
		hosttest.WaitFor(t, 10*time.Second, fn+" to leave its start back-off", func() bool {
			return th.Status()[indexOf(th, fn)].BackoffUntil.IsZero() // cleared when the back-off ends
		})
		next := callAsync(th, fn, "card-first")
		pid, _ = gated(t, gate, seen)
		openGate(t, gate, pid)
		if r := <-next; r.Status != 200 || string(r.Body) != "fake:card-first" {
			t.Fatalf("%s: after the attack got %d %q, want the real worker's answer", fn, r.Status, r.Body)
		}
		served(fn, "fake:")
	}
	for round := range squatRounds {
		// Another user's process takes the port before the worker listens.
		callRound(fmt.Sprintf("squat-%d", round), false, other, func(_, addr string) string { return "bind " + addr + " plain" })
	}
	for round := range shareRounds {
		// A process of the worker's user reads the address from the worker's
		// environment and shares the port the worker listens on.
		callRound(fmt.Sprintf("share-%d", round), true, same, func(pid, _ string) string { return "bind-env " + pid + " reuse" })
	}

	for round := range unixRounds {
		// A process of the worker's user (only it may enter the instance's
		// private directory) takes the worker's unix socket first.
		callRound(fmt.Sprintf("unix-%d", round), false, same, func(_, addr string) string { return "bind " + addr + " plain" })
	}

	// Stream: every attacker presents the worker's id, several times, before
	// the worker connects; then again once it has.
	for round := range streamRounds {
		fn := fmt.Sprintf("stream-%d", round)
		first := callAsync(th, fn, "card-first")
		pid, _ := gated(t, gate, seen)
		var wg sync.WaitGroup
		for _, a := range attackers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for k := range attempts {
					tag := fmt.Sprintf("%s-%d-%d", a.name, round, k)
					if r := a.do("stream " + pid + " " + tag); r != "refused "+tag+" PermissionDenied" {
						t.Errorf("%s presenting worker %s's id: %q, want it refused", a.name, pid, r)
					}
				}
			}()
		}
		wg.Wait()
		openGate(t, gate, pid)
		if r := <-first; r.Status != 200 || string(r.Body) != "stream:card-first" {
			t.Fatalf("%s: first invocation got %d %q, want the real worker's answer", fn, r.Status, r.Body)
		}
		served(fn, "stream:")
		for _, a := range attackers {
			tag := fmt.Sprintf("%s-%d-late", a.name, round)
			if r := a.do("stream " + pid + " " + tag); r != "refused "+tag+" PermissionDenied" {
				t.Errorf("%s presenting the id of connected worker %s: %q, want it refused", a.name, pid, r)
			}
		}
	}

	for _, a := range attackers {
		if got := a.received(); len(got) > 0 {
			t.Errorf("%s (pid %d, uid %d) received what only workers may: %q", a.name, a.pid, a.uid, got)
		}
	}

	// Every refusal is counted and logged with the offender.
	fams := scrape(t, th)
	refused := func(protocol, reason string) int {
		n := value(fams, "polyfn_worker_connections_refused_total", map[string]string{"protocol": protocol, "reason": reason})
		return max(int(n), 0)
	}
	logs := th.Logs.String()
	if n, want := refused("stream", "not_worker"), streamRounds*attempts*len(attackers); n != want {
		t.Errorf("stream not_worker refusals counted: %d, want %d", n, want)
	}
	if n, logged := refused("stream", "not_worker"), strings.Count(logs, "stream refused: the connection is not the worker's"); n != logged {
		t.Errorf("stream refusals: %d counted, %d logged", n, logged)
	}
	if n, want := refused("stream", "unknown_worker_id"), streamRounds*len(attackers); n != want {
		t.Errorf("stream unknown_worker_id refusals counted: %d, want %d", n, want)
	}
	if n, logged := refused("call", "not_worker"), strings.Count(logs, "connection to the worker refused"); n < squatRounds+shareRounds+unixRounds || n != logged {
		t.Errorf("call refusals: %d counted, %d logged, want at least %d", n, logged, squatRounds+shareRounds+unixRounds)
	}
	for _, a := range attackers {
		re := regexp.MustCompile(fmt.Sprintf(`level=WARN msg="stream refused: the connection is not the worker's" .* pid=%d uid=%d `, a.pid, a.uid))
		if !re.MatchString(logs) {
			t.Errorf("no stream refusal logged with %s's pid %d and uid %d", a.name, a.pid, a.uid)
		}
	}
	for _, line := range strings.Split(logs, "\n") {
		if strings.Contains(line, "stream refused: the connection is not the worker's") && !regexp.MustCompile(` uid=(\d+) `).MatchString(line) {
			t.Errorf("refusal logged without the offender's uid: %s", line)
		}
	}
}
