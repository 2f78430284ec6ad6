package host

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/polyfn/polyfn/internal/invoke"
	"github.com/polyfn/polyfn/internal/pool"
)

// capacityPoll is how often a start waiting for room looks again.
const capacityPoll = 20 * time.Millisecond

// capacity enforces the host-wide caps (scaling.max_instances and
// scaling.max_starting): every worker process, standby ones included,
// holds a live slot until it has exited, and holds a starting slot while it
// starts.
type capacity struct {
	starting chan struct{}

	mu      sync.Mutex
	live    int
	maxLive int
}

func newCapacity(maxLive, maxStarting int) *capacity {
	return &capacity{starting: make(chan struct{}, maxStarting), maxLive: maxLive}
}

// admit waits until a worker may start: a live slot — stopping an idle
// instance of another pool when the host is full — and a starting slot.
// It returns doneStarting, to call when the start attempt is over, and
// release, to call once the worker has exited (or failed to start).
// Cancelling ctx gives up.
func (h *Host) admit(ctx context.Context, self *pool.Pool) (doneStarting, release func(), err error) {
	c := h.capacity
	for {
		c.mu.Lock()
		if c.live < c.maxLive {
			c.live++
			c.mu.Unlock()
			break
		}
		c.mu.Unlock()
		for _, p := range h.pools {
			if p != self && p.EvictIdle() {
				break
			}
		}
		select {
		case <-ctx.Done():
			return nil, nil, fmt.Errorf("waiting for room among the host's %d instances (scaling.max_instances): %w", c.maxLive, ctx.Err())
		case <-time.After(capacityPoll):
		}
	}
	var once sync.Once
	release = func() {
		once.Do(func() {
			c.mu.Lock()
			c.live--
			c.mu.Unlock()
		})
	}
	select {
	case c.starting <- struct{}{}:
	case <-ctx.Done():
		release()
		return nil, nil, ctx.Err()
	}
	return func() { <-c.starting }, release, nil
}

// startAdmitted starts a worker within the host-wide caps: start runs once
// admitted, and the live slot is given back when the worker has exited.
func (h *Host) startAdmitted(ctx context.Context, self *pool.Pool, start func() (pool.Instance, error)) (pool.Instance, error) {
	doneStarting, release, err := h.admit(ctx, self)
	if err != nil {
		return nil, invoke.Wrap(invoke.KindWorkerStart, err)
	}
	inst, err := start()
	doneStarting()
	if err != nil {
		release()
		return nil, err
	}
	go func() {
		<-inst.Done()
		release()
	}()
	return inst, nil
}
