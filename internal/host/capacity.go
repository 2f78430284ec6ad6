package host

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/polyfn/polyfn/internal/invoke"
	"github.com/polyfn/polyfn/internal/pool"
)

// capacityPoll is how often a start waiting for room tries again to make
// some (idle instances appear without notice).
const capacityPoll = 20 * time.Millisecond

// capacity enforces the host-wide caps (scaling.max_instances and
// scaling.max_starting): every worker process, standby ones included,
// holds a live slot until it has exited, and holds a starting slot while it
// starts.
//
// When the host is full, room goes to the waiting pool that has the fewest
// instances (the longest waiting among equals), not to whoever asks first
// or most often: one hot function cannot take every slot the others need.
type capacity struct {
	starting chan struct{}

	mu      sync.Mutex
	live    int
	maxLive int
	// waiting holds the starts waiting for a live slot, in arrival order.
	waiting []*capWaiter
	// changed is closed and replaced whenever a live slot is given back.
	changed chan struct{}
	// asks holds, oldest first, the waiters for which makeRoom pushed an
	// instance out (stopped an idle one, or had one retire after its
	// invocations) and whose slot has not been given back yet; each slot
	// given back settles the oldest ask.
	asks []*capWaiter
}

type capWaiter struct {
	p *pool.Pool
	// asked counts this waiter's entries in asks. A waiter with room on its
	// way does not push out another instance: the one it pushed out takes
	// a while to stop (its stop grace) or to finish its invocations, and
	// the waiter looks at the host every capacityPoll.
	asked int
}

func newCapacity(maxLive, maxStarting int) *capacity {
	return &capacity{starting: make(chan struct{}, maxStarting), maxLive: maxLive, changed: make(chan struct{})}
}

// fairestLocked returns the waiter that gets the next live slot: the one
// whose pool has the fewest instances, the earliest among equals. Standby
// starts (no pool) come last.
func (c *capacity) fairestLocked() *capWaiter {
	var best *capWaiter
	bestLive := 0
	for _, w := range c.waiting {
		n := int(^uint(0) >> 1)
		if w.p != nil {
			live, starting := w.p.Load()
			n = live + starting
		}
		if best == nil || n < bestLive {
			best, bestLive = w, n
		}
	}
	return best
}

func (c *capacity) removeLocked(w *capWaiter) {
	for i, x := range c.waiting {
		if x == w {
			c.waiting = append(c.waiting[:i], c.waiting[i+1:]...)
			return
		}
	}
}

// admit waits until a worker may start: a live slot — making room when the
// host is full — and a starting slot. It returns doneStarting, to call when
// the start attempt is over, and release, to call once the worker has exited
// (or failed to start). Cancelling ctx gives up.
func (h *Host) admit(ctx context.Context, self *pool.Pool) (doneStarting, release func(), err error) {
	c := h.capacity
	w := &capWaiter{p: self}
	c.mu.Lock()
	c.waiting = append(c.waiting, w)
	c.mu.Unlock()
	for {
		c.mu.Lock()
		if c.live < c.maxLive && c.fairestLocked() == w {
			c.live++
			c.removeLocked(w)
			c.mu.Unlock()
			break
		}
		makeRoom := c.live >= c.maxLive && w.asked == 0
		changed := c.changed
		c.mu.Unlock()
		if makeRoom && h.makeRoom(self) {
			c.mu.Lock()
			w.asked++
			c.asks = append(c.asks, w)
			c.mu.Unlock()
		}
		select {
		case <-ctx.Done():
			c.mu.Lock()
			c.removeLocked(w)
			c.signalLocked() // the next fairest may be able to go now
			c.mu.Unlock()
			return nil, nil, fmt.Errorf("waiting for room among the host's %d instances (scaling.max_instances): %w", c.maxLive, ctx.Err())
		case <-changed:
		case <-time.After(capacityPoll):
		}
	}
	var once sync.Once
	release = func() {
		once.Do(func() {
			c.mu.Lock()
			c.live--
			if len(c.asks) > 0 {
				c.asks[0].asked--
				c.asks[0] = nil
				c.asks = c.asks[1:]
			}
			c.signalLocked()
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

func (c *capacity) signalLocked() {
	close(c.changed)
	c.changed = make(chan struct{})
}

// makeRoom frees a live slot for a start of pool self on a full host: it
// stops an idle instance of the pool with the most instances; when no
// instance is idle and self has less than its fair share (the cap divided
// among the pools that have or want instances), it asks the largest pool
// above that share to retire one instance once its invocations end. It
// reports whether it did either.
func (h *Host) makeRoom(self *pool.Pool) bool {
	type load struct {
		p    *pool.Pool
		live int
	}
	loads := make([]load, 0, len(h.pools))
	active := 0
	mine := 0
	for _, p := range h.pools {
		n, starting := p.Load()
		if n+starting > 0 {
			active++
		}
		if p == self {
			mine = n
		} else {
			loads = append(loads, load{p, n})
		}
	}
	// Largest first.
	for i := 1; i < len(loads); i++ {
		for j := i; j > 0 && loads[j].live > loads[j-1].live; j-- {
			loads[j], loads[j-1] = loads[j-1], loads[j]
		}
	}
	for _, l := range loads {
		if l.p.EvictIdle() {
			return true
		}
	}
	if self == nil || active == 0 {
		return false // a standby never pushes a function out
	}
	share := max(1, h.capacity.maxLive/active)
	if mine >= share {
		return false
	}
	for _, l := range loads {
		if l.live > share && l.p.Shed() {
			return true
		}
	}
	return false
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

// Capacity returns the pool that runs function's invocations, named so that
// two functions of the same pool get the same name, and how many
// invocations it takes at once, running and queued (concurrency × max
// instances + queue): a trigger that keeps within it waits instead of being
// turned away as overloaded. ok is false for a function the host does not
// run.
func (h *Host) Capacity(function string) (pool string, n int, ok bool) {
	f, found := h.fns[function]
	if !found {
		return "", 0, false
	}
	if f.cfg.App != "" {
		a := h.cfg.Apps[f.cfg.App]
		return "app " + f.cfg.App, a.Concurrency*a.Instances.Max + a.Queue, true
	}
	return f.cfg.Name, f.cfg.Concurrency*f.cfg.Instances.Max + f.cfg.Queue, true
}
