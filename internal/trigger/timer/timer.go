// Package timer is the timer trigger: it invokes functions on the schedules
// of their triggers.timer entries (docs/triggers.md).
//
// Each schedule ticks on its own. A tick invokes the function with trigger
// timer, the tick's scheduled time as the timestamp and the entry's payload.
// Without overlap, a tick that comes while the previous run of the same
// schedule is still going is skipped. Ticks missed while the host could not
// run them (the process was paused, the machine slept, the clock jumped) are
// not replayed: the schedule resumes at its next tick.
package timer

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/polyfn/polyfn/internal/config"
	"github.com/polyfn/polyfn/internal/invoke"
)

func init() {
	// The config is validated by the parser that runs the schedules.
	config.ScheduleParser = func(spec string) error {
		_, err := Parse(spec)
		return err
	}
}

// maxSleep bounds one wait for a tick, so that a schedule notices within
// this long that the wall clock was set or the machine slept.
const maxSleep = time.Minute

// Invoker runs invocations; *host.Host implements it.
type Invoker interface {
	Invoke(ctx context.Context, req *invoke.Request) (*invoke.Result, error)
}

// Observer counts skipped ticks; *metrics.Metrics implements it.
type Observer interface {
	TimerTickSkipped(function string)
}

// Options configure a Scheduler.
type Options struct {
	// Functions are the functions whose triggers.timer entries run.
	Functions []config.Function
	Invoker   Invoker
	// Observer, when set, counts skipped ticks.
	Observer Observer
	Log      *slog.Logger
	// States is shared by the schedulers of successive configurations;
	// nil gives the scheduler states of its own.
	States *States
	// Leader, when set, gates every tick: it fires only while Leader leads.
	Leader Leader
	// Apps are the timers of app functions (AppHost).
	Apps []AppTimer
	// Startup says whether the app timer of this key still owes its run on
	// startup (RunOnStartup), and marks it run; nil runs none.
	Startup func(key string) bool
}

// Scheduler runs the timers of one host.
type Scheduler struct {
	inv     Invoker
	obs     Observer
	log     *slog.Logger
	leader  Leader
	now     func() time.Time // the wall clock; tests move it
	entries []*entry

	mu     sync.Mutex
	cancel context.CancelFunc // nil before Start
	done   bool
	loops  sync.WaitGroup
}

// entry is one triggers.timer entry of a function.
type entry struct {
	function string
	spec     string
	overlap  bool
	payload  []byte
	sched    Schedule
	state    *state
	// For the timer of an app function: its app, the payload of a tick,
	// and whether it runs on startup in this scheduler.
	app     string
	info    func(Tick) []byte
	startup bool
}

// state is what the ticks of one schedule share. It lives in the States of
// the timer trigger, as long as the process, and is shared by every
// scheduler that runs the same schedule (same function, schedule and
// payload), so that across a reload, while the new configuration starts
// and the old one still runs, each tick is taken once and a run of the old
// configuration counts for overlap in the new one.
type state struct {
	mu sync.Mutex
	// last is the latest tick taken, run or skipped; lastRun the latest
	// that ran.
	last, lastRun time.Time
	// running counts the runs in flight.
	running int
	// skipped counts the ticks skipped during the current run.
	skipped int
}

// States holds the state of each schedule, for the schedulers of every
// configuration of one process; the zero value is ready to use.
type States struct {
	mu sync.Mutex
	m  map[string]*state
}

func (ss *States) of(key string) *state {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.m == nil {
		ss.m = map[string]*state{}
	}
	st := ss.m[key]
	if st == nil {
		st = &state{}
		ss.m[key] = st
	}
	return st
}

// keep drops the state of every schedule that no entry of keep runs.
func (ss *States) keep(entries []*entry) {
	live := map[*state]bool{}
	for _, e := range entries {
		live[e.state] = true
	}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	for k, st := range ss.m {
		if !live[st] {
			delete(ss.m, k)
		}
	}
}

// NewScheduler returns a scheduler for the timers of o.Functions; Start
// starts it.
// A schedule that does not parse is logged and left out (config validation
// reports it with its position before a host is built).
func NewScheduler(o Options) *Scheduler {
	s := &Scheduler{inv: o.Invoker, obs: o.Observer, log: o.Log, leader: o.Leader, now: time.Now}
	if o.States == nil {
		o.States = &States{}
	}
	for _, f := range o.Functions {
		for _, t := range f.Triggers.Timer {
			sched, err := Parse(t.Schedule)
			if err != nil {
				s.log.Error("timer not scheduled: invalid schedule", "function", f.Name, "schedule", t.Schedule, "error", err)
				continue
			}
			payload := []byte(t.Payload)
			s.entries = append(s.entries, &entry{function: f.Name, spec: t.Schedule, overlap: t.Overlap,
				payload: payload, sched: sched, state: o.States.of(f.Name + "\x00" + t.Schedule + "\x00" + t.Payload)})
		}
	}
	for _, a := range o.Apps {
		key := "app\x00" + a.App + "\x00" + a.Function + "\x00" + a.Spec
		e := &entry{function: a.Function, app: a.App, spec: a.Spec, sched: a.Schedule, info: a.Payload, state: o.States.of(key)}
		e.startup = a.RunOnStartup && o.Startup != nil && o.Startup(key)
		s.entries = append(s.entries, e)
	}
	return s
}

// Start starts ticking. It does nothing after Stop or a first Start.
func (s *Scheduler) Start() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done || s.cancel != nil {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	for _, e := range s.entries {
		next := e.sched.Next(s.now())
		s.log.Info("timer scheduled", e.attrs("next", next)...)
		if e.startup {
			s.runOnStartup(e)
		}
		s.loops.Add(1)
		go s.loop(ctx, e, next)
	}
}

// Stop ends the ticking and waits until no further tick can start a run.
// Runs in flight go on: they belong to the host's drain. Stop is safe to
// call more than once, and before Start.
func (s *Scheduler) Stop() {
	s.mu.Lock()
	s.done = true
	if s.cancel != nil {
		s.cancel()
	}
	s.mu.Unlock()
	s.loops.Wait()
}

// loop waits for each tick of e, from next on, and takes it.
func (s *Scheduler) loop(ctx context.Context, e *entry, next time.Time) {
	defer s.loops.Done()
	t := time.NewTimer(maxSleep)
	defer t.Stop()
	for {
		if next.IsZero() {
			s.log.Warn("timer schedule has no further ticks", e.attrs()...)
			return
		}
		now := s.now()
		if wait := next.Sub(now); wait > 0 {
			if earlier := e.sched.Next(now); earlier.Before(next) {
				// The wall clock was set back: follow it.
				s.log.Warn("timer: the clock went back; the schedule follows it", e.attrs("next", earlier)...)
				next = earlier
				continue
			}
			t.Reset(min(wait, maxSleep))
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			continue // look at the clock again
		}
		if ctx.Err() != nil {
			return
		}
		if following := e.sched.Next(next); following.After(now) {
			s.tick(e, next)
		} else {
			// Woken after the tick that follows this one: the host could
			// not run, and whatever ticks it missed are not replayed.
			s.log.Warn("timer ticks missed; they are not replayed", e.attrs("missed_from", next, "next", e.sched.Next(now))...)
		}
		next = e.sched.Next(now)
	}
}

// tick takes the tick at: it runs the function, or skips the tick when a
// run of the schedule is still going and overlap is off.
func (s *Scheduler) tick(e *entry, at time.Time) {
	if !s.leads() {
		s.log.Debug("timer tick not fired: another replica leads", e.attrs("scheduled", at)...)
		return
	}
	st := e.state
	st.mu.Lock()
	// Taken already: by another configuration of a reload, or before the
	// clock went back a little. A clock set back further runs the ticks
	// again.
	if !at.After(st.last) && !st.last.After(e.sched.Next(at)) {
		st.mu.Unlock()
		s.log.Debug("timer tick already taken", e.attrs("scheduled", at)...)
		return
	}
	st.last = at
	if !e.overlap && st.running > 0 {
		st.skipped++
		first := st.skipped == 1
		st.mu.Unlock()
		if s.obs != nil {
			s.obs.TimerTickSkipped(e.function)
		}
		// The first skip of a run is worth a warning; the rest would repeat it.
		level := slog.LevelDebug
		if first {
			level = slog.LevelWarn
		}
		s.log.Log(context.Background(), level, "timer tick skipped: the previous run of this schedule is still going",
			e.attrs("scheduled", at)...)
		return
	}
	st.running++
	last := st.lastRun
	st.lastRun = at
	st.mu.Unlock()
	go s.run(e, Tick{Scheduled: at, Last: last})
}

// runOnStartup runs an app timer's function once as its timer starts
// (runOnStartup), when this replica leads. The run counts for overlap like
// any other.
func (s *Scheduler) runOnStartup(e *entry) {
	now := s.now()
	if !s.leads() {
		s.log.Debug("timer run on startup not fired: another replica leads", e.attrs()...)
		return
	}
	st := e.state
	st.mu.Lock()
	st.running++
	last := st.lastRun
	st.lastRun = now
	st.mu.Unlock()
	s.log.Info("timer runs on startup", e.attrs()...)
	go s.run(e, Tick{Scheduled: now, Last: last, Startup: true})
}

// attrs are the log attributes naming e, then more.
func (e *entry) attrs(more ...any) []any {
	a := []any{"function", e.function}
	if e.app != "" {
		a = append(a, "app", e.app)
	}
	return append(append(a, "schedule", e.spec), more...)
}

// run invokes the function for tick t.
func (s *Scheduler) run(e *entry, t Tick) {
	at := t.Scheduled
	req := &invoke.Request{ID: invoke.NewID(), Function: e.function, Trigger: invoke.TriggerTimer, Timestamp: at, Payload: e.payload}
	if e.app != "" {
		req.App = e.app
		req.Payload = e.info(t)
	}
	s.log.Debug("timer fired", e.attrs("scheduled", at, "invocation", req.ID)...)
	_, err := s.inv.Invoke(context.Background(), req)
	st := e.state
	st.mu.Lock()
	st.running--
	skipped := 0
	if st.running == 0 {
		skipped, st.skipped = st.skipped, 0
	}
	st.mu.Unlock()
	if err != nil {
		s.log.Error("timer invocation failed", e.attrs("scheduled", at, "invocation", req.ID, "error", err)...)
	}
	if skipped > 1 {
		s.log.Info("timer ticks skipped while the run went on", e.attrs("scheduled", at, "skipped", skipped)...)
	}
}
