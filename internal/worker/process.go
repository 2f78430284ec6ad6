// Package worker starts and stops worker processes: private working
// directory, scrubbed environment, own process group, stdout and stderr turned
// into structured log records, polite stop then kill. Protocol adapters
// (internal/call) build instances on top of it.
package worker

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/polyfn/polyfn/internal/limits"
)

// Spec describes a worker process to start.
type Spec struct {
	// Function and Instance tag every log record of the process.
	Function string
	Instance string
	// Command is the argv; Command[0] is looked up on the host's PATH.
	Command []string
	// Dir is the working directory. It must exist.
	Dir string
	// Env is the complete environment of the process (see ScrubbedEnv).
	Env []string
	// Log receives the process's output, one record per line.
	Log *slog.Logger
	// Isolation confines the process beyond its process group: resource
	// limits and the user it runs as.
	Isolation Isolation
	// Stdin, when set, is the process's standard input (a standby worker's
	// handshake socket); the caller closes its copy once Start returned.
	// Nil: /dev/null.
	Stdin *os.File
}

// stderrTailLines is how many of the last stderr lines a Process keeps for
// reporting why it died.
const stderrTailLines = 20

// fatalLines is how many lines naming a runtime's fatal error a Process
// keeps: a Go program's cause comes before goroutine stacks and a register
// dump that fill the tail.
const fatalLines = 3

// fatalPrefixes start the lines that name a fatal error of the Go runtime
// (and of CPython's).
var fatalPrefixes = []string{"fatal error: ", "panic: ", "runtime/cgo: ", "runtime: failed ", "runtime: out of memory",
	"SIGABRT: ", "SIGSEGV: ", "SIGBUS: ", "Fatal Python error: "}

// maxLogLine bounds one log line; longer lines are cut.
const maxLogLine = 64 << 10

// outputDrainTimeout bounds how long Wait waits for the output pipes to
// close after the process exited (a grandchild may still hold them).
const outputDrainTimeout = time.Second

// Process is a running worker process in its own process group.
type Process struct {
	spec Spec
	cmd  *exec.Cmd
	done chan struct{}

	mu      sync.Mutex
	state   *os.ProcessState
	waitErr error
	tail    []string
	fatal   []string // the first lines naming a runtime's fatal error
	// stopped: the host asked the process to stop while it was running, so
	// its exit is expected; endedFirst: it had already exited on its own
	// when the host first asked.
	stopped    bool
	endedFirst bool
	killed     bool // the host sent SIGKILL before the process was reaped
	stopMu     sync.Mutex

	// group holds the process under Isolation.Limits; nil without limits.
	group limits.Group
	// exited is closed once the process has exited and oomKilled is known.
	exited    chan struct{}
	oomKilled bool
	oomMu     sync.Mutex
	oomSeen   int // OOM kills reported to Isolation.OnOOMKill
	pidsSeen  int // refusals at the pids limit logged (under oomMu)
}

// ScrubbedEnv builds a worker environment: PATH, HOME and LANG from the host,
// then each map in order (later maps win). Nothing else of the host's
// environment reaches the worker.
func ScrubbedEnv(extra ...map[string]string) []string {
	env := ScrubbedEnvMap(extra...)
	out := make([]string, 0, len(env))
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	return out
}

// ScrubbedEnvMap is ScrubbedEnv as a map.
func ScrubbedEnvMap(extra ...map[string]string) map[string]string {
	env := map[string]string{}
	for _, k := range []string{"PATH", "HOME", "LANG"} {
		if v, ok := os.LookupEnv(k); ok {
			env[k] = v
		}
	}
	for _, m := range extra {
		for k, v := range m {
			env[k] = v
		}
	}
	return env
}

// SetTags changes the function and instance that tag the process's log
// records (a standby worker bound to a function).
func (p *Process) SetTags(function, instance string) {
	p.mu.Lock()
	p.spec.Function, p.spec.Instance = function, instance
	p.mu.Unlock()
}

// Start starts the process. The caller must eventually call Stop or Kill.
func Start(spec Spec) (*Process, error) {
	if len(spec.Command) == 0 {
		return nil, errors.New("empty command")
	}
	path, err := exec.LookPath(spec.Command[0])
	if err != nil {
		return nil, fmt.Errorf("worker command: %w", err)
	}
	cmd := exec.Command(path, spec.Command[1:]...)
	cmd.Args[0] = spec.Command[0]
	cmd.Dir = spec.Dir
	cmd.Env = spec.Env
	cmd.SysProcAttr = sysProcAttr()
	cmd.SysProcAttr.Credential = spec.Isolation.Credential
	p := &Process{spec: spec, cmd: cmd, done: make(chan struct{}), exited: make(chan struct{})}
	if iso := spec.Isolation; !iso.Limits.IsZero() {
		if iso.Limiter == nil {
			return nil, errors.New("resource limits: no limiter")
		}
		if p.group, err = iso.Limiter.New(spec.Instance, iso.Limits); err != nil {
			return nil, fmt.Errorf("resource limits: %w", err)
		}
	}
	removeGroup := func() {
		if p.group != nil {
			if err := p.group.Remove(); err != nil && spec.Log != nil {
				spec.Log.Warn("worker cgroup left behind", "function", spec.Function, "instance", spec.Instance, "error", err)
			}
		}
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		removeGroup()
		return nil, err
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		outR.Close()
		outW.Close()
		removeGroup()
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = outW, errW
	if spec.Stdin != nil {
		cmd.Stdin = spec.Stdin
	}
	if p.group != nil {
		err = p.group.Start(cmd.SysProcAttr, cmd.Start)
	} else {
		err = cmd.Start()
	}
	outW.Close()
	errW.Close()
	if err == nil && p.group != nil {
		if err = p.group.Attach(cmd.Process.Pid); err != nil {
			// It must not run unconfined.
			err = fmt.Errorf("resource limits: %w", err)
		}
	}
	if err != nil {
		if cmd.Process != nil && cmd.ProcessState == nil {
			// Started, then failed to be confined: it must not live on, nor
			// stay a zombie.
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			_, _ = cmd.Process.Wait()
		}
		outR.Close()
		errR.Close()
		removeGroup()
		return nil, fmt.Errorf("start worker: %w", err)
	}
	if p.group != nil && (spec.Isolation.Limits.Memory > 0 && spec.Isolation.OnOOMKill != nil || spec.Isolation.Limits.Pids > 0) {
		go p.watchLimits()
	}
	var readers sync.WaitGroup
	readers.Add(2)
	go func() { defer readers.Done(); p.pump(outR, "stdout") }()
	go func() { defer readers.Done(); p.pump(errR, "stderr") }()
	go func() {
		state, werr := cmd.Process.Wait()
		p.recordExit(state)
		// The group dies with its leader: nothing a worker started outlives
		// it, not even what left the process group.
		p.killAll()
		drained := make(chan struct{})
		go func() { readers.Wait(); close(drained) }()
		select {
		case <-drained:
		case <-time.After(outputDrainTimeout):
			// Something in the group still holds the pipes: kill it.
			p.killAll()
			outR.Close()
			errR.Close()
			<-drained
		}
		removeGroup()
		spec.Isolation.Release()
		p.mu.Lock()
		p.state, p.waitErr = state, werr
		p.mu.Unlock()
		close(p.done)
	}()
	return p, nil
}

// CancelOnExit returns a context derived from ctx that is also cancelled
// when the process exits, for waits that must stop as soon as it dies.
func (p *Process) CancelOnExit(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(ctx)
	go func() {
		select {
		case <-p.done:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}

// Pid returns the process id, which is also its process group id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Done is closed once the process has exited and its output was read.
func (p *Process) Done() <-chan struct{} { return p.done }

// Exited reports whether the process has exited.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// ExitStatus describes how the process ended ("exit status 1", "signal:
// killed"), or "running".
func (p *Process) ExitStatus() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case p.oomKilled:
		return p.oomStatus()
	case p.state != nil:
		return p.state.String()
	case p.waitErr != nil:
		return p.waitErr.Error()
	}
	return "running"
}

// Stopped reports whether the process ended because the host stopped it,
// so its exit is expected rather than a crash: the host asked it to stop
// (Stop, Kill, ExpectExit) while it was still running, and it did not die
// of a signal the host had not sent (a SIGKILL from elsewhere, such as the
// kernel's at the memory limit, or a SIGSEGV). Before the process has
// exited it reports whether a stop was asked for.
func (p *Process) Stopped() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.stopped {
		return false
	}
	if p.state != nil {
		if ws, ok := p.state.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			switch ws.Signal() {
			case syscall.SIGTERM:
			case syscall.SIGKILL:
				return p.killed
			default:
				return false
			}
		}
	}
	return true
}

// ExitedWithin reports whether the process exits within d: a worker that
// died fails its invocations a moment before its exit is observed.
func (p *Process) ExitedWithin(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-p.done:
		return true
	case <-t.C:
		return false
	}
}

// StderrTail returns the last lines the process wrote to stderr.
func (p *Process) StderrTail() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.tail...)
}

// ExitError describes the exit of a process that ended on its own, with its
// status and last stderr lines, and whether it had reached its pids limit.
func (p *Process) ExitError() error {
	msg := p.ExitStatus()
	p.mu.Lock()
	fatal := strings.Join(p.fatal, " | ")
	p.mu.Unlock()
	if fatal != "" {
		msg += "; " + fatal
	}
	if tail := p.StderrTail(); len(tail) > 0 {
		const show = 5
		if len(tail) > show {
			tail = tail[len(tail)-show:]
		}
		msg += "; last stderr: " + strings.Join(tail, " | ")
	}
	if note := p.PidsLimitNote(); note != "" {
		msg += "; " + note
	}
	return errors.New(msg)
}

// Stop asks the process group to exit with SIGTERM, waits up to grace, then
// kills the group. It blocks until the process has exited or ctx is done, and
// is safe to call more than once and concurrently with Kill.
func (p *Process) Stop(ctx context.Context, grace time.Duration) {
	p.markStopped()
	if p.Exited() {
		p.killGroup() // reap anything left in the group
		return
	}
	_ = syscall.Kill(-p.Pid(), syscall.SIGTERM)
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-p.done:
	case <-t.C:
	case <-ctx.Done():
	}
	p.Kill()
}

// Kill kills the whole process group and blocks until the process has
// exited. It is safe to call more than once.
func (p *Process) Kill() {
	p.markStopped()
	p.killGroup()
	<-p.done
}

// ExpectExit records that the host is about to stop the process by other
// means (a protocol message asking it to exit), so that its exit is
// expected — unless it has already exited on its own. Stop and Kill record
// it themselves.
func (p *Process) ExpectExit() { p.markStopped() }

func (p *Process) markStopped() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopped || p.endedFirst {
		return
	}
	select {
	case <-p.exited:
		p.endedFirst = true
		return
	default:
	}
	if exitedChild(p.Pid()) {
		p.endedFirst = true
		return
	}
	p.stopped = true
}

func (p *Process) killGroup() {
	p.mu.Lock()
	select {
	case <-p.exited: // too late to be why it died
	default:
		p.killed = true
	}
	p.mu.Unlock()
	p.killAll()
}

// killAll kills the process group and, under resource limits, every
// process of the worker's cgroup, including those that left the process
// group (setsid).
func (p *Process) killAll() {
	_ = syscall.Kill(-p.Pid(), syscall.SIGKILL)
	if p.group != nil {
		p.group.Kill()
	}
	p.spec.Isolation.killLeased()
}

// pump turns each line of r into a log record. Lines that are JSON objects
// with a "msg" field (the log format of polyfn's runtimes) keep their level
// and fields; other lines are logged as text, stderr at warn level.
func (p *Process) pump(r io.ReadCloser, stream string) {
	defer r.Close()
	br := bufio.NewReaderSize(r, 64<<10)
	for {
		line, err := readLine(br)
		if len(line) > 0 || err == nil {
			rec := parseLine(line, stream)
			if stream == "stderr" {
				p.mu.Lock()
				p.tail = append(p.tail, rec.msg)
				if len(p.tail) > stderrTailLines {
					p.tail = p.tail[len(p.tail)-stderrTailLines:]
				}
				if len(p.fatal) < fatalLines && hasAnyPrefix(rec.msg, fatalPrefixes) {
					p.fatal = append(p.fatal, rec.msg)
				}
				p.mu.Unlock()
			}
			p.emit(rec, stream)
		}
		if err != nil {
			return
		}
	}
}

func hasAnyPrefix(s string, prefixes []string) bool {
	for _, p := range prefixes {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}

// readLine reads one line without its newline, cutting it at maxLogLine and
// discarding the rest of an overlong line.
func readLine(br *bufio.Reader) (string, error) {
	var b []byte
	for {
		chunk, isPrefix, err := br.ReadLine()
		if len(b) < maxLogLine {
			b = append(b, chunk[:min(len(chunk), maxLogLine-len(b))]...)
		}
		if err != nil {
			return string(b), err
		}
		if !isPrefix {
			return string(b), nil
		}
	}
}
