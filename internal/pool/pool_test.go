package pool

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/polyfn/polyfn/internal/invoke"
	"github.com/polyfn/polyfn/internal/testlog"
)

// fakeInstance is an instance whose invocations and exit the test drives,
// to put the pool's events in an order a real worker leaves to chance.
type fakeInstance struct {
	id      string
	entered chan struct{} // an invocation arrived
	ids     chan string   // the ids of the invocations that arrived, in order
	answer  chan error    // what the invocation returns
	done    chan struct{}
	stopped chan struct{}

	mu       sync.Mutex
	exitErr  error
	ended    bool
	stopOnce sync.Once
}

func newFake(id string) *fakeInstance {
	return &fakeInstance{id: id, entered: make(chan struct{}, 16), ids: make(chan string, 16), answer: make(chan error, 16),
		done: make(chan struct{}), stopped: make(chan struct{})}
}

func (f *fakeInstance) ID() string { return f.id }
func (f *fakeInstance) Pid() int   { return 1 }
func (f *fakeInstance) Invoke(ctx context.Context, req *invoke.Request) (*invoke.Result, error) {
	f.ids <- req.ID
	f.entered <- struct{}{}
	select {
	case err := <-f.answer:
		if err != nil {
			return nil, err
		}
		return &invoke.Result{Payload: []byte("ok")}, nil
	case <-ctx.Done():
		return nil, invoke.Errorf(invoke.KindTimeout, "timeout")
	}
}
func (f *fakeInstance) Done() <-chan struct{} { return f.done }
func (f *fakeInstance) ExitError() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.exitErr
}

// die records that the worker exited on its own with err; Done is closed
// when the exit is observed (observe), as for a real worker a moment after
// it died.
func (f *fakeInstance) die(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.ended {
		f.ended, f.exitErr = true, err
	}
}

func (f *fakeInstance) observe() {
	f.mu.Lock()
	defer f.mu.Unlock()
	select {
	case <-f.done:
	default:
		close(f.done)
	}
}

// Stop stops the worker; one still running ends with no exit error.
func (f *fakeInstance) Stop(context.Context) {
	f.mu.Lock()
	f.ended = true
	f.mu.Unlock()
	f.observe()
	f.stopOnce.Do(func() { close(f.stopped) })
}

var _ Instance = (*fakeInstance)(nil)

// countingObserver records what the pool reports.
type countingObserver struct {
	mu   sync.Mutex
	lost map[string]int
}

func (o *countingObserver) InstanceStarted(string, time.Duration) {}
func (o *countingObserver) InstanceStartFailed(string)            {}
func (o *countingObserver) InstanceLost(_ string, cause string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.lost[cause]++
}

func (o *countingObserver) counts() map[string]int {
	o.mu.Lock()
	defer o.mu.Unlock()
	out := map[string]int{}
	for k, v := range o.lost {
		out[k] = v
	}
	return out
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// newTestPool returns a pool whose instances are fakes, sent on started as
// they start, and its observer and log.
func newTestPool(t *testing.T, o Options) (*Pool, chan *fakeInstance, *countingObserver, *testlog.Buffer) {
	t.Helper()
	started := make(chan *fakeInstance, 16)
	obs := &countingObserver{lost: map[string]int{}}
	logs := &testlog.Buffer{}
	o.Function = "fn"
	o.Log = slog.New(slog.NewTextHandler(logs, nil))
	o.Observer = obs
	if o.Concurrency == 0 {
		o.Concurrency = 1
	}
	if o.Queue == 0 {
		o.Queue = 10
	}
	if o.Max == 0 {
		o.Max = 1
	}
	if o.Idle == 0 {
		o.Idle = time.Hour // the reaper stays out of tests that do not ask for it
	}
	if o.Start == nil {
		o.Start = func(_ context.Context, id string) (Instance, error) {
			f := newFake(id)
			started <- f
			return f, nil
		}
	}
	p := New(o)
	p.Start()
	t.Cleanup(func() { p.Close(context.Background()) })
	return p, started, obs, logs
}

// A worker that dies holding an invocation is one lost instance, whichever
// the pool sees first: its exit or the invocation's failure. It is logged
// as an unexpected exit with its status either way.
func TestInstanceDyingWithAnInvocationIsLostOnce(t *testing.T) {
	crashed := invoke.Errorf(invoke.KindWorkerCrashed, "instance fn-1 lost while running the invocation: connection reset")
	for _, order := range []string{"exit first", "failure first"} {
		t.Run(order, func(t *testing.T) {
			p, started, obs, logs := newTestPool(t, Options{})
			result := make(chan error, 1)
			go func() {
				_, err := p.Invoke(context.Background(), &invoke.Request{ID: "inv-1", Function: "fn"})
				result <- err
			}()
			f := <-started
			<-f.entered
			exitErr := errors.New("signal: killed; last stderr: about to die")
			f.die(exitErr)
			if order == "exit first" {
				f.observe()
				waitFor(t, "the pool to see the exit", func() bool { live, _ := p.Load(); return live == 0 })
				f.answer <- crashed
			} else {
				f.answer <- crashed
				<-f.stopped // retired: the pool stops it, and sees it gone
			}
			if err := <-result; invoke.KindOf(err) != invoke.KindWorkerCrashed {
				t.Fatalf("invocation: %v, want WorkerCrashed", err)
			}
			waitFor(t, "the exit to be logged", func() bool { return strings.Contains(logs.String(), "instance exited unexpectedly") })
			if got := obs.counts(); got["lost_invocation"] != 1 || got["crashed"] != 0 {
				t.Errorf("instances lost: %v, want lost_invocation 1 and nothing else", got)
			}
			if n := strings.Count(logs.String(), "instance exited unexpectedly"); n != 1 || !strings.Contains(logs.String(), "signal: killed; last stderr: about to die") {
				t.Errorf("%d records of the unexpected exit, want 1 with its status and stderr:\n%s", n, logs.String())
			}
		})
	}
}

// An instance retired after a failed invocation whose worker was still
// running when the pool stopped it did not exit unexpectedly; an idle
// instance that dies did.
func TestExpectedAndUnexpectedExits(t *testing.T) {
	p, started, obs, logs := newTestPool(t, Options{})
	go func() { _, _ = p.Invoke(context.Background(), &invoke.Request{ID: "inv-1", Function: "fn"}) }()
	f := <-started
	<-f.entered
	f.answer <- invoke.Errorf(invoke.KindWorkerCrashed, "the worker cannot start a thread")
	<-f.stopped
	waitFor(t, "the retired instance to be gone", func() bool { live, _ := p.Load(); return live == 0 })
	if strings.Contains(logs.String(), "instance exited unexpectedly") {
		t.Errorf("a worker the pool stopped is logged as an unexpected exit:\n%s", logs.String())
	}

	go func() { _, _ = p.Invoke(context.Background(), &invoke.Request{ID: "inv-2", Function: "fn"}) }()
	g := <-started
	<-g.entered
	g.answer <- nil
	waitFor(t, "the invocation to end", func() bool { return p.Stats().InFlight == 0 })
	g.die(errors.New("exit status 7"))
	g.observe()
	waitFor(t, "the idle instance's exit to be logged", func() bool { return strings.Contains(logs.String(), "exit status 7") })
	if got := obs.counts(); got["lost_invocation"] != 1 || got["crashed"] != 1 {
		t.Errorf("instances lost: %v, want lost_invocation 1 (the retired one) and crashed 1 (the idle one)", got)
	}
}

// A function whose start failed stays broken, with the cause, after its
// back-off has ended: the state is recorded, not read off a clock.
func TestBrokenStateOutlivesTheBackoff(t *testing.T) {
	cause := errors.New("exit status 3; last stderr: cannot load handler")
	p, _, _, _ := newTestPool(t, Options{RestartDelay: time.Millisecond, MaxRestartDelay: time.Millisecond,
		Start: func(context.Context, string) (Instance, error) { return nil, cause }})
	_, err := p.Invoke(context.Background(), &invoke.Request{ID: "inv-1", Function: "fn"})
	if invoke.KindOf(err) != invoke.KindWorkerStart {
		t.Fatalf("invocation: %v, want WorkerStartFailed", err)
	}
	// Well past the 1 ms back-off.
	for began := time.Now(); time.Since(began) < 50*time.Millisecond; {
		time.Sleep(5 * time.Millisecond)
	}
	waitFor(t, "the back-off to end", func() bool { return p.Stats().BackoffUntil.IsZero() })
	st := p.Stats()
	if st.State != "broken" || !strings.Contains(st.LastError, "cannot load handler") {
		t.Fatalf("after the back-off: state %q, last error %q; want broken with the cause", st.State, st.LastError)
	}
}

// Invocations still running when Close stops their instances at the
// shutdown limit fail as cut by the shutdown, not as a crash.
func TestInvocationCutAtShutdownLimitIsUnavailable(t *testing.T) {
	p, started, obs, _ := newTestPool(t, Options{})
	result := make(chan error, 1)
	go func() {
		_, err := p.Invoke(context.Background(), &invoke.Request{ID: "inv-1", Function: "fn"})
		result <- err
	}()
	f := <-started
	<-f.entered
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // the drain's bound has passed
	closed := make(chan struct{})
	go func() { p.Close(ctx); close(closed) }()
	<-f.stopped
	f.answer <- invoke.Errorf(invoke.KindWorkerCrashed, "instance fn-1 lost while running the invocation: stream closed by the host")
	err := <-result
	var ie *invoke.Error
	if !errors.As(err, &ie) || ie.Kind != invoke.KindUnavailable || !strings.Contains(ie.Message, "shutting down") {
		t.Fatalf("cut invocation: %v, want Unavailable saying the function is shutting down", err)
	}
	<-closed
	if got := obs.counts(); len(got) != 0 {
		t.Errorf("instances counted lost at shutdown: %v", got)
	}
}

// Close waits for the invocations in flight before it stops their
// instances, and returns once the last one ends.
func TestCloseWaitsForInvocationsInFlight(t *testing.T) {
	p, started, _, _ := newTestPool(t, Options{Concurrency: 2})
	results := make(chan error, 2)
	for _, id := range []string{"inv-1", "inv-2"} {
		go func() {
			_, err := p.Invoke(context.Background(), &invoke.Request{ID: id, Function: "fn"})
			results <- err
		}()
	}
	f := <-started
	<-f.entered
	<-f.entered
	closed := make(chan struct{})
	go func() { p.Close(context.Background()); close(closed) }()
	f.answer <- nil
	if err := <-results; err != nil {
		t.Fatalf("first invocation: %v", err)
	}
	select {
	case <-f.stopped:
		t.Fatal("Close stopped the instance while an invocation was in flight")
	case <-closed:
		t.Fatal("Close returned while an invocation was in flight")
	default:
	}
	f.answer <- nil
	if err := <-results; err != nil {
		t.Fatalf("second invocation: %v", err)
	}
	<-closed
	<-f.stopped
}
