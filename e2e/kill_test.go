package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/polyfn/polyfn/internal/host"
	"github.com/polyfn/polyfn/internal/hosttest"
)

// kill -9 of one worker under load: only the invocations it held fail;
// every other invocation, of that function and of others, succeeds.
func TestKillWorkerUnderLoad(t *testing.T) {
	requirePython(t)
	th := hosttest.Start(t, testdata(t), `
functions:
  - {name: slow, handler: index.slow, codedir: functions/kinds, concurrency: 4, instances: {min: 2, max: 2}}
  - {name: echo, handler: index.echo, codedir: functions/kinds, instances: {min: 1}}
`)
	hosttest.WaitFor(t, 30*time.Second, "the minimum instances", func() bool { return pidsOf(th, "slow") == 2 && pidsOf(th, "echo") == 1 })
	victim := pidOf(th, "slow")

	var mu sync.Mutex
	failed, ok := map[string]int{}, map[string]int{}
	var wg sync.WaitGroup
	for i := 0; i < 24; i++ {
		fn := []string{"slow", "echo"}[i%2]
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := th.Call(t, fn, `{"n": 1}`)
			mu.Lock()
			defer mu.Unlock()
			if r.Status == 200 {
				ok[fn]++
				return
			}
			if r.Status != http.StatusBadGateway || r.Err.Error.Type != "WorkerCrashed" {
				t.Errorf("%s: got %d %+v, want 200, or 502 WorkerCrashed for the killed worker's invocations", fn, r.Status, r.Err)
			}
			failed[fn]++
		}()
		if i == 8 {
			hosttest.WaitFor(t, 10*time.Second, "invocations in flight on the victim", func() bool { return inflightOn(th, victim) > 0 })
			_ = syscall.Kill(victim, syscall.SIGKILL)
		}
	}
	wg.Wait()
	if failed["echo"] != 0 || ok["echo"] != 12 {
		t.Errorf("echo: %d ok, %d failed; another function's worker died, echo must not notice", ok["echo"], failed["echo"])
	}
	if failed["slow"] == 0 || failed["slow"] > 4 {
		t.Errorf("slow: %d failed; want the killed worker's in-flight invocations (1 to 4, its concurrency) and no more", failed["slow"])
	}
	if r := th.Call(t, "slow", "{}"); r.Status != 200 {
		t.Fatalf("after the kill: got %d", r.Status)
	}
}

func pidsOf(th *hosttest.Host, fn string) int {
	for _, f := range th.Status() {
		if f.Name == fn {
			return len(f.Instances)
		}
	}
	return 0
}

func inflightOn(th *hosttest.Host, pid int) int {
	for _, f := range th.Status() {
		for _, i := range f.Instances {
			if i.Pid == pid {
				return i.InFlight
			}
		}
	}
	return 0
}

// SIGKILL of the host leaves no worker alive: workers get the parent-death
// signal and die with it.
func TestHostSIGKILLLeavesNoWorker(t *testing.T) {
	requirePython(t)
	dir := tempDir(t)
	cfg := filepath.Join(dir, "polyfn.yaml")
	writeFile(t, cfg, fmt.Sprintf("functions:\n  - {name: echo, handler: index.echo, codedir: %q, instances: {min: 2}}\n", filepath.Join(testdata(t), "functions/kinds")))
	base, cmd, _ := startServe(t, cfg)
	var pids []int
	hosttest.WaitFor(t, 30*time.Second, "the workers and the standby", func() bool {
		resp, err := http.Get(base + "/admin/functions")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var st host.AdminStatus
		if json.NewDecoder(resp.Body).Decode(&st) != nil {
			return false
		}
		pids = pids[:0]
		for _, f := range st.Functions {
			for _, i := range f.Instances {
				pids = append(pids, i.Pid)
			}
		}
		for _, s := range st.Standby {
			if s.Ready {
				pids = append(pids, s.Pid)
			}
		}
		return len(pids) == 3
	})
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	for _, pid := range pids {
		hosttest.WaitFor(t, 10*time.Second, fmt.Sprintf("worker %d to die with the host", pid), func() bool {
			err := syscall.Kill(pid, 0)
			if errors.Is(err, syscall.ESRCH) {
				return true
			}
			b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
			return len(b) == 0 || bytesContainsState(b, 'Z')
		})
	}
}

func bytesContainsState(stat []byte, state byte) bool {
	for i := len(stat) - 1; i > 0; i-- {
		if stat[i] == ')' {
			return i+2 < len(stat) && stat[i+2] == state
		}
	}
	return false
}
