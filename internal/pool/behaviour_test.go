package pool

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/polyfn/polyfn/internal/invoke"
)

// These tests drive the pool with fake instances (no processes): scaling,
// queueing, back-off, eviction, shedding and the state it records. They
// wait on the pool's events or poll; none depends on how long anything
// takes.

// invokeAsync runs one invocation of id in the background.
func invokeAsync(ctx context.Context, p *Pool, id string) <-chan error {
	done := make(chan error, 1)
	go func() {
		_, err := p.Invoke(ctx, &invoke.Request{ID: id, Function: "fn"})
		done <- err
	}()
	return done
}

// next receives from ch, failing the test if nothing comes.
func next[T any](t *testing.T, what string, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
	}
	panic("unreachable")
}

// waitState waits, on the pool's events, until its state is want.
func waitState(t *testing.T, p *Pool, want string) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		changed := p.Changed()
		if p.Stats().State == want {
			return
		}
		select {
		case <-changed:
		case <-timeout:
			t.Fatalf("state %q, want %q", p.Stats().State, want)
		}
	}
}

// Queued invocations start instances, one per Concurrency of them, up to
// Max; the rest wait in the queue and run as slots free up.
func TestScalesUpToMaxForQueuedInvocations(t *testing.T) {
	p, started, _, _ := newTestPool(t, Options{Max: 3})
	var results []<-chan error
	for i := range 5 {
		results = append(results, invokeAsync(context.Background(), p, fmt.Sprintf("inv-%d", i)))
	}
	fakes := []*fakeInstance{next(t, "instance 1", started), next(t, "instance 2", started), next(t, "instance 3", started)}
	for _, f := range fakes {
		next(t, "an invocation on "+f.id, f.entered)
	}
	waitFor(t, "two invocations queued and no start under way", func() bool {
		st := p.Stats()
		return st.Queued == 2 && st.Starting == 0
	})
	if st := p.Stats(); len(st.Instances) != 3 || st.InFlight != 3 || st.State != StateReady {
		t.Fatalf("stats %+v, want 3 ready instances each running one invocation", st)
	}
	select {
	case f := <-started:
		t.Fatalf("instance %s started past Max 3", f.id)
	default:
	}
	for _, f := range fakes {
		for range 3 {
			f.answer <- nil
		}
	}
	for i, r := range results {
		if err := next(t, "an invocation's result", r); err != nil {
			t.Errorf("invocation %d: %v", i, err)
		}
	}
	if st := p.Stats(); st.InFlight != 0 || st.Queued != 0 || len(st.Instances) != 3 {
		t.Fatalf("after the invocations: %+v", st)
	}
}

// The queue is bounded and served in arrival order; an invocation whose
// deadline passes or whose caller gives up while queued leaves the queue.
func TestQueueOrderBoundAndDeadline(t *testing.T) {
	p, started, _, _ := newTestPool(t, Options{Queue: 2})
	first := invokeAsync(context.Background(), p, "inv-0")
	f := next(t, "the instance", started)
	next(t, "inv-0 on the instance", f.entered)

	// Queued past its timeout: a Timeout that says it was queued and names
	// the bound.
	ctx, cancel := invoke.WithTimeout(context.Background(), &invoke.TimeoutCause{Function: "fn", Timeout: time.Nanosecond, Key: "functions[0].timeout"})
	_, err := p.Invoke(ctx, &invoke.Request{ID: "inv-late", Function: "fn"})
	cancel()
	var ie *invoke.Error
	if !errors.As(err, &ie) || ie.Kind != invoke.KindTimeout || !strings.Contains(ie.Message, "still queued") || !strings.Contains(ie.Message, "functions[0].timeout") {
		t.Fatalf("queued past the deadline: %v, want a Timeout naming the queue and the bound", err)
	}
	// Cancelled while queued: Unavailable.
	ctx, cancel = context.WithCancel(context.Background())
	gone := invokeAsync(ctx, p, "inv-gone")
	waitFor(t, "inv-gone queued", func() bool { return p.Stats().Queued == 1 })
	cancel()
	if err := next(t, "inv-gone's result", gone); invoke.KindOf(err) != invoke.KindUnavailable {
		t.Fatalf("cancelled while queued: %v, want Unavailable", err)
	}
	if q := p.Stats().Queued; q != 0 {
		t.Fatalf("%d queued after the queued invocations left, want 0", q)
	}

	second := invokeAsync(context.Background(), p, "inv-1")
	waitFor(t, "inv-1 queued", func() bool { return p.Stats().Queued == 1 })
	third := invokeAsync(context.Background(), p, "inv-2")
	waitFor(t, "inv-2 queued", func() bool { return p.Stats().Queued == 2 })
	_, err = p.Invoke(context.Background(), &invoke.Request{ID: "inv-3", Function: "fn"})
	if !errors.As(err, &ie) || ie.Kind != invoke.KindOverloaded || ie.Type != "Overloaded" {
		t.Fatalf("invocation past a full queue: %v, want Overloaded at once", err)
	}
	for range 3 {
		f.answer <- nil
	}
	for _, r := range []<-chan error{first, second, third} {
		if err := next(t, "a result", r); err != nil {
			t.Fatal(err)
		}
	}
	var order []string
	for range 3 {
		order = append(order, <-f.ids)
	}
	if got := strings.Join(order, ","); got != "inv-0,inv-1,inv-2" {
		t.Fatalf("ran %s, want inv-0,inv-1,inv-2 (arrival order)", got)
	}
}

// A failed start holds further starts back for RestartDelay, doubling per
// failure up to MaxRestartDelay; meanwhile invocations fail at once with
// the cause, and the function is broken until a start succeeds.
func TestBackoffAfterFailedStarts(t *testing.T) {
	cause := errors.New("exit status 3; last stderr: cannot load handler")
	var starts atomic.Int32
	p, _, _, _ := newTestPool(t, Options{RestartDelay: time.Hour, MaxRestartDelay: 4 * time.Hour,
		Start: func(context.Context, string) (Instance, error) { starts.Add(1); return nil, cause }})
	_, err := p.Invoke(context.Background(), &invoke.Request{ID: "inv-1", Function: "fn"})
	if invoke.KindOf(err) != invoke.KindWorkerStart || !strings.Contains(err.Error(), "cannot load handler") {
		t.Fatalf("invocation: %v, want WorkerStartFailed with the cause", err)
	}
	st := p.Stats()
	if st.State != StateBroken || !strings.Contains(st.LastError, "cannot load handler") || time.Until(st.BackoffUntil) < 59*time.Minute {
		t.Fatalf("stats %+v, want broken with the cause, backing off for an hour", st)
	}
	_, err = p.Invoke(context.Background(), &invoke.Request{ID: "inv-2", Function: "fn"})
	var ie *invoke.Error
	if !errors.As(err, &ie) || ie.Kind != invoke.KindWorkerStart || !strings.Contains(ie.Message, "next attempt in") || !errors.Is(err, cause) {
		t.Fatalf("invocation during the back-off: %v, want WorkerStartFailed naming the next attempt and wrapping the cause", err)
	}
	if n := starts.Load(); n != 1 {
		t.Fatalf("%d starts, want 1: none during the back-off", n)
	}
	// Each further failure doubles the delay, up to the maximum.
	for i, want := range []time.Duration{2 * time.Hour, 4 * time.Hour, 4 * time.Hour} {
		p.mu.Lock()
		p.failedLocked(cause)
		until := p.backoffUntil
		p.mu.Unlock()
		if d := time.Until(until); d > want || d < want-time.Minute {
			t.Errorf("failure %d: backing off for %s, want %s", i+2, d.Round(time.Minute), want)
		}
	}
}

// A function that starts after failing recovers by itself: the back-off
// ends, the next start succeeds and the state is ready.
func TestRecoversAfterBackoff(t *testing.T) {
	var starts atomic.Int32
	started := make(chan *fakeInstance, 4)
	p, _, _, _ := newTestPool(t, Options{RestartDelay: time.Millisecond, MaxRestartDelay: time.Millisecond,
		Start: func(_ context.Context, id string) (Instance, error) {
			if starts.Add(1) == 1 {
				return nil, errors.New("port in use")
			}
			f := newFake(id)
			started <- f
			return f, nil
		}})
	if _, err := p.Invoke(context.Background(), &invoke.Request{ID: "inv-1", Function: "fn"}); invoke.KindOf(err) != invoke.KindWorkerStart {
		t.Fatalf("first invocation: %v, want WorkerStartFailed", err)
	}
	waitFor(t, "the back-off to end", func() bool { return p.Stats().BackoffUntil.IsZero() })
	res := invokeAsync(context.Background(), p, "inv-2")
	f := next(t, "the instance", started)
	f.answer <- nil
	if err := next(t, "inv-2's result", res); err != nil {
		t.Fatal(err)
	}
	if st := p.Stats(); st.State != StateReady || len(st.Instances) != 1 {
		t.Fatalf("stats %+v, want ready with one instance", st)
	}
}

// Readiness is waited for on the pool's events: a pool with a minimum is at
// it once the minimum is up, or once it is broken trying.
func TestAtMinOnEvents(t *testing.T) {
	var starts atomic.Int32
	p, _, _, _ := newTestPool(t, Options{Min: 1, RestartDelay: time.Millisecond, MaxRestartDelay: time.Millisecond,
		Start: func(context.Context, string) (Instance, error) { starts.Add(1); return nil, errors.New("no such file") }})
	timeout := time.After(10 * time.Second)
	for {
		changed := p.Changed()
		if p.AtMin() {
			break
		}
		select {
		case <-changed:
		case <-timeout:
			t.Fatalf("not at min after %d starts", starts.Load())
		}
	}
	if n := starts.Load(); n < brokenAfter {
		t.Fatalf("at min after %d failed starts, want %d", n, brokenAfter)
	}
	if st := p.Stats(); st.State != StateBroken {
		t.Fatalf("state %q, want broken", st.State)
	}
}

// The state is recorded as events happen: idle, starting while an instance
// starts, ready once it is up, idle again when the served instance exits,
// broken when a start fails.
func TestStateFollowsEvents(t *testing.T) {
	gate := make(chan error)
	started := make(chan *fakeInstance, 4)
	p, _, _, _ := newTestPool(t, Options{RestartDelay: time.Hour, MaxRestartDelay: time.Hour,
		Start: func(_ context.Context, id string) (Instance, error) {
			if err := <-gate; err != nil {
				return nil, err
			}
			f := newFake(id)
			started <- f
			return f, nil
		}})
	if st := p.Stats().State; st != StateIdle {
		t.Fatalf("new pool: state %q, want idle", st)
	}
	res := invokeAsync(context.Background(), p, "inv-1")
	waitState(t, p, StateStarting)
	gate <- nil
	waitState(t, p, StateReady)
	f := next(t, "the instance", started)
	f.answer <- nil
	if err := next(t, "inv-1's result", res); err != nil {
		t.Fatal(err)
	}
	f.die(errors.New("exit status 1"))
	f.observe()
	waitState(t, p, StateIdle)
	if st := p.Stats(); !strings.Contains(st.LastError, "exit status 1") || !st.BackoffUntil.IsZero() {
		t.Fatalf("after a served instance exited: %+v, want idle with the exit as last error and no back-off", st)
	}
	res = invokeAsync(context.Background(), p, "inv-2")
	waitState(t, p, StateStarting)
	gate <- errors.New("exec format error")
	waitState(t, p, StateBroken)
	if err := next(t, "inv-2's result", res); invoke.KindOf(err) != invoke.KindWorkerStart {
		t.Fatalf("inv-2: %v, want WorkerStartFailed", err)
	}
}

// An instance that dies idle is replaced to keep Min.
func TestReplacesDeadInstanceToKeepMin(t *testing.T) {
	p, started, obs, _ := newTestPool(t, Options{Min: 1})
	f := next(t, "the first instance", started)
	f.die(errors.New("signal: killed"))
	f.observe()
	g := next(t, "the replacement", started)
	waitFor(t, "the replacement up", func() bool { live, _ := p.Load(); return live == 1 })
	if g.id == f.id {
		t.Fatalf("replacement has the dead instance's id %s", g.id)
	}
	if got := obs.counts(); got["crashed"] != 1 {
		t.Fatalf("instances lost: %v, want crashed 1", got)
	}
}

// EvictIdle gives up the instance idle longest, never a busy one and never
// below Min.
func TestEvictIdle(t *testing.T) {
	t.Run("least recently used, down to Min", func(t *testing.T) {
		p, started, _, _ := newTestPool(t, Options{Min: 1, Max: 2, Idle: time.Hour})
		p.Prestart(2)
		a, b := next(t, "an instance", started), next(t, "another", started)
		waitFor(t, "two instances up", func() bool { live, _ := p.Load(); return live == 2 })
		// The invocation goes to the first instance in the pool, which is
		// then the more recently used.
		res := invokeAsync(context.Background(), p, "inv-1")
		used, other := a, b
		select {
		case <-a.entered:
		case <-b.entered:
			used, other = b, a
		case <-time.After(10 * time.Second):
			t.Fatal("the invocation reached no instance")
		}
		used.answer <- nil
		if err := next(t, "inv-1's result", res); err != nil {
			t.Fatal(err)
		}
		if !p.EvictIdle() {
			t.Fatal("EvictIdle found nothing to evict above Min")
		}
		next(t, "the least recently used instance to stop", other.stopped)
		select {
		case <-used.stopped:
			t.Fatal("the most recently used instance was evicted")
		default:
		}
		if p.EvictIdle() {
			t.Fatal("EvictIdle went below Min")
		}
	})
	t.Run("never a busy instance", func(t *testing.T) {
		p, started, _, _ := newTestPool(t, Options{Idle: time.Hour})
		res := invokeAsync(context.Background(), p, "inv-1")
		f := next(t, "the instance", started)
		next(t, "inv-1 on the instance", f.entered)
		if p.EvictIdle() {
			t.Fatal("EvictIdle took a busy instance")
		}
		f.answer <- nil
		if err := next(t, "inv-1's result", res); err != nil {
			t.Fatal(err)
		}
		if !p.EvictIdle() {
			t.Fatal("EvictIdle left an idle instance above Min 0")
		}
		next(t, "the evicted instance to stop", f.stopped)
	})
	t.Run("the reaper stops idle instances above Min", func(t *testing.T) {
		p, started, _, _ := newTestPool(t, Options{Min: 1, Max: 2, Idle: time.Millisecond})
		p.Prestart(2)
		a, b := next(t, "an instance", started), next(t, "another", started)
		waitFor(t, "one instance stopped", func() bool {
			return isClosed(a.stopped) != isClosed(b.stopped)
		})
		if live, _ := p.Load(); live != 1 {
			t.Fatalf("%d live, want Min 1", live)
		}
	})
}

func isClosed(ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// Shed retires the instance with the fewest invocations in flight: it takes
// no new ones, stops once they end, and its place goes to a new instance.
// One instance retires at a time, and Min is kept.
func TestShed(t *testing.T) {
	p, started, _, _ := newTestPool(t, Options{Concurrency: 2, Max: 2, Idle: time.Hour})
	p.Prestart(2)
	fakes := map[string]*fakeInstance{}
	for range 2 {
		f := next(t, "an instance", started)
		fakes[f.id] = f
	}
	waitFor(t, "two instances up", func() bool { live, _ := p.Load(); return live == 2 })
	var results []<-chan error
	for i := range 3 {
		results = append(results, invokeAsync(context.Background(), p, fmt.Sprintf("inv-%d", i)))
	}
	waitFor(t, "three invocations in flight", func() bool { return p.Stats().InFlight == 3 })
	var heavy, light *fakeInstance
	for _, i := range p.Stats().Instances {
		switch i.InFlight {
		case 2:
			heavy = fakes[i.ID]
		case 1:
			light = fakes[i.ID]
		}
	}
	if heavy == nil || light == nil {
		t.Fatalf("instances %+v, want one with 2 in flight and one with 1", p.Stats().Instances)
	}
	if !p.Shed() {
		t.Fatal("Shed picked no instance")
	}
	if p.Shed() {
		t.Fatal("Shed retired a second instance while one is retiring")
	}
	// The retiring instance takes nothing new: the next invocation waits.
	late := invokeAsync(context.Background(), p, "inv-late")
	waitFor(t, "inv-late queued", func() bool { return p.Stats().Queued == 1 })
	light.answer <- nil
	next(t, "the retired instance to stop once idle", light.stopped)
	fresh := next(t, "a new instance in the retired one's place", started)
	if id := next(t, "inv-late on the new instance", fresh.ids); id != "inv-late" {
		t.Fatalf("the new instance ran %s, want inv-late", id)
	}
	fresh.answer <- nil
	heavy.answer <- nil
	heavy.answer <- nil
	for _, r := range append(results, late) {
		if err := next(t, "a result", r); err != nil {
			t.Fatal(err)
		}
	}
	if isClosed(heavy.stopped) {
		t.Fatal("the busier instance was stopped")
	}

	t.Run("Min is kept", func(t *testing.T) {
		p, started, _, _ := newTestPool(t, Options{Min: 1})
		next(t, "the instance", started)
		waitFor(t, "the instance up", func() bool { live, _ := p.Load(); return live == 1 })
		if p.Shed() {
			t.Fatal("Shed went below Min")
		}
	})
}
