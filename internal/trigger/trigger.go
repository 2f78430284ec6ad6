// Package trigger names the lifecycle every trigger (HTTP, MQTT, timer)
// shares. A trigger lives as long as the process (internal/server owns it):
// it starts with the configuration that serves, takes each new one a reload
// brings up, and stops once, with a deadline.
package trigger

import (
	"context"

	"github.com/polyfn/polyfn/internal/config"
	"github.com/polyfn/polyfn/internal/invoke"
)

// Generation is one running configuration: the config and the host that
// runs its functions.
type Generation struct {
	Config *config.Config
	Host   Host
}

// Host is what the triggers ask of a configuration's host (*host.Host, as
// internal/server checks at compile time). It is an interface so that no
// trigger depends on the host, nor through it on the worker protocols. A
// trigger that asks for more (the HTTP trigger's app routes and admin
// endpoints) names it in an interface of its own.
type Host interface {
	// Invoke runs one invocation.
	Invoke(ctx context.Context, req *invoke.Request) (*invoke.Result, error)
	// MaxBody is the largest payload the host accepts.
	MaxBody() int64
	// Capacity is the pool that runs function and how many invocations it
	// takes at once, running and queued.
	Capacity(function string) (pool string, n int, ok bool)
}

// Trigger is one kind of trigger for the life of the process.
type Trigger interface {
	// Start starts the trigger on the configuration that serves.
	Start(g Generation) error
	// Apply makes g the configuration the trigger invokes, in place of
	// the one before: new invocations go to g's host, while those in
	// flight finish on the old one, which the caller drains afterwards.
	Apply(g Generation)
	// Stop stops taking work and waits, until ctx is done, for what the
	// trigger has in hand.
	Stop(ctx context.Context)
}
