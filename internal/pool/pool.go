// Package pool keeps the instances that serve one function: it starts them
// on demand up to a maximum, gives each up to Concurrency invocations at
// once, queues invocations (bounded) while every slot is busy, replaces
// instances that die and stops the ones that stay idle.
package pool

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/polyfn/polyfn/internal/invoke"
)

// Instance is one worker as the pool sees it.
type Instance interface {
	ID() string
	Pid() int
	// Invoke runs one invocation; ctx carries its deadline.
	Invoke(ctx context.Context, req *invoke.Request) (*invoke.Result, error)
	// Done is closed when the worker has exited.
	Done() <-chan struct{}
	// ExitError says why an instance whose Done is closed ended on its own:
	// the worker's exit status and last stderr lines, or why the instance
	// replaced itself. It is nil when the instance ended because it was
	// stopped (Stop) while its worker was running.
	ExitError() error
	// Stop stops the worker and blocks until it is gone.
	Stop(ctx context.Context)
}

// StartFunc starts a new instance with the given id. Cancelling ctx aborts
// the start.
type StartFunc func(ctx context.Context, id string) (Instance, error)

// Options configure a pool.
type Options struct {
	Function    string
	Concurrency int
	Queue       int
	Min, Max    int
	Idle        time.Duration
	Start       StartFunc
	Log         *slog.Logger
	// RestartDelay is the first delay before a start that follows a failure
	// (a start that failed, or an instance that crashed within CrashWindow
	// of starting); it doubles with each further failure up to
	// MaxRestartDelay. Zero means 100 ms.
	RestartDelay time.Duration
	// MaxRestartDelay caps the delay; it is also the cool-down after which a
	// crash-looping function tries again. Zero means 30 s.
	MaxRestartDelay time.Duration
	// CrashWindow: an instance that exits on its own this soon after it
	// started counts as a failed start. Zero means 10 s.
	CrashWindow time.Duration
	// Observer, if set, is told about instance starts and losses.
	Observer Observer
}

// Observer is told about the pool's instances (metrics). Its methods must
// not block.
type Observer interface {
	InstanceStarted(function string, d time.Duration)
	InstanceStartFailed(function string)
	// InstanceLost is told once per instance lost: cause is
	// "lost_invocation" when the instance held invocations that failed with
	// it (it exited while running them, or failed one and was retired),
	// "crashed" when it exited on its own while idle.
	InstanceLost(function, cause string)
}

type nopObserver struct{}

func (nopObserver) InstanceStarted(string, time.Duration) {}
func (nopObserver) InstanceStartFailed(string)            {}
func (nopObserver) InstanceLost(string, string)           {}

// Pool serves one function. Its methods are safe for concurrent use.
type Pool struct {
	o      Options
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu       sync.Mutex
	insts    []*slot
	starting int
	waiters  []*waiter
	closed   bool
	seq      int
	lastErr  error
	// failures counts consecutive failed starts (early crashes included).
	failures int
	// broken is recorded when a start fails (or an instance crashes before
	// it was any use) and cleared when a start succeeds; lastErr says why.
	broken bool
	// backoff is the timer that ends the back-off after a failure: while it
	// is set no start begins, and backoffUntil is when it fires. Each
	// failure replaces it; backoffGen tells its callback whether it is
	// still the current one.
	backoff      *time.Timer
	backoffUntil time.Time
	backoffGen   int
	// state is the pool's state (Stats.State), recorded by changedLocked
	// at each event that may change it; changed, when someone waits for
	// a change (Changed), is closed then.
	state   string
	changed chan struct{}
	// drained, while Close waits for the invocations in flight, is closed
	// by the release of the last one.
	drained chan struct{}
}

// Pool states (Stats.State).
const (
	StateIdle     = "idle"
	StateStarting = "starting"
	StateReady    = "ready"
	StateBroken   = "broken"
)

// changedLocked records the pool's state after an event that may have
// changed it (an instance starting, started or gone, a start failed, a
// back-off ended) and wakes whoever waits on Changed.
func (p *Pool) changedLocked() {
	switch {
	case len(p.insts) > 0:
		p.state = StateReady
	case p.starting > 0:
		p.state = StateStarting
	case p.broken:
		p.state = StateBroken
	default:
		p.state = StateIdle
	}
	if p.changed != nil {
		close(p.changed)
		p.changed = nil
	}
}

// Changed returns a channel closed at the pool's next event: an instance
// starting, started or gone, a failed start, the end of a back-off, Close.
// Waiters check the condition they wait for after taking the channel, and
// take a new one once it is closed.
func (p *Pool) Changed() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.changed == nil {
		p.changed = make(chan struct{})
	}
	return p.changed
}

// brokenAfter is how many consecutive failures make a function broken.
const brokenAfter = 3

// failedLocked records a failed start and holds further starts back until
// the back-off ends.
func (p *Pool) failedLocked(err error) {
	p.lastErr = err
	p.failures++
	p.broken = true
	delay := p.o.RestartDelay << min(p.failures-1, 20)
	if delay <= 0 || delay > p.o.MaxRestartDelay {
		delay = p.o.MaxRestartDelay
	}
	if p.backoff != nil {
		p.backoff.Stop()
	}
	p.backoffGen++
	gen := p.backoffGen
	p.backoffUntil = time.Now().Add(delay)
	p.backoff = time.AfterFunc(delay, func() { p.endBackoff(gen) })
	p.o.Observer.InstanceStartFailed(p.o.Function)
	p.changedLocked()
}

// endBackoff ends the back-off gen, unless a later failure replaced it, and
// starts what the pool needs then (Min, or queued invocations).
func (p *Pool) endBackoff(gen int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if gen != p.backoffGen || p.backoff == nil {
		return
	}
	p.backoff, p.backoffUntil = nil, time.Time{}
	p.refillLocked()
	p.changedLocked()
}

// refillLocked starts instances up to Min and for queued invocations,
// unless the pool is closed or backing off.
func (p *Pool) refillLocked() {
	if p.closed || p.backoff != nil {
		return
	}
	for len(p.insts)+p.starting < p.o.Min {
		p.startLocked()
	}
	p.scaleLocked()
}

// backingOffLocked reports whether starts are held back after failures and
// nothing is up to serve: invocations then fail at once with the cause.
func (p *Pool) backingOffLocked() bool {
	return len(p.insts) == 0 && p.backoff != nil
}

func (p *Pool) brokenErrorLocked() error {
	return &invoke.Error{Kind: invoke.KindWorkerStart, Type: "WorkerStartFailed",
		Message: fmt.Sprintf("function %s failed to start %d times in a row, next attempt in %s: %v",
			p.o.Function, p.failures, time.Until(p.backoffUntil).Round(time.Millisecond), p.lastErr), Err: p.lastErr}
}

type slot struct {
	Instance
	inflight int
	lastUsed time.Time
	started  time.Time
	// served: the instance completed an invocation, so it is healthy.
	served bool
	// stopping: the instance is out of the pool; the pool stopped it, or
	// saw it end.
	stopping bool
	// retiring: the instance takes no new invocations and stops once its
	// in-flight ones have finished (Shed).
	retiring bool
	// lost: the instance was lost (it ended on its own, or failed an
	// invocation and was retired) and counted as such, once.
	lost bool
	// cut: Close stopped the instance at the shutdown limit; invocations it
	// still held fail as cut by the shutdown, not as a crash.
	cut bool
}

type grant struct {
	s   *slot
	err error
}

type waiter struct{ ch chan grant }

// New returns a pool; call Start to bring up its minimum instances.
func New(o Options) *Pool {
	if o.RestartDelay == 0 {
		o.RestartDelay = 100 * time.Millisecond
	}
	if o.MaxRestartDelay == 0 {
		o.MaxRestartDelay = 30 * time.Second
	}
	if o.CrashWindow == 0 {
		o.CrashWindow = 10 * time.Second
	}
	if o.Observer == nil {
		o.Observer = nopObserver{}
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Pool{o: o, ctx: ctx, cancel: cancel, state: StateIdle}
}

// Start starts the minimum instances in the background and the idle reaper.
func (p *Pool) Start() {
	p.mu.Lock()
	for len(p.insts)+p.starting < p.o.Min {
		p.startLocked()
	}
	p.mu.Unlock()
	p.wg.Add(1)
	go p.reap()
}

// Name returns the name the pool serves under (a function or an app).
func (p *Pool) Name() string { return p.o.Function }

// AtMin reports whether the pool has its minimum instances up, or is broken
// trying to start them.
func (p *Pool) AtMin() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.insts) >= p.o.Min || p.failures >= brokenAfter
}

// Prestart starts instances in the background until n are live or starting,
// within Max. Unlike Min they may stop when idle.
func (p *Pool) Prestart(n int) {
	p.mu.Lock()
	for len(p.insts)+p.starting < min(n, p.o.Max) && !p.closed {
		p.startLocked()
	}
	p.mu.Unlock()
}

// Invoke runs req on a free slot, starting an instance or waiting in the
// queue if needed. ctx bounds the whole invocation, waiting included.
//
// An invocation that never reached its worker (the worker was already
// gone) is retried once on another instance.
func (p *Pool) Invoke(ctx context.Context, req *invoke.Request) (*invoke.Result, error) {
	for attempt := 0; ; attempt++ {
		s, err := p.acquire(ctx, req.Function)
		if err != nil {
			return nil, err
		}
		req.Instance = s.ID()
		res, err := s.Invoke(ctx, req)
		if err != nil && invoke.KindOf(err) == invoke.KindWorkerCrashed {
			if p.cutAtShutdown(s) {
				err = &invoke.Error{Kind: invoke.KindUnavailable, Type: "Unavailable", Err: err,
					Message: fmt.Sprintf("function %s is shutting down: the invocation was still running at the shutdown limit", p.o.Function)}
			} else {
				p.retire(s, err)
			}
		}
		if err != nil && invoke.KindOf(err) == invoke.KindTimeout {
			if r, ok := s.Instance.(TimeoutRetirer); ok && r.RetireAfterTimeout() {
				p.retireWhenIdle(s, req.ID)
			}
		}
		p.release(s)
		var ie *invoke.Error
		if attempt == 0 && errors.As(err, &ie) && ie.Undelivered && ctx.Err() == nil {
			p.o.Log.Info("retrying an invocation its worker never received", "function", p.o.Function, "instance", s.ID(), "invocation", req.ID)
			continue
		}
		return res, err
	}
}

// acquire waits for a free slot for an invocation of function (the pool's
// own, or one of its app's), within ctx.
func (p *Pool) acquire(ctx context.Context, function string) (*slot, error) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil, invoke.Errorf(invoke.KindUnavailable, "function %s is shutting down", p.o.Function)
	}
	if s := p.freeLocked(); s != nil {
		s.inflight++
		p.mu.Unlock()
		return s, nil
	}
	if p.starting == 0 && p.backingOffLocked() {
		err := p.brokenErrorLocked()
		p.mu.Unlock()
		return nil, err
	}
	if len(p.waiters) >= p.o.Queue {
		p.mu.Unlock()
		return nil, invoke.Errorf(invoke.KindOverloaded, "function %s is overloaded: every slot is busy and %d invocations are queued", p.o.Function, p.o.Queue)
	}
	w := &waiter{ch: make(chan grant, 1)}
	p.waiters = append(p.waiters, w)
	p.scaleLocked()
	p.mu.Unlock()

	select {
	case g := <-w.ch:
		return g.s, g.err
	case <-ctx.Done():
	}
	p.mu.Lock()
	removed := p.removeWaiterLocked(w)
	live, starting := len(p.insts), p.starting
	p.mu.Unlock()
	if !removed {
		// A slot or an error was granted as the context ended.
		if g := <-w.ch; g.s != nil {
			p.release(g.s)
		}
	}
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return nil, invoke.TimeoutError(ctx, fmt.Sprintf("function %s was still queued for a free slot (pool %s: %d instances busy, %d starting)", function, p.o.Function, live, starting))
	}
	return nil, invoke.Errorf(invoke.KindUnavailable, "invocation cancelled while queued: %v", context.Cause(ctx))
}

// retire takes an instance that lost an invocation out of service, so no
// further invocation is sent to it, and starts a replacement if one is
// needed. An instance is counted lost once, by retire or by watch,
// whichever sees the loss first.
func (p *Pool) retire(s *slot, cause error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if s.lost || p.closed {
		return
	}
	s.lost = true
	p.lastErr = fmt.Errorf("instance %s failed an invocation: %w", s.ID(), cause)
	if !s.stopping {
		p.stopLocked(s, "")
	}
	p.o.Observer.InstanceLost(p.o.Function, "lost_invocation")
	p.refillLocked()
}

// cutAtShutdown reports whether Close stopped s at the shutdown limit.
func (p *Pool) cutAtShutdown(s *slot) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return s.cut
}

func (p *Pool) release(s *slot) {
	p.mu.Lock()
	if !s.served && !s.stopping {
		s.served = true
		p.failures = 0 // a worker that serves ends a crash loop
	}
	s.inflight--
	s.lastUsed = time.Now()
	if p.drained != nil && p.inflightLocked() == 0 {
		close(p.drained)
		p.drained = nil
	}
	if s.retiring && s.inflight == 0 && !s.stopping {
		p.stopLocked(s, "stopping retired instance")
		p.scaleLocked()
	}
	p.dispatchLocked()
	p.mu.Unlock()
}

// freeLocked returns the first live instance with a free slot. Filling the
// first instances first lets the others go idle and stop.
func (p *Pool) freeLocked() *slot {
	for _, s := range p.insts {
		if !s.stopping && !s.retiring && s.inflight < p.o.Concurrency {
			return s
		}
	}
	return nil
}

// dispatchLocked hands free slots to waiters in arrival order.
func (p *Pool) dispatchLocked() {
	for len(p.waiters) > 0 {
		s := p.freeLocked()
		if s == nil {
			return
		}
		s.inflight++
		w := p.waiters[0]
		p.waiters = p.waiters[1:]
		w.ch <- grant{s: s}
	}
}

func (p *Pool) removeWaiterLocked(w *waiter) bool {
	for i, x := range p.waiters {
		if x == w {
			p.waiters = append(p.waiters[:i], p.waiters[i+1:]...)
			return true
		}
	}
	return false
}

// scaleLocked starts instances for the queued invocations that the starting
// ones will not absorb, within Max.
func (p *Pool) scaleLocked() {
	if p.backoff != nil {
		return // endBackoff scales once the back-off ends
	}
	need := (len(p.waiters)+p.o.Concurrency-1)/p.o.Concurrency - p.starting
	for ; need > 0 && len(p.insts)+p.starting < p.o.Max && !p.closed; need-- {
		p.startLocked()
	}
}

func (p *Pool) startLocked() {
	p.starting++
	p.seq++
	id := fmt.Sprintf("%s-%d", p.o.Function, p.seq)
	p.wg.Add(1)
	go p.start(id)
	p.changedLocked()
}

func (p *Pool) start(id string) {
	defer p.wg.Done()
	began := time.Now()
	inst, err := p.o.Start(p.ctx, id)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.starting--
	defer p.changedLocked()
	if err != nil {
		if p.closed || p.ctx.Err() != nil {
			// Shutting down: the start was aborted, nothing failed.
			p.o.Log.Debug("instance start aborted", "function", p.o.Function, "instance", id, "error", err)
			return
		}
		p.failedLocked(err)
		p.o.Log.Error("instance failed to start", "function", p.o.Function, "instance", id, "failures", p.failures, "retry_in", time.Until(p.backoffUntil).Round(time.Millisecond), "error", err)
		if len(p.insts) == 0 && p.starting == 0 {
			// Nothing else can serve the queue: fail it now rather than at the timeout.
			for _, w := range p.waiters {
				w.ch <- grant{err: &invoke.Error{Kind: invoke.KindWorkerStart, Type: "WorkerStartFailed",
					Message: fmt.Sprintf("function %s: %v", p.o.Function, err), Err: err}}
			}
			p.waiters = nil
		}
		return
	}
	if p.closed {
		p.wg.Add(1)
		go func() { defer p.wg.Done(); inst.Stop(context.Background()) }()
		return
	}
	p.broken = false
	p.o.Observer.InstanceStarted(p.o.Function, time.Since(began))
	p.o.Log.Info("instance started", "function", p.o.Function, "instance", id, "pid", inst.Pid(), "duration", time.Since(began).Round(time.Microsecond))
	s := &slot{Instance: inst, lastUsed: time.Now(), started: time.Now()}
	p.insts = append(p.insts, s)
	p.dispatchLocked()
	p.wg.Add(1)
	go p.watch(s)
}

// watch removes an instance from the pool when its worker exits, logs an
// exit the pool did not ask for, and starts replacements for queued
// invocations or to keep Min.
func (p *Pool) watch(s *slot) {
	defer p.wg.Done()
	select {
	case <-s.Done():
	case <-p.ctx.Done():
		return
	}
	exitErr := s.ExitError() // nil when it was stopped while running
	p.mu.Lock()
	defer p.mu.Unlock()
	p.removeLocked(s)
	if p.closed {
		return
	}
	if exitErr != nil {
		// Whether or not the pool had already taken it out of service
		// (retire, after an invocation it held failed), it ended on its own.
		p.o.Log.Error("instance exited unexpectedly", "function", p.o.Function, "instance", s.ID(), "pid", s.Pid(), "inflight", s.inflight, "error", exitErr)
		p.lastErr = fmt.Errorf("instance %s exited: %w", s.ID(), exitErr)
		if !s.served && time.Since(s.started) < p.o.CrashWindow {
			p.failedLocked(p.lastErr) // crashed before it was any use: part of a crash loop
		}
	}
	if s.stopping {
		return // the pool had stopped it (and counted it, if it was lost)
	}
	// Lost, and seen here first: an instance still holding invocations lost
	// them, whether or not they have failed yet.
	s.stopping, s.lost = true, true
	cause := "crashed"
	if s.inflight > 0 {
		cause = "lost_invocation"
	}
	p.o.Observer.InstanceLost(p.o.Function, cause)
	p.wg.Add(1)
	go func() { defer p.wg.Done(); s.Stop(context.Background()) }() // release its directory and connection
	p.refillLocked()
}

// stopLocked takes s out of service and stops it in the background; its
// exit is then expected.
func (p *Pool) stopLocked(s *slot, msg string, attrs ...any) {
	s.stopping = true
	p.removeLocked(s)
	if msg != "" {
		p.o.Log.Info(msg, append([]any{"function", p.o.Function, "instance", s.ID()}, attrs...)...)
	}
	p.wg.Add(1)
	go func() { defer p.wg.Done(); s.Stop(context.Background()) }()
}

func (p *Pool) removeLocked(s *slot) {
	for i, x := range p.insts {
		if x == s {
			p.insts = append(p.insts[:i], p.insts[i+1:]...)
			p.changedLocked()
			return
		}
	}
}

// reap stops instances above Min that have been idle for Idle.
func (p *Pool) reap() {
	defer p.wg.Done()
	tick := min(max(p.o.Idle/4, 10*time.Millisecond), time.Second)
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		select {
		case <-p.ctx.Done():
			return
		case <-t.C:
		}
		now := time.Now()
		p.mu.Lock()
		for i := 0; i < len(p.insts); i++ {
			s := p.insts[i]
			if len(p.insts) <= p.o.Min {
				break
			}
			if s.inflight == 0 && now.Sub(s.lastUsed) >= p.o.Idle {
				p.stopLocked(s, "stopping idle instance", "idle", now.Sub(s.lastUsed).Round(time.Millisecond))
				i--
			}
		}
		p.mu.Unlock()
	}
}

// EvictIdle stops the instance that has been idle longest, if the pool has
// one above Min, to make room for another function's instance. It reports
// whether it did.
func (p *Pool) EvictIdle() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	victim := p.victimLocked(func(s *slot) bool { return s.inflight == 0 },
		func(a, b *slot) bool { return a.lastUsed.Before(b.lastUsed) })
	if victim == nil {
		return false
	}
	p.stopLocked(victim, "stopping idle instance to make room")
	return true
}

// victimLocked returns the instance to give up for another function: none
// while the pool is closed or at Min, else the first by better among the
// instances not stopping that ok accepts.
func (p *Pool) victimLocked(ok func(*slot) bool, better func(a, b *slot) bool) *slot {
	if p.closed || len(p.insts) <= p.o.Min {
		return nil
	}
	var victim *slot
	for _, s := range p.insts {
		if !s.stopping && ok(s) && (victim == nil || better(s, victim)) {
			victim = s
		}
	}
	return victim
}

// TimeoutRetirer is implemented by instances that cannot tell whether the
// worker gave back the slot of an invocation the host gave up on (the call
// protocol has no way to say so): after a timeout such an instance takes no
// new invocations and is replaced once its others have finished.
type TimeoutRetirer interface{ RetireAfterTimeout() bool }

func (p *Pool) retireWhenIdle(s *slot, invocation string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if s.stopping || s.retiring || p.closed {
		return
	}
	s.retiring = true
	p.o.Log.Warn("instance may still be running an invocation that timed out; it is replaced once its other invocations end",
		"function", p.o.Function, "instance", s.ID(), "invocation", invocation, "inflight", s.inflight-1)
}

// Shed makes room on a full host for another function: the instance with
// the fewest invocations in flight takes no new ones and stops once they
// have finished. At most one instance retires at a time, and Min is kept.
// It reports whether an instance was picked.
func (p *Pool) Shed() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, s := range p.insts {
		if s.retiring {
			return false
		}
	}
	victim := p.victimLocked(func(*slot) bool { return true },
		func(a, b *slot) bool { return a.inflight < b.inflight })
	if victim == nil {
		return false
	}
	if victim.inflight == 0 {
		p.stopLocked(victim, "stopping instance to give its place to another function")
		return true
	}
	victim.retiring = true
	p.o.Log.Info("retiring instance after its invocations to give its place to another function", "function", p.o.Function, "instance", victim.ID(), "inflight", victim.inflight)
	return true
}

// Load returns the pool's live instances and the ones starting.
func (p *Pool) Load() (live, starting int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.insts), p.starting
}

// InstanceInfo describes one live instance.
type InstanceInfo struct {
	ID string `json:"id"`
	// State is "idle" (no invocation in flight) or "busy".
	State    string `json:"state"`
	Pid      int    `json:"pid"`
	InFlight int    `json:"inflight"`
}

// Stats is a snapshot of a pool.
type Stats struct {
	// State is "ready" (an instance is up), "starting", "idle" (scaled to
	// zero) or "broken" (the last start failed, or the last instance
	// crashed before it was any use, and nothing is up; see LastError). It
	// stays broken until a start succeeds. It is recorded at the events
	// that change it (Changed), not read off a clock.
	State     string         `json:"state"`
	Instances []InstanceInfo `json:"instances"`
	Starting  int            `json:"starting"`
	InFlight  int            `json:"inflight"`
	Queued    int            `json:"queued"`
	LastError string         `json:"last_error,omitempty"`
	// BackoffUntil is set while starts are held back after a failure: no
	// start begins before it, and invocations meanwhile fail at once with
	// the cause when no instance is up.
	BackoffUntil time.Time `json:"backoff_until,omitzero"`
}

// Stats returns a snapshot of the pool.
func (p *Pool) Stats() Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	st := Stats{Starting: p.starting, Queued: len(p.waiters), Instances: []InstanceInfo{}}
	for _, s := range p.insts {
		state := "idle"
		if s.inflight > 0 {
			state = "busy"
		}
		st.InFlight += s.inflight
		st.Instances = append(st.Instances, InstanceInfo{ID: s.ID(), State: state, Pid: s.Pid(), InFlight: s.inflight})
	}
	if p.lastErr != nil {
		st.LastError = p.lastErr.Error()
	}
	st.BackoffUntil = p.backoffUntil
	st.State = p.state
	return st
}

// Close stops accepting invocations, fails the queued ones, waits for
// in-flight invocations until ctx is done, then stops every instance (at
// once, without their stop grace, once ctx is done). It
// blocks until all instances are gone and is safe to call more than once.
func (p *Pool) Close(ctx context.Context) {
	p.mu.Lock()
	p.closed = true
	if p.backoff != nil {
		p.backoff.Stop()
		p.backoff = nil
	}
	for _, w := range p.waiters {
		w.ch <- grant{err: invoke.Errorf(invoke.KindUnavailable, "function %s is shutting down", p.o.Function)}
	}
	p.waiters = nil
	p.changedLocked()
	if p.drained == nil && p.inflightLocked() > 0 {
		p.drained = make(chan struct{})
	}
	drained := p.drained
	p.mu.Unlock()

	if drained != nil {
		select {
		case <-ctx.Done():
		case <-drained:
		}
	}

	p.mu.Lock()
	insts := p.insts
	p.insts = nil
	for _, s := range insts {
		s.stopping = true
		s.cut = s.inflight > 0
	}
	p.changedLocked()
	p.mu.Unlock()
	p.cancel()
	var wg sync.WaitGroup
	for _, s := range insts {
		wg.Add(1)
		// Past ctx (the drain's bound, or a second signal) workers are
		// killed instead of given their stop grace.
		go func() { defer wg.Done(); s.Stop(ctx) }()
	}
	wg.Wait()
	p.wg.Wait()
}

// inflightLocked is the number of invocations in flight on the instances.
func (p *Pool) inflightLocked() int {
	n := 0
	for _, s := range p.insts {
		n += s.inflight
	}
	return n
}
