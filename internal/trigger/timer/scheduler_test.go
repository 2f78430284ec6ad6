package timer

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/polyfn/polyfn/internal/config"
	"github.com/polyfn/polyfn/internal/invoke"
)

// recorder is an Invoker that records the scheduled time of each request.
type recorder struct {
	mu    sync.Mutex
	ticks []time.Time
}

func (r *recorder) Invoke(_ context.Context, req *invoke.Request) (*invoke.Result, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ticks = append(r.ticks, req.Timestamp)
	return &invoke.Result{}, nil
}

func (r *recorder) taken() []time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.ticks)
}

// logBuffer is a log sink safe for concurrent writes.
type logBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func oneTimer(name, schedule string) []config.Function {
	return []config.Function{{Name: name, Triggers: config.Triggers{Timer: []config.Timer{{Schedule: schedule}}}}}
}

// TestMissedTicksAreNotReplayed moves the scheduler's clock an hour ahead,
// as a machine that slept or a host that was paused sees it: the ticks of
// that hour are not run, and the schedule goes on at its next tick.
func TestMissedTicksAreNotReplayed(t *testing.T) {
	inv := &recorder{}
	logs := &logBuffer{}
	s := NewScheduler(Options{Functions: oneTimer("missed", "@every 100ms"), Invoker: inv, Log: slog.New(slog.NewTextHandler(logs, nil))})
	var offset atomic.Int64
	s.now = func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }
	s.Start()
	defer s.Stop()
	waitFor(t, "two ticks", func() bool { return len(inv.taken()) >= 2 })
	jump := s.now()
	offset.Store(int64(time.Hour))
	after := jump.Add(time.Hour)
	waitFor(t, "three ticks after the jump", func() bool {
		n := 0
		for _, at := range inv.taken() {
			if at.After(after) {
				n++
			}
		}
		return n >= 3
	})
	s.Stop()
	ticks := inv.taken()
	for _, at := range ticks {
		// The tick the loop was already waiting for may run (it is at most
		// one period after the jump); none of the hour's others may.
		if at.After(jump.Add(100*time.Millisecond)) && !at.After(after) {
			t.Errorf("tick %v of the skipped hour ran", at)
		}
	}
	if !strings.Contains(logs.String(), "timer ticks missed") {
		t.Errorf("the missed ticks are not logged:\n%s", logs)
	}
}

// TestClockSetBack sets the scheduler's clock back an hour: the schedule
// follows the new time instead of waiting for the hour to pass again.
func TestClockSetBack(t *testing.T) {
	inv := &recorder{}
	s := NewScheduler(Options{Functions: oneTimer("setback", "@every 100ms"), Invoker: inv, Log: slog.New(slog.DiscardHandler)})
	var offset atomic.Int64
	offset.Store(int64(time.Hour))
	s.now = func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }
	s.Start()
	defer s.Stop()
	waitFor(t, "two ticks", func() bool { return len(inv.taken()) >= 2 })
	offset.Store(0)
	back := time.Now().Add(30 * time.Minute)
	waitFor(t, "two ticks on the clock set back", func() bool {
		n := 0
		for _, at := range inv.taken() {
			if at.Before(back) {
				n++
			}
		}
		return n >= 2
	})
}

// TestGenerationsTakeEachTickOnce runs two schedulers of the same schedule
// at once, as the old and the new configuration of a reload do: each tick
// runs once.
func TestGenerationsTakeEachTickOnce(t *testing.T) {
	inv := &recorder{}
	log := slog.New(slog.DiscardHandler)
	states := &States{} // the timer trigger's, shared by its schedulers
	old := NewScheduler(Options{Functions: oneTimer("handover", "@every 100ms"), Invoker: inv, Log: log, States: states})
	cur := NewScheduler(Options{Functions: oneTimer("handover", "@every 100ms"), Invoker: inv, Log: log, States: states})
	old.Start()
	cur.Start()
	waitFor(t, "three ticks with both running", func() bool { return len(inv.taken()) >= 3 })
	old.Stop()
	waitFor(t, "ten ticks", func() bool { return len(inv.taken()) >= 10 })
	cur.Stop()
	ticks := inv.taken()
	seen := map[time.Time]bool{}
	for _, at := range ticks {
		if seen[at] {
			t.Errorf("tick %v ran twice", at)
		}
		seen[at] = true
	}
}

// TestStopEndsTheTicks checks that no tick starts a run once Stop returns.
func TestStopEndsTheTicks(t *testing.T) {
	inv := &recorder{}
	s := NewScheduler(Options{Functions: oneTimer("stopped", "@every 100ms"), Invoker: inv, Log: slog.New(slog.DiscardHandler)})
	s.Start()
	waitFor(t, "two ticks", func() bool { return len(inv.taken()) >= 2 })
	s.Stop()
	// A scheduler of the same period is the clock: the stopped one must
	// run nothing while it ticks.
	clock := &recorder{}
	w := NewScheduler(Options{Functions: oneTimer("clock", "@every 100ms"), Invoker: clock, Log: slog.New(slog.DiscardHandler)})
	w.Start()
	defer w.Stop()
	ticksOf := func(n int) func() bool { return func() bool { return len(clock.taken()) >= n } }
	waitFor(t, "a tick of the clock", ticksOf(1)) // a run started by the last tick has reached the invoker
	n := len(inv.taken())
	waitFor(t, "five more ticks of the clock", ticksOf(6))
	if got := len(inv.taken()); got != n {
		t.Fatalf("%d ticks ran after Stop", got-n)
	}
	s.Start() // a stopped scheduler stays stopped
	waitFor(t, "three more ticks of the clock", ticksOf(9))
	if got := len(inv.taken()); got != n {
		t.Fatalf("Start after Stop ran %d ticks", got-n)
	}
}
