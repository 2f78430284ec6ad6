package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/polyfn/polyfn/internal/config"
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
