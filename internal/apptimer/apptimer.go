// Package apptimer names what the host tells the timer trigger of the
// timer functions of Azure Functions apps: the host knows no trigger and
// the trigger no worker protocol, so both speak these types
// (internal/host builds them from the apps' indexes, internal/trigger/timer
// runs them).
package apptimer

import "time"

// Schedule computes the ticks of a timer.
type Schedule interface {
	// Next returns the first tick strictly after t, or the zero time when
	// there is none.
	Next(t time.Time) time.Time
}

// Timer is the timer trigger of one function of an app (a timerTrigger
// binding).
type Timer struct {
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

// Source is a host that runs apps with timer functions; *host.Host
// implements it.
type Source interface {
	// AppTimers returns the timers of the app functions indexed so far and
	// a channel closed once they change.
	AppTimers() ([]Timer, <-chan struct{})
}
