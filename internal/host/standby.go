package host

import (
	"context"
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/polyfn/polyfn/internal/call"
	"github.com/polyfn/polyfn/internal/config"
	"github.com/polyfn/polyfn/internal/pool"
	"github.com/polyfn/polyfn/internal/stream"
)

// standbyRetry is how long a runtime waits before trying again to start a
// standby worker after one failed to start.
const standbyRetry = 5 * time.Second

// standby keeps one started, initialised worker of a runtime that no
// function owns yet. A pool about to start an instance takes it instead and
// binds it to its function, which costs an environment reload and a
// function load instead of a process start and the runtime's imports.
// Stream workers are bound over the stream; call workers of polyfn's own
// runtimes over their standby handshake (internal/call).
type standby struct {
	h  *Host
	rt config.Runtime
	// key is the runtime's name, with "/call" for the call protocol's.
	key string

	mu       sync.Mutex
	ready    standbyWorker
	starting bool
	closed   bool
	seq      int
	failedAt time.Time
	wg       sync.WaitGroup
}

// standbyWorker is a standby worker of either protocol.
type standbyWorker interface {
	pool.Instance
	Bind(ctx context.Context, name, id string, functions []config.Function, env map[string]string) error
}

// startVarPrefixes start the names of variables that an interpreter, gRPC
// or the dynamic loader read only when a process starts.
var startVarPrefixes = []string{"PYTHON", "NODE_", "UV_", "LD_", "GRPC_"}

// readAtStart returns a variable of env that a worker reads only when it
// starts, or "": a standby worker of either protocol, started before, would
// not see it (a stream worker's environment reload sets it too late).
func readAtStart(env map[string]string) string {
	for k := range env {
		for _, p := range startVarPrefixes {
			if strings.HasPrefix(k, p) {
				return k
			}
		}
	}
	return ""
}

// standbyKey names the standby of runtime rt: one per runtime and protocol.
func standbyKey(rt config.Runtime) string {
	if rt.Protocol == config.ProtocolCall {
		return rt.Name + "/call"
	}
	return rt.Name
}

// fillLocked starts a standby worker in the background if none is ready or
// starting.
func (s *standby) fillLocked() {
	if s.closed || s.ready != nil || s.starting || time.Since(s.failedAt) < standbyRetry {
		return
	}
	s.starting = true
	s.seq++
	// A leading '_' is not allowed in function and app names, so that a
	// standby's id (and its directory) is never a function instance's
	// (NAME-N): a function named python3-standby has python3-standby-1.
	id := fmt.Sprintf("_%s-standby-%d", s.rt.Name, s.seq)
	if s.rt.Protocol == config.ProtocolCall {
		id = fmt.Sprintf("_%s-call-standby-%d", s.rt.Name, s.seq)
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		var inst standbyWorker
		_, err := s.h.startAdmitted(s.h.buildCtx, nil, func() (pool.Instance, error) {
			var (
				w   standbyWorker
				err error
			)
			if s.rt.Protocol == config.ProtocolCall {
				w, err = call.StartStandby(s.h.buildCtx, call.Options{
					Runtime: s.rt, Name: s.rt.Name + " (call standby)", ID: id,
					Dir: filepath.Join(s.h.runDir, id), Log: s.h.log, Isolation: s.h.standbyIso, Refusals: s.h.metrics,
				})
			} else {
				w, err = stream.Start(s.h.buildCtx, stream.Options{
					Server: s.h.stream, Runtime: s.rt, Name: s.rt.Name + " (standby)", ID: id,
					Dir: filepath.Join(s.h.runDir, id), Log: s.h.log, Isolation: s.h.standbyIso,
				})
			}
			if err != nil {
				return nil, err
			}
			inst = w
			return w, nil
		})
		s.mu.Lock()
		defer s.mu.Unlock()
		s.starting = false
		if err != nil {
			if !s.closed {
				s.failedAt = time.Now()
				s.h.log.Warn("standby worker failed to start", "runtime", s.rt.Name, "protocol", s.rt.Protocol, "error", err)
			}
			return
		}
		if s.closed {
			go inst.Stop(context.Background())
			return
		}
		s.ready = inst
		s.h.metrics.StandbyReady(s.key)
	}()
}

// take returns the ready standby worker, or nil, and starts the next one.
func (s *standby) take() standbyWorker {
	s.mu.Lock()
	defer s.mu.Unlock()
	inst := s.ready
	s.ready = nil
	if inst != nil {
		select {
		case <-inst.Done(): // died while waiting
			go inst.Stop(context.Background())
			inst = nil
		default:
		}
	}
	s.fillLocked()
	return inst
}

// StandbyStatus describes a runtime's standby worker.
type StandbyStatus struct {
	Runtime  string          `json:"runtime"`
	Protocol config.Protocol `json:"protocol"`
	Ready    bool            `json:"ready"`
	Pid      int             `json:"pid,omitempty"`
}

// Standbys returns the state of every runtime's standby worker.
func (h *Host) Standbys() []StandbyStatus {
	out := make([]StandbyStatus, 0, len(h.standbys))
	for _, s := range h.standbys {
		s.mu.Lock()
		st := StandbyStatus{Runtime: s.rt.Name, Protocol: s.rt.Protocol, Ready: s.ready != nil}
		if s.ready != nil {
			st.Pid = s.ready.Pid()
		}
		s.mu.Unlock()
		out = append(out, st)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Runtime != out[j].Runtime {
			return out[i].Runtime < out[j].Runtime
		}
		return out[i].Protocol > out[j].Protocol // stream first
	})
	return out
}

// close stops the waiting standby worker and any being started.
func (s *standby) close() {
	s.mu.Lock()
	s.closed = true
	inst := s.ready
	s.ready = nil
	s.mu.Unlock()
	if inst != nil {
		inst.Stop(context.Background())
	}
	s.wg.Wait()
}

// bindStandby tries to serve spec's next instance with the runtime's
// standby worker; nil means start a worker as usual.
func (h *Host) bindStandby(ctx context.Context, spec *poolSpec, rt config.Runtime, id string) pool.Instance {
	sb := h.standbys[standbyKey(rt)]
	if sb == nil {
		return nil
	}
	if k := readAtStart(spec.env); k != "" {
		h.log.Debug("the function's environment sets a variable read at process start: not served by the standby", "function", spec.name, "protocol", rt.Protocol, "variable", k)
		return nil
	}
	inst := sb.take()
	if inst == nil {
		return nil
	}
	began := time.Now()
	if err := inst.Bind(ctx, spec.name, id, spec.functions, spec.env); err != nil {
		h.log.Warn("standby worker could not be bound; starting a new one", "function", spec.name, "error", err)
		inst.Stop(context.Background())
		return nil
	}
	h.metrics.StandbyBound(sb.key)
	h.log.Debug("standby worker bound", "function", spec.name, "protocol", rt.Protocol, "instance", id, "pid", inst.Pid(), "duration", time.Since(began).Round(time.Microsecond))
	return inst
}
