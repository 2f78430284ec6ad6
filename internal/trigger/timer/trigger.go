package timer

import (
	"context"
	"log/slog"
	"sync"

	"github.com/polyfn/polyfn/internal/trigger"
)

var _ trigger.Trigger = (*Trigger)(nil)

// Trigger is the timer trigger for the life of the process: it runs the
// schedules of the configuration that serves, one Scheduler per
// configuration (and per change of its apps' timers), and keeps the state
// of each schedule (the last tick taken, the runs in flight) across
// reloads.
type Trigger struct {
	obs    Observer
	log    *slog.Logger
	leader Leader
	states States

	mu      sync.Mutex
	current *Scheduler
	stopped bool
	// gen is the configuration that serves; stopWatch ends the watch of
	// its apps' timers; started holds the app timers whose run on startup
	// was due in it.
	gen       trigger.Generation
	stopWatch context.CancelFunc
	started   map[string]bool
}

// New returns a timer trigger; obs, when not nil, counts skipped ticks;
// leader, when not nil, gates every tick (leader election: with several
// replicas, the one holding the lease fires).
func New(obs Observer, leader Leader, log *slog.Logger) *Trigger {
	return &Trigger{obs: obs, leader: leader, log: log}
}

// Start starts ticking the schedules of g.
func (t *Trigger) Start(g trigger.Generation) error {
	t.Apply(g)
	return nil
}

// Apply starts ticking the schedules of g, then stops those of the
// configuration before: a tick both take runs once, on g's host. Runs in
// flight on the old host go on; they belong to its drain. When g's host
// runs apps (AppHost), their timers are planned with the rest, again each
// time they change.
func (t *Trigger) Apply(g trigger.Generation) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.stopped {
		return
	}
	if t.stopWatch != nil {
		t.stopWatch()
		t.stopWatch = nil
	}
	t.gen, t.started = g, map[string]bool{}
	changed := t.planLocked()
	if changed != nil {
		ctx, cancel := context.WithCancel(context.Background())
		t.stopWatch = cancel
		go t.watch(ctx, changed)
	}
}

// planLocked starts a scheduler of the serving configuration's functions
// and app timers, then stops the one before. It returns the channel that
// says the apps' timers changed (nil without apps).
func (t *Trigger) planLocked() <-chan struct{} {
	g := t.gen
	o := Options{Functions: g.Config.Functions, Invoker: g.Host, Observer: t.obs, Log: t.log, States: &t.states, Leader: t.leader}
	var changed <-chan struct{}
	if ah, ok := g.Host.(AppHost); ok {
		o.Apps, changed = ah.AppTimers()
		o.Startup = func(key string) bool {
			if t.started[key] {
				return false
			}
			t.started[key] = true
			return true
		}
	}
	s := NewScheduler(o)
	s.Start()
	if t.current != nil {
		t.current.Stop()
	}
	t.current = s
	t.states.keep(s.entries)
	return changed
}

// Stop ends the ticking: no tick starts a run once it returns. The runs in
// flight belong to the host's drain, so ctx is not waited on.
func (t *Trigger) Stop(context.Context) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.stopped = true
	if t.stopWatch != nil {
		t.stopWatch()
	}
	if t.current != nil {
		t.current.Stop()
	}
}
