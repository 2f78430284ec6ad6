package timer

import (
	"context"
	"time"
)

// AppTimer is the timer trigger of one function of an Azure Functions app
// (a timerTrigger binding): it runs on the function's schedule like a
// triggers.timer entry, invoking the app's function with the timer info
// Payload builds.
type AppTimer struct {
	App, Function string
	// Spec is the resolved schedule, for logs and status.
	Spec     string
	Schedule Schedule
	// RunOnStartup: the function also runs once when its timer starts in a
	// configuration (at start, after a reload), before its first tick.
	RunOnStartup bool
	// Payload is the invocation's payload for a tick: the timer info the
	// function's worker receives.
	Payload func(Tick) []byte
}

// Tick is what one run of an app timer is for.
type Tick struct {
	// Scheduled is the tick's time; for the run on startup, the moment it
	// started.
	Scheduled time.Time
	// Last is when the previous run of the schedule was scheduled; zero
	// when none ran in this process.
	Last time.Time
	// Startup: the run on startup (RunOnStartup).
	Startup bool
}

// AppHost is a host that runs Azure Functions apps; *host.Host implements
// it. The timer trigger runs the timers of the apps of the configuration
// that serves, and plans them again each time they change: when an app is
// indexed (its functions are known only once a worker listed them) or
// indexed again with other timers.
type AppHost interface {
	// AppTimers returns the timers of the app functions indexed so far and
	// a channel closed once they change.
	AppTimers() ([]AppTimer, <-chan struct{})
}

// watch plans the timers again each time those of h change, until ctx is
// done (the next Apply, or Stop).
func (t *Trigger) watch(ctx context.Context, changed <-chan struct{}) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-changed:
		}
		t.mu.Lock()
		if ctx.Err() != nil {
			t.mu.Unlock()
			return
		}
		changed = t.planLocked()
		t.mu.Unlock()
	}
}
