package host

import (
	"slices"
	"sync"
	"time"

	"github.com/polyfn/polyfn/internal/apptimer"
	"github.com/polyfn/polyfn/internal/azure"
)

// The timers of apps' timerTrigger functions: the host reads them from
// each app's index and hands them to the timer trigger (apptimer.Source),
// which runs them on its machinery and invokes the app's function through
// Invoke like any invocation.

var _ apptimer.Source = (*Host)(nil)

// appTimers holds the timers of the host's apps and the channel that says
// they changed.
type appTimers struct {
	mu      sync.Mutex
	changed chan struct{}
}

// appTimer is one timer function of an app.
type appTimer struct {
	fn       string
	binding  string
	schedule *azure.TimerSchedule
	startup  bool
}

// AppTimerStatus describes one timer function of an app.
type AppTimerStatus struct {
	Function string `json:"function"`
	// Schedule is the resolved schedule.
	Schedule     string    `json:"schedule"`
	RunOnStartup bool      `json:"run_on_startup,omitempty"`
	Next         time.Time `json:"next"`
}

// settings are the app settings its schedules' %Name% references resolve
// from: the worker's variables of the config, the runtime's env, then the
// app entry's (which wins), as the worker's environment has them.
func (a *app) settings() map[string]string {
	m := map[string]string{}
	for k, v := range a.runtime.Env {
		m[k] = v
	}
	for k, v := range a.cfg.Env {
		m[k] = v
	}
	return m
}

// indexTimers reads the timers of the app functions fns; a function whose
// timer cannot run is left out and its error returned.
func (a *app) indexTimers(fns []*azure.Function) ([]appTimer, []error) {
	var out []appTimer
	var errs []error
	settings := a.settings()
	for _, fn := range fns {
		tt, err := azure.TimerTriggerOf(fn)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if tt == nil {
			continue
		}
		s, err := azure.ResolveTimer(fn.Name, tt, settings)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, appTimer{fn: fn.Name, binding: tt.BindingName, schedule: s, startup: tt.RunOnStartup})
	}
	return out, errs
}

// setTimers records the app's timers; when they differ from those before,
// the timer trigger is told.
func (h *Host) setTimers(a *app, timers []appTimer) {
	a.mu.Lock()
	same := slices.EqualFunc(a.timers, timers, func(x, y appTimer) bool {
		return x.fn == y.fn && x.binding == y.binding && x.startup == y.startup && x.schedule.Resolved == y.schedule.Resolved &&
			x.schedule.Monitored == y.schedule.Monitored && x.schedule.Location() == y.schedule.Location()
	})
	if !same {
		a.timers = timers
	}
	a.mu.Unlock()
	if same {
		return
	}
	h.timers.mu.Lock()
	if h.timers.changed != nil {
		close(h.timers.changed)
		h.timers.changed = nil
	}
	h.timers.mu.Unlock()
}

// AppTimers returns the timers of the app functions indexed so far and a
// channel closed once they change (apptimer.Source).
func (h *Host) AppTimers() ([]apptimer.Timer, <-chan struct{}) {
	h.timers.mu.Lock()
	if h.timers.changed == nil {
		h.timers.changed = make(chan struct{})
	}
	changed := h.timers.changed
	h.timers.mu.Unlock()
	var out []apptimer.Timer
	for _, a := range h.apps {
		a.mu.RLock()
		timers := a.timers
		a.mu.RUnlock()
		for _, t := range timers {
			s, fn := t.schedule, t.fn
			out = append(out, apptimer.Timer{
				App: a.cfg.Name, Function: fn, Spec: s.Resolved, Schedule: s, RunOnStartup: t.startup,
				Payload: func(tk apptimer.Tick) []byte {
					return s.TimerInfo(azure.TimerTick{Scheduled: tk.Scheduled, Last: tk.Last, Startup: tk.Startup})
				},
			})
		}
	}
	return out, changed
}

// timerStatus lists the app's timers for its status (a.mu held).
func (a *app) timerStatus(now time.Time) []AppTimerStatus {
	var out []AppTimerStatus
	for _, t := range a.timers {
		out = append(out, AppTimerStatus{Function: t.fn, Schedule: t.schedule.Resolved, RunOnStartup: t.startup, Next: t.schedule.Next(now)})
	}
	return out
}
