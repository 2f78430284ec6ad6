package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/polyfn/polyfn/internal/config"
	"github.com/polyfn/polyfn/internal/host"
	"github.com/polyfn/polyfn/internal/hosttest"
)

// callStandbyPid returns the pid of runtime's ready call-protocol standby
// worker, or 0.
func callStandbyPid(th *hosttest.Host, runtime string) int {
	for _, s := range th.Standbys() {
		if s.Runtime == runtime && s.Protocol == config.ProtocolCall && s.Ready {
			return s.Pid
		}
	}
	return 0
}

// cmdline returns a process's arguments.
func cmdline(t *testing.T, pid int) []string {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimRight(string(data), "\x00"), "\x00")
}

// A call-protocol function of polyfn's Python or Node.js runtime with no
// live instance is served by the runtime's call standby worker: a process
// started before the request, which the handshake gives the function's
// config and environment; a new standby takes its place, and closing the
// host stops every one of them.
func TestCallStandbyServesColdFunctions(t *testing.T) {
	requirePython(t)
	th := hosttest.Start(t, testdata(t), `
functions:
  - {name: py, runtime: python3, protocol: call, handler: ctx.handler, codedir: functions/ctx, env: {GREETING: from-py}}
  - {name: js, runtime: node, protocol: call, handler: index.ctx, codedir: functions/node-kinds, env: {GREETING: from-js}}
`)
	var pids []int
	for _, tc := range []struct{ fn, runtime, greeting string }{{"py", "python3", "from-py"}, {"js", "node", "from-js"}} {
		var pid int
		hosttest.WaitFor(t, 30*time.Second, tc.runtime+"'s call standby worker", func() bool { pid = callStandbyPid(th, tc.runtime); return pid != 0 })
		if args := cmdline(t, pid); !slices.Contains(args, "--standby") || !slices.Contains(args, "-c") {
			t.Errorf("%s's call standby command line %q: want -c FILE --standby", tc.runtime, args)
		}
		if pidOf(th, tc.fn) != 0 {
			t.Fatalf("%s has an instance before its first request", tc.fn)
		}
		r := th.Call(t, tc.fn, "")
		var got struct {
			Context map[string]any     `json:"context"`
			Env     map[string]*string `json:"env"`
			Cwd     string             `json:"cwd"`
		}
		if r.Status != 200 || json.Unmarshal(r.Body, &got) != nil {
			t.Fatalf("%s: got %d %s", tc.fn, r.Status, r.Body)
		}
		// The pid the request was answered by is the standby's, which
		// was ready before the request was sent.
		p := pidOf(th, tc.fn)
		if p != pid {
			t.Errorf("%s runs in process %d, want the call standby worker %d started before the request", tc.fn, p, pid)
		}
		name := got.Env["BAETYL_SERVICE_INSTANCE_NAME"]
		if got.Env["GREETING"] == nil || *got.Env["GREETING"] != tc.greeting || name == nil || !strings.HasPrefix(*name, tc.fn+"-") ||
			got.Context["functionName"] != tc.fn {
			t.Errorf("%s: the bound standby does not run as the function: env %v, context %v", tc.fn, got.Env, got.Context)
		}
		if !strings.HasPrefix(got.Cwd, th.RunDir()+"/") {
			t.Errorf("%s: cwd %q, want the instance's directory under %s", tc.fn, got.Cwd, th.RunDir())
		}
		// Its standard input is no longer the handshake socket.
		if in, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/0", pid)); err != nil || in != "/dev/null" {
			t.Errorf("%s: the bound worker's standard input is %q (%v), want /dev/null", tc.fn, in, err)
		}
		var next int
		hosttest.WaitFor(t, 30*time.Second, "a new call standby worker", func() bool {
			next = callStandbyPid(th, tc.runtime)
			return next != 0 && next != pid
		})
		pids = append(pids, pid, next)
	}
	if n := strings.Count(th.Logs.String(), "standby worker bound"); n != 2 {
		t.Errorf("%d standby workers bound, want 2", n)
	}
	// Closing the host (as shutdown and reload do) stops the bound
	// workers and the waiting standbys.
	th.Close(context.Background())
	for _, pid := range pids {
		if alive(pid) {
			t.Errorf("process %d still runs after the host closed", pid)
		}
	}
}

// alive reports whether pid is a process that has not exited.
func alive(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(stat)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || len(s) <= i+2 || s[i+2] != 'Z'
}

// A Baetyl runtime the config declares keeps no standby: its workers start
// for their function with the command as written.
func TestForeignCallRuntimeHasNoStandby(t *testing.T) {
	requirePython(t)
	dir := testdata(t)
	th := hosttest.Start(t, dir, `
runtimes:
  baetyl-python3:
    protocol: call
    command: [python3, "{dir}/baetyl-runtime/runtime.py", -c, "{config}"]
functions:
  - {name: ctx, runtime: baetyl-python3, handler: ctx.handler, codedir: functions/ctx}
`, "{dir}", dir)
	if r := th.Call(t, "ctx", ""); r.Status != 200 {
		t.Fatalf("ctx: got %d %s", r.Status, r.Body)
	}
	if sb := th.Standbys(); len(sb) != 0 {
		t.Errorf("standbys %+v, want none for a declared Baetyl runtime", sb)
	}
	pid := pidOf(th, "ctx")
	if args := cmdline(t, pid); slices.Contains(args, "--standby") {
		t.Errorf("the Baetyl runtime's command line %q has --standby", args)
	}
	if strings.Contains(th.Logs.String(), "standby worker bound") {
		t.Error("a standby worker was bound for a declared Baetyl runtime")
	}
}

// standbyChildren returns the processes of polyfn (parent pid) started with
// --standby.
func standbyChildren(t *testing.T, parent int) []int {
	t.Helper()
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || !alive(pid) {
			continue
		}
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		s := string(stat)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(f) < 2 || f[1] != strconv.Itoa(parent) {
			continue
		}
		if data, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); err == nil && slices.Contains(strings.Split(string(data), "\x00"), "--standby") {
			pids = append(pids, pid)
		}
	}
	return pids
}

// A reload (SIGHUP) stops the old configuration's call standby workers,
// the bound one and the one waiting, and the new configuration starts its
// own; shutdown leaves none.
func TestCallStandbyAcrossReload(t *testing.T) {
	requirePython(t)
	code, cfg := versionApp(t, "protocol: call, ")
	s := serve(t, cfg)
	polyfn := s.cmd.Process.Pid
	admin := adminBase(t, s)
	readyStandby := func() int {
		resp, err := http.Get(admin + "/admin/functions")
		if err != nil {
			return 0
		}
		defer resp.Body.Close()
		var st host.AdminStatus
		if json.NewDecoder(resp.Body).Decode(&st) != nil {
			return 0
		}
		for _, sb := range st.Standby {
			if sb.Runtime == "python3" && sb.Protocol == config.ProtocolCall && sb.Ready {
				return sb.Pid
			}
		}
		return 0
	}
	var first, second int
	hosttest.WaitFor(t, 30*time.Second, "the call standby worker", func() bool { first = readyStandby(); return first != 0 })
	if got := get(t, s.base+"/function/v"); got != `"one"` {
		t.Fatalf("got %s", got)
	}
	// The standby was bound; another one takes its place.
	hosttest.WaitFor(t, 30*time.Second, "a second call standby worker", func() bool { second = readyStandby(); return second != 0 && second != first })
	old := standbyChildren(t, polyfn)
	if !slices.Contains(old, first) || !slices.Contains(old, second) {
		t.Fatalf("polyfn's --standby children %v, want the bound %d and the waiting %d", old, first, second)
	}
	writeVersion(t, code, "two")
	_ = s.cmd.Process.Signal(syscall.SIGHUP)
	hosttest.WaitFor(t, 30*time.Second, "the reloaded code to answer", func() bool { return get(t, s.base+"/function/v") == `"two"` })
	hosttest.WaitFor(t, 30*time.Second, "the old configuration's workers to be gone", func() bool {
		return !slices.ContainsFunc(old, alive)
	})
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(30 * time.Second):
		t.Fatal("polyfn did not exit after SIGTERM")
	}
	if left := standbyChildren(t, polyfn); len(left) != 0 {
		t.Errorf("call standby workers %v outlive polyfn", left)
	}
}

// A function whose environment sets a variable the interpreter reads only
// at start (PYTHON*, NODE_*, ...) is not served by its runtime's standby of
// either protocol, which started without it: its worker starts as usual,
// and the standby keeps waiting.
func TestStandbySkipsStartTimeVariables(t *testing.T) {
	requirePython(t)
	for _, protocol := range []config.Protocol{config.ProtocolCall, config.ProtocolStream} {
		t.Run(string(protocol), func(t *testing.T) {
			th := hosttest.Start(t, testdata(t), `
functions:
  - {name: py, runtime: python3, protocol: `+string(protocol)+`, handler: ctx.handler, codedir: functions/ctx, env: {PYTHONHASHSEED: "0"}}
`)
			standbyPid := func() int {
				for _, s := range th.Standbys() {
					if s.Runtime == "python3" && s.Protocol == protocol && s.Ready {
						return s.Pid
					}
				}
				return 0
			}
			var pid int
			hosttest.WaitFor(t, 30*time.Second, "python3's standby worker", func() bool { pid = standbyPid(); return pid != 0 })
			if r := th.Call(t, "py", ""); r.Status != 200 {
				t.Fatalf("py: got %d %s", r.Status, r.Body)
			}
			if p := pidOf(th, "py"); p == 0 || p == pid {
				t.Errorf("py runs in process %d, want a worker of its own (the standby is %d)", p, pid)
			}
			if p := standbyPid(); p != pid {
				t.Errorf("the standby is %d, want %d still waiting", p, pid)
			}
			if hashSeed, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pidOf(th, "py"))); err != nil || !strings.Contains(string(hashSeed), "PYTHONHASHSEED=0\x00") {
				t.Errorf("py's worker was not started with PYTHONHASHSEED=0 (%v)", err)
			}
		})
	}
}

// The semantic table of TestRuntimeSemantics, run over the call protocol by
// polyfn's own Python and Node.js runtimes (built-in, so with a call
// standby) on workers that were all bound from a standby.
func TestRuntimeSemanticsThroughCallStandby(t *testing.T) {
	requirePython(t)
	t.Setenv("POLYFN_SECRET", "must-not-reach-workers")
	configs := map[string]string{
		"python": `
  - {name: echo, protocol: call, handler: index.echo, codedir: functions/kinds}
  - {name: returns, protocol: call, handler: index.returns, codedir: functions/kinds}
  - {name: fail, protocol: call, handler: index.fail, codedir: functions/kinds}
  - {name: respond, protocol: call, handler: index.respond, codedir: functions/kinds}
  - {name: slow, protocol: call, handler: index.slow, codedir: functions/kinds}
  - {name: ctx, protocol: call, handler: ctx.handler, codedir: functions/ctx, env: {GREETING: hi, RUNTIME_VAR: from-runtime}}
`,
		"node": `
  - {name: echo, runtime: node, protocol: call, handler: index.echo, codedir: functions/node-kinds}
  - {name: returns, runtime: node, protocol: call, handler: index.returns, codedir: functions/node-kinds}
  - {name: fail, runtime: node, protocol: call, handler: index.fail, codedir: functions/node-kinds}
  - {name: respond, runtime: node, protocol: call, handler: index.respond, codedir: functions/node-kinds}
  - {name: slow, runtime: node, protocol: call, handler: index.slow, codedir: functions/node-kinds}
  - {name: ctx, runtime: node, protocol: call, handler: index.ctx, codedir: functions/node-kinds, env: {GREETING: hi, RUNTIME_VAR: from-runtime}}
`,
	}
	for _, lang := range []string{"python", "node"} {
		t.Run(lang, func(t *testing.T) {
			runtime := map[string]string{"python": "python3", "node": "node"}[lang]
			th := hosttest.Start(t, testdata(t), "functions:"+configs[lang])
			// Each function's first instance is a bound standby.
			for _, fn := range []string{"echo", "returns", "fail", "respond", "slow", "ctx"} {
				var pid int
				hosttest.WaitFor(t, 30*time.Second, runtime+"'s call standby worker", func() bool { pid = callStandbyPid(th, runtime); return pid != 0 })
				th.Call(t, fn, `{"kind": "none"}`)
				if p := pidOf(th, fn); p != pid {
					t.Fatalf("%s runs in process %d, want the call standby %d", fn, p, pid)
				}
			}
			semanticTable(t, th, lang)
		})
	}
}
