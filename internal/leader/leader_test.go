package leader

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/leaderelection/resourcelock"

	"github.com/polyfn/polyfn/internal/config"
	"github.com/polyfn/polyfn/internal/invoke"
	"github.com/polyfn/polyfn/internal/testlog"
	"github.com/polyfn/polyfn/internal/trigger/timer"
)

// Short lease settings (the Lease holds whole seconds) so that a handover
// takes about two seconds; the renew deadline is below the lease duration
// as in production.
const (
	testLease   = 2 * time.Second
	testRenew   = time.Second
	testRetry   = 200 * time.Millisecond
	tickEvery   = 200 * time.Millisecond
	stableTicks = 8
)

// cutLock is a Lease lock that fails every call while cut is set: the
// replica is cut off from the API server.
type cutLock struct {
	resourcelock.Interface
	cut atomic.Bool
}

var errCut = errors.New("cut off from the API server")

func (l *cutLock) Get(ctx context.Context) (*resourcelock.LeaderElectionRecord, []byte, error) {
	if l.cut.Load() {
		return nil, nil, errCut
	}
	return l.Interface.Get(ctx)
}

func (l *cutLock) Create(ctx context.Context, r resourcelock.LeaderElectionRecord) error {
	if l.cut.Load() {
		return errCut
	}
	return l.Interface.Create(ctx, r)
}

func (l *cutLock) Update(ctx context.Context, r resourcelock.LeaderElectionRecord) error {
	if l.cut.Load() {
		return errCut
	}
	return l.Interface.Update(ctx, r)
}

// firing records the ticks one replica's timer fired.
type firing struct {
	mu    sync.Mutex
	ticks map[time.Time]time.Time // scheduled -> when fired
}

func (f *firing) Invoke(_ context.Context, req *invoke.Request) (*invoke.Result, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ticks[req.Timestamp] = time.Now()
	return &invoke.Result{}, nil
}

func (f *firing) snapshot() map[time.Time]time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make(map[time.Time]time.Time, len(f.ticks))
	for k, v := range f.ticks {
		out[k] = v
	}
	return out
}

type replica struct {
	name   string
	lock   *cutLock
	el     *Elector
	fired  *firing
	sched  *timer.Scheduler
	cancel context.CancelFunc
	done   chan struct{}
}

func startReplica(t *testing.T, client *fake.Clientset, name string) *replica {
	t.Helper()
	logs := &testlog.Buffer{}
	log := slog.New(slog.NewTextHandler(logs, nil))
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("replica %s log:\n%s", name, logs.String())
		}
	})
	base, err := resourcelock.New(resourcelock.LeasesResourceLock, "polyfn", "polyfn-timers", client.CoreV1(), client.CoordinationV1(),
		resourcelock.ResourceLockConfig{Identity: name})
	if err != nil {
		t.Fatal(err)
	}
	r := &replica{name: name, lock: &cutLock{Interface: base}, fired: &firing{ticks: map[time.Time]time.Time{}}, done: make(chan struct{})}
	r.el, err = New(Options{Lock: r.lock, Namespace: "polyfn", Name: "polyfn-timers", Identity: name,
		LeaseDuration: testLease, RenewDeadline: testRenew, RetryPeriod: testRetry, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go func() { defer close(r.done); _ = r.el.Run(ctx) }()
	// Each replica's function has its own name, as on replicas of their
	// own: the schedulers here share no tick state.
	fns := []config.Function{{Name: "tick-" + name, Triggers: config.Triggers{Timer: []config.Timer{{Schedule: "@every " + tickEvery.String()}}}}}
	r.sched = timer.NewScheduler(timer.Options{Functions: fns, Invoker: r.fired, Leader: r.el, Log: log})
	r.sched.Start()
	t.Cleanup(r.stop)
	return r
}

func (r *replica) stop() {
	r.sched.Stop()
	r.cancel()
	<-r.done
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestOneTickOneFire runs two replicas' timers against one Lease: while
// one leads, every tick fires exactly once, on the leader; a leader cut off
// from the API server stops firing before the other starts; a leader that
// shuts down releases the Lease and the other takes over.
func TestOneTickOneFire(t *testing.T) {
	client := fake.NewClientset()
	a := startReplica(t, client, "a")
	b := startReplica(t, client, "b")
	waitFor(t, "a leader", func() bool { return a.el.IsLeader() || b.el.IsLeader() })
	lead, other := a, b
	if b.el.IsLeader() {
		lead, other = b, a
	}

	// Stable leadership: a run of consecutive ticks, each fired once.
	start := time.Now()
	waitFor(t, "ticks under one leader", func() bool { return len(lead.fired.snapshot()) >= stableTicks+2 })
	checkOnce(t, a, b)
	checkContiguous(t, lead.fired.snapshot(), start)
	if n := len(other.fired.snapshot()); n != 0 {
		t.Fatalf("the replica that does not lead fired %d ticks", n)
	}

	// Cut the leader off: it stops firing, then the other takes over.
	lead.lock.cut.Store(true)
	waitFor(t, "the cut-off leader to stop", func() bool { return !lead.el.IsLeader() })
	stopped := time.Now()
	waitFor(t, "the other replica to lead", other.el.IsLeader)
	_, since := other.el.ValidUntil()
	lastLead := latest(lead.fired.snapshot())
	if !lastLead.Before(since) {
		t.Errorf("the old leader fired at %v, after the new one began leading at %v", lastLead, since)
	}
	waitFor(t, "ticks under the new leader", func() bool { return countAfter(other.fired.snapshot(), since) >= stableTicks })
	checkOnce(t, a, b)
	if n := countAfter(lead.fired.snapshot(), stopped); n != 0 {
		t.Errorf("the cut-off replica fired %d ticks after it stopped leading", n)
	}

	// Reconnect the old leader; then shut the new one down: it releases
	// the Lease and the old one takes over without waiting for expiry.
	lead.lock.cut.Store(false)
	other.stop()
	if other.el.IsLeader() {
		t.Fatal("a stopped replica still leads")
	}
	waitFor(t, "the first replica to lead again", lead.el.IsLeader)
	_, again := lead.el.ValidUntil()
	if n := countAfter(other.fired.snapshot(), again); n != 0 {
		t.Errorf("the stopped replica fired %d ticks after the other began leading", n)
	}
	waitFor(t, "ticks after the handover", func() bool { return countAfter(lead.fired.snapshot(), again) >= 2 })
	checkOnce(t, a, b)
}

// checkOnce fails when a tick fired on both replicas.
func checkOnce(t *testing.T, a, b *replica) {
	t.Helper()
	bt := b.fired.snapshot()
	for at := range a.fired.snapshot() {
		if _, ok := bt[at]; ok {
			t.Fatalf("tick %v fired on both replicas", at)
		}
	}
}

// checkContiguous fails when a tick scheduled between the first fired after
// start and the last fired is missing.
func checkContiguous(t *testing.T, fired map[time.Time]time.Time, start time.Time) {
	t.Helper()
	var first, last time.Time
	for at := range fired {
		if at.Before(start) {
			continue
		}
		if first.IsZero() || at.Before(first) {
			first = at
		}
		if at.After(last) {
			last = at
		}
	}
	for at := first; !at.After(last); at = at.Add(tickEvery) {
		if _, ok := fired[at]; !ok {
			t.Errorf("tick %v did not fire (ticks %v to %v)", at, first, last)
		}
	}
}

func latest(fired map[time.Time]time.Time) time.Time {
	var l time.Time
	for _, when := range fired {
		if when.After(l) {
			l = when
		}
	}
	return l
}

func countAfter(fired map[time.Time]time.Time, t0 time.Time) int {
	n := 0
	for _, when := range fired {
		if when.After(t0) {
			n++
		}
	}
	return n
}
