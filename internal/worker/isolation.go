package worker

import (
	"fmt"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/polyfn/polyfn/internal/config"
	"github.com/polyfn/polyfn/internal/limits"
)

// Isolation confines a worker beyond its process group: resource limits
// and the user it runs as. The zero value adds nothing.
type Isolation struct {
	// Limits bounds the memory, processes and CPU of the worker and
	// everything it starts, enforced by Limiter (required when Limits is set).
	Limits  config.Limits
	Limiter *limits.Limiter
	// Credential, when set, is the user and groups the worker runs as.
	Credential *syscall.Credential
	// Users, when set (and Credential is not), makes Lease give each worker
	// a user id of its own.
	Users *Users
	// lease is the user id leased for this worker, if any.
	lease *lease
	// OnOOMKill, if set, is told about every process of the worker the
	// kernel kills for exceeding Limits.Memory. It must not block.
	OnOOMKill func(OOMEvent)
}

// IsZero reports whether the isolation adds nothing.
func (iso Isolation) IsZero() bool {
	return iso.Limits.IsZero() && iso.Credential == nil && iso.Users == nil
}

type lease struct {
	users *Users
	uid   uint32
	mu    sync.Mutex
	ended bool // released: the id may be another worker's now
}

// Lease returns the isolation one worker starts with: for an isolation with
// Users, a copy that runs as a freshly leased user id (the group id is the
// same number, with no supplementary groups); otherwise iso itself. The
// lease ends when the worker started with it has exited and every process
// under the id was killed; a caller that does not start a worker with it
// must call Release.
func (iso Isolation) Lease() (Isolation, error) {
	if iso.Users == nil || iso.Credential != nil {
		return iso, nil
	}
	uid, err := iso.Users.Take()
	if err != nil {
		return iso, err
	}
	iso.Credential = &syscall.Credential{Uid: uid, Gid: uid, Groups: []uint32{}}
	iso.lease = &lease{users: iso.Users, uid: uid}
	return iso, nil
}

// Release ends the lease taken by Lease, killing whatever still runs under
// its id. It is safe to call more than once and without a lease.
func (iso Isolation) Release() {
	if l := iso.lease; l != nil {
		l.mu.Lock()
		defer l.mu.Unlock()
		if !l.ended {
			l.ended = true
			l.users.Release(l.uid)
		}
	}
}

// killLeased kills every process of the worker's leased user id, while the
// lease lasts (every such process is the worker's then; after it, the id
// may be another worker's).
func (iso Isolation) killLeased() {
	if l := iso.lease; l != nil {
		l.mu.Lock()
		defer l.mu.Unlock()
		if !l.ended {
			_ = KillUser(l.uid) // Release, at the lease's end, checks again
		}
	}
}

// OtherUser reports whether the worker runs as another user than the host.
func (iso Isolation) OtherUser() bool {
	return iso.Credential != nil && int(iso.Credential.Uid) != os.Getuid()
}

// Own gives paths (the worker's private directory, files it must read) to
// the user the worker runs as; it does nothing without a Credential.
func (iso Isolation) Own(paths ...string) error {
	c := iso.Credential
	if c == nil {
		return nil
	}
	for _, p := range paths {
		if err := os.Lchown(p, int(c.Uid), int(c.Gid)); err != nil {
			return fmt.Errorf("give %s to uid %d: %w", p, c.Uid, err)
		}
	}
	return nil
}

// OOMEvent reports processes of a worker killed for exceeding its memory
// limit.
type OOMEvent struct {
	Function, Instance string
	Pid                int
	// Kills is the number of processes killed since the last event.
	Kills int
	// Worker: the worker process itself was killed (it has exited);
	// otherwise a process it started was, and the worker lives on.
	Worker bool
	// Limit is the memory limit in bytes.
	Limit int64
}

// oomPoll is how often the OOM kills and pids limit refusals of a running
// worker's group are read.
const oomPoll = time.Second

// oomSettle is how long an OOM kill seen while the worker runs is held
// back, in case the victim is the worker itself and its exit reports it.
const oomSettle = 200 * time.Millisecond

// watchLimits reports, while the worker runs, OOM kills of processes it
// started (the worker's own is reported by its exit) and processes or
// threads it could not create at its pids limit.
func (p *Process) watchLimits() {
	t := time.NewTicker(oomPoll)
	defer t.Stop()
	oom := p.spec.Isolation.Limits.Memory > 0 && p.spec.Isolation.OnOOMKill != nil
	for {
		select {
		case <-p.exited:
			return
		case <-t.C:
		}
		if p.spec.Isolation.Limits.Pids > 0 {
			p.reportPidsLimit()
		}
		if !oom {
			continue
		}
		p.oomMu.Lock()
		seen := p.oomSeen
		p.oomMu.Unlock()
		if p.group.OOMKills() <= seen {
			continue
		}
		select {
		case <-p.exited:
			return
		case <-time.After(oomSettle):
		}
		p.reportOOM(false)
	}
}

// reportOOM tells OnOOMKill about kills not reported yet.
func (p *Process) reportOOM(exited bool) {
	p.oomMu.Lock()
	defer p.oomMu.Unlock()
	n := p.group.OOMKills()
	if n <= p.oomSeen {
		return
	}
	p.mu.Lock()
	ev := OOMEvent{Function: p.spec.Function, Instance: p.spec.Instance, Pid: p.Pid(), Kills: n - p.oomSeen,
		Worker: exited && p.oomKilled, Limit: int64(p.spec.Isolation.Limits.Memory)}
	p.mu.Unlock()
	p.oomSeen = n
	p.spec.Isolation.OnOOMKill(ev)
}

// reportPidsLimit logs the processes and threads the worker could not
// create at its pids limit since the last report: a worker that cannot
// create a thread may fail its invocations or stop answering.
func (p *Process) reportPidsLimit() {
	p.oomMu.Lock()
	defer p.oomMu.Unlock()
	n := p.group.PidsLimitHits()
	if n <= p.pidsSeen || p.spec.Log == nil {
		return
	}
	refused := n - p.pidsSeen
	p.pidsSeen = n
	p.mu.Lock()
	function, instance := p.spec.Function, p.spec.Instance
	p.mu.Unlock()
	p.spec.Log.Warn("worker at its pids limit: processes or threads could not be created", "function", function, "instance", instance,
		"pid", p.Pid(), "limit", p.spec.Isolation.Limits.Pids, "refused", refused)
}

// PidsLimitNote says, when the worker has been refused a process or thread
// at its pids limit, that it reached it; "" otherwise.
func (p *Process) PidsLimitNote() string {
	if p.group == nil || p.spec.Isolation.Limits.Pids == 0 || p.group.PidsLimitHits() == 0 {
		return ""
	}
	return fmt.Sprintf("the worker reached its limit of %d processes and threads (limits.pids)", p.spec.Isolation.Limits.Pids)
}

// OOMKilled reports whether the kernel killed the worker itself for
// exceeding its memory limit, waiting up to wait for it to exit (a worker
// that dies fails its calls a moment before its exit is observed).
func (p *Process) OOMKilled(wait time.Duration) bool {
	if p.group == nil || p.spec.Isolation.Limits.Memory == 0 {
		return false
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-p.exited:
	case <-t.C:
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.oomKilled
}

// recordExit notes whether the process that just exited was killed for
// memory: SIGKILL, not sent by the host, in a group where the kernel has
// killed for memory; and reports what its limits refused since the last
// poll.
func (p *Process) recordExit(state *os.ProcessState) {
	if p.group != nil && p.spec.Isolation.Limits.Memory > 0 {
		var ws syscall.WaitStatus
		ok := false
		if state != nil {
			ws, ok = state.Sys().(syscall.WaitStatus)
		}
		p.mu.Lock()
		p.oomKilled = ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL && !p.killed && p.group.OOMKills() > 0
		p.mu.Unlock()
		if p.spec.Isolation.OnOOMKill != nil {
			p.reportOOM(true)
		}
	}
	if p.group != nil && p.spec.Isolation.Limits.Pids > 0 {
		p.reportPidsLimit() // refusals since the last poll, which may be why it died
	}
	close(p.exited)
}

func (p *Process) oomStatus() string {
	return fmt.Sprintf("out of memory: killed by the kernel at the memory limit of %s (limits.memory)", limits.FormatSize(int64(p.spec.Isolation.Limits.Memory)))
}
