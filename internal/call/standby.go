package call

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"time"

	"github.com/polyfn/polyfn/internal/config"
	"github.com/polyfn/polyfn/internal/worker"
)

// StandbyFlag is appended to the call command of polyfn's own runtimes to
// start a standby worker: one that imports what call mode needs, then
// waits for its configuration on its standard input (see
// docs/protocols.md#standby-call-workers).
const StandbyFlag = "--standby"

// The worker's lines of the standby handshake.
const (
	// handshakeReady: imports done, waiting for the configuration.
	handshakeReady = "ready\n"
	// handshakeServing: configured, functions loaded, listening.
	handshakeServing = "serving\n"
)

// handshakeExitWait bounds how long a failed handshake waits for the
// worker's exit to be observed, to report how the worker ended.
const handshakeExitWait = time.Second

// claim is the host's line of the standby handshake.
type claim struct {
	// Env is the worker's whole environment, as a worker started for
	// the function gets it.
	Env map[string]string `json:"env"`
}

// StartStandby starts a call-protocol worker of one of polyfn's own
// runtimes that serves no function yet: its command is the runtime's call
// command with StandbyFlag, its environment the runtime's alone, and its
// standard input a socket to the host. It returns once the worker said it
// is ready (within the runtime's start timeout); Bind gives it its
// functions. o.Functions and o.Env are not used.
func StartStandby(ctx context.Context, o Options) (*Instance, error) {
	iso, err := o.Isolation.Lease()
	if err != nil {
		return nil, err
	}
	o.Isolation = iso
	inst, err := startStandby(ctx, o)
	if err != nil {
		iso.Release()
	}
	return inst, err
}

func startStandby(ctx context.Context, o Options) (*Instance, error) {
	if err := os.MkdirAll(o.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("instance directory: %w", err)
	}
	if err := o.Isolation.Own(o.Dir); err != nil {
		os.RemoveAll(o.Dir)
		return nil, fmt.Errorf("instance directory: %w", err)
	}
	hostEnd, workerEnd, err := socketPair()
	if err != nil {
		os.RemoveAll(o.Dir)
		return nil, fmt.Errorf("standby handshake socket: %w", err)
	}
	own := map[string]string{}
	if o.Isolation.OtherUser() {
		own["HOME"] = o.Dir
	}
	proc, err := worker.Start(worker.Spec{
		Function:  o.Name,
		Instance:  o.ID,
		Command:   append(command(o.Runtime.Command, configPath(o.Dir)), StandbyFlag),
		Dir:       o.Dir,
		Env:       worker.ScrubbedEnv(o.Runtime.Env, own),
		Log:       o.Log,
		Isolation: o.Isolation,
		Stdin:     workerEnd,
	})
	workerEnd.Close() // the worker holds it: its exit ends the handshake
	if err != nil {
		hostEnd.Close()
		os.RemoveAll(o.Dir)
		return nil, err
	}
	inst := &Instance{opts: o, proc: proc, handshake: hostEnd}
	if err := inst.await(ctx, handshakeReady, "ready"); err != nil {
		inst.Stop(context.Background())
		return nil, err
	}
	return inst, nil
}

// socketPair returns a connected pair of Unix stream sockets: the host's
// end, and the worker's as a file to be its standard input.
func socketPair() (net.Conn, *os.File, error) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, err
	}
	hf := os.NewFile(uintptr(fds[0]), "standby-handshake")
	wf := os.NewFile(uintptr(fds[1]), "standby-handshake-worker")
	c, err := net.FileConn(hf) // a duplicate, in the runtime's poller
	hf.Close()
	if err != nil {
		wf.Close()
		return nil, nil, err
	}
	return c, wf, nil
}

// await reads the worker's next handshake line, which must be want, within
// the runtime's start timeout.
func (i *Instance) await(ctx context.Context, want, stage string) error {
	timeout := i.opts.Runtime.StartTimeout.D()
	c := i.handshake
	c.SetReadDeadline(time.Now().Add(timeout))
	stop := context.AfterFunc(ctx, func() { c.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	buf := make([]byte, len(want))
	_, err := io.ReadFull(c, buf)
	switch {
	case err == nil && string(buf) == want:
		return nil
	case err == nil:
		return fmt.Errorf("standby worker: unexpected handshake line %q, want %q", buf, want)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		// The worker closed its standard input: it is exiting.
		if i.proc.ExitedWithin(handshakeExitWait) {
			return fmt.Errorf("standby worker exited before it was %s: %w", stage, i.proc.ExitError())
		}
		return fmt.Errorf("standby worker closed its handshake before it was %s", stage)
	case ctx.Err() != nil:
		return fmt.Errorf("standby worker start aborted: %w", ctx.Err())
	case errors.Is(err, os.ErrDeadlineExceeded):
		return fmt.Errorf("standby worker not %s within start timeout %s (runtimes.%s.start_timeout)", stage, timeout, i.opts.Runtime.Name)
	}
	return fmt.Errorf("standby handshake: %w", err)
}

// Bind gives a standby worker (StartStandby) its functions: the host
// writes their runtime config file where the worker's -c argument points,
// sends the worker its whole environment (the one a worker started for
// them gets, BAETYL_SERVICE_INSTANCE_ADDRESS included), waits until the
// worker listens and connects to it as Start does. name and id rename the
// instance; its directory stays the one it was started in. On error the
// caller must stop the instance.
func (i *Instance) Bind(ctx context.Context, name, id string, functions []config.Function, env map[string]string) error {
	if i.handshake == nil {
		return errors.New("not a standby worker, or already bound")
	}
	o := i.opts
	o.Name, o.ID, o.Env, o.Functions = name, id, env, functions
	if _, err := writeConfig(o); err != nil {
		return err
	}
	addr, target, err := listenAddress(o.Runtime.Address, o.Dir)
	if err != nil {
		return err
	}
	line, err := json.Marshal(claim{Env: worker.ScrubbedEnvMap(o.Runtime.Env, o.Env, ownEnv(o, addr))})
	if err != nil {
		return err
	}
	i.opts = o
	i.proc.SetTags(name, id)
	i.handshake.SetWriteDeadline(time.Now().Add(o.Runtime.StartTimeout.D()))
	if _, err := i.handshake.Write(append(line, '\n')); err != nil {
		if i.proc.ExitedWithin(exitWait) {
			return fmt.Errorf("standby worker exited before it was bound: %w", i.proc.ExitError())
		}
		return fmt.Errorf("standby handshake: %w", err)
	}
	if err := i.await(ctx, handshakeServing, "serving"); err != nil {
		return err
	}
	i.handshake.Close()
	i.handshake = nil
	return i.connect(ctx, target)
}
