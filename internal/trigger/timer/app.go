package timer

import (
	"context"

	"github.com/polyfn/polyfn/internal/apptimer"
)

// AppTimer is the timer trigger of one function of an Azure Functions app
// (see internal/apptimer): it runs on the function's schedule like a
// triggers.timer entry, invoking the app's function with the timer info
// its Payload builds.
type AppTimer = apptimer.Timer

// Tick is what one run of an app timer is for.
type Tick = apptimer.Tick

// AppHost is a host that runs Azure Functions apps; *host.Host implements
// it. The timer trigger runs the timers of the apps of the configuration
// that serves, and plans them again each time they change: when an app is
// indexed (its functions are known only once a worker listed them) or
// indexed again with other timers.
type AppHost = apptimer.Source

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
