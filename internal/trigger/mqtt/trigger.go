package mqtt

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/polyfn/polyfn/internal/config"
	"github.com/polyfn/polyfn/internal/invoke"
	"github.com/polyfn/polyfn/internal/trigger"
)

// Named durations and bounds of the trigger.
const (
	// sessionExpiry is how long the broker keeps a session (its
	// subscription and the QoS 1 messages it holds) while polyfn is away.
	sessionExpiry = 7 * 24 * 60 * 60 // seconds
	// ackInterval is how often acknowledgements go out: in batches, in the
	// order the messages arrived, as the protocol requires.
	ackInterval = 20 * time.Millisecond
	// publishTimeout bounds one attempt to publish a result (QoS 1: until
	// the broker acknowledged it).
	publishTimeout = 10 * time.Second
	// busyWait and busyWaitMax pace the attempts of an invocation the host
	// turned away as overloaded (or because its configuration was being
	// replaced); these attempts are back pressure, not retries.
	busyWait    = 50 * time.Millisecond
	busyWaitMax = time.Second
	// retireTimeout bounds the retirement of a subscription a reload
	// removed: waiting for the filters that replace it, unsubscribing and
	// handling the messages in hand.
	retireTimeout = 30 * time.Second
	// subscribeTimeout bounds one SUBSCRIBE or UNSUBSCRIBE (until the
	// broker's acknowledgement); subscribeRetry and subscribeRetryMax pace
	// the attempts of one that failed on a connection still up.
	subscribeTimeout  = 10 * time.Second
	subscribeRetry    = 500 * time.Millisecond
	subscribeRetryMax = 30 * time.Second
	// publishRetry and publishRetryMax pace the attempts to publish a
	// result the broker did not take.
	publishRetry    = 100 * time.Millisecond
	publishRetryMax = 5 * time.Second
	// disconnectTimeout bounds the DISCONNECT that ends a connection.
	disconnectTimeout = 5 * time.Second
	// qos0Backlog is how many QoS 0 messages per in-flight place may wait
	// in a subscription's queue; past it further QoS 0 messages are dropped
	// (at most once), where QoS 1 messages are never dropped.
	qos0Backlog = 10
)

// Invoker runs invocations; *host.Host implements it.
type Invoker interface {
	Invoke(ctx context.Context, req *invoke.Request) (*invoke.Result, error)
}

// Host is what the trigger asks of a configuration's host; *host.Host
// implements it.
type Host interface {
	Invoker
	// Capacity is the pool that runs function and how many invocations it
	// takes at once, running and queued.
	Capacity(function string) (pool string, n int, ok bool)
}

// Observer counts the messages handled; *metrics.Metrics implements it.
type Observer interface {
	MQTTMessage(function, outcome string)
}

var _ trigger.Trigger = (*Trigger)(nil)

// Trigger runs the triggers.mqtt rules of the current configuration. Each
// distinct topic filter has a session of its own with the broker (client id
// CLIENT_ID-XXXXXXXX, persistent, one subscription): every message that
// arrives on it is for that filter's rules, whatever the broker does with
// overlapping subscriptions, and a saturated function holds back only its
// own topics. It lives as long as the process; Apply swaps the rules of a
// reload, and invocations go to the configuration current when they run.
type Trigger struct {
	opts Options
	url  *url.URL
	host atomic.Pointer[hostRef]
	log  *slog.Logger
	obs  Observer

	// retireTimeout and subscribeTimeout are the constants of the same
	// names; tests shorten them.
	retireTimeout    time.Duration
	subscribeTimeout time.Duration

	mu       sync.Mutex
	lanes    map[string]*lane       // by filter as subscribed
	retiring map[string]*retirement // lanes being retired, by filter
	closed   bool
	retired  sync.WaitGroup // the retirements running
}

type hostRef struct{ Host }

// New returns a trigger for the broker o names; Start gives it rules. obs,
// when not nil, counts the messages handled.
func New(o Options, obs Observer) (*Trigger, error) {
	u, err := o.brokerURL()
	if err != nil {
		return nil, err
	}
	if o.InFlight <= 0 {
		o.InFlight = config.DefaultMQTTInFlight
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	return &Trigger{opts: o, url: u, obs: obs, log: o.Log, retireTimeout: retireTimeout, subscribeTimeout: subscribeTimeout,
		lanes: map[string]*lane{}, retiring: map[string]*retirement{}}, nil
}

// Start subscribes to the filters of g's rules.
func (t *Trigger) Start(g trigger.Generation) error {
	t.Apply(g)
	return nil
}

// Apply makes g's host the one invocations go to and g's rules the
// trigger's (see update).
func (t *Trigger) Apply(g trigger.Generation) {
	t.host.Store(&hostRef{g.Host})
	t.update(g.Config, g.Host)
}

// current is the host invocations go to.
func (t *Trigger) current() Invoker { return t.host.Load().Host }

// Stop stops reading every subscription, lets the messages being handled
// finish and be acknowledged until ctx is done, then disconnects. The
// sessions stay with the broker: what was not acknowledged is delivered
// again to the next polyfn that connects with the same client id. The
// retirements under way go on until ctx is done; then they are cut short,
// and their sessions too stay with the broker.
func (t *Trigger) Stop(ctx context.Context) {
	t.mu.Lock()
	t.closed = true
	lanes := make([]*lane, 0, len(t.lanes))
	for _, l := range t.lanes {
		lanes = append(lanes, l)
	}
	t.lanes = map[string]*lane{}
	retiring := make([]*retirement, 0, len(t.retiring))
	for _, r := range t.retiring {
		retiring = append(retiring, r)
	}
	t.mu.Unlock()
	var wg sync.WaitGroup
	for _, l := range lanes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l.close(ctx)
		}()
	}
	wg.Wait()
	waitOrCancel(ctx, &t.retired, func() {
		for _, r := range retiring {
			r.cancel()
		}
	})
}

// waitOrCancel waits for wg; if ctx is done first, it calls cancel and
// waits on.
func waitOrCancel(ctx context.Context, wg *sync.WaitGroup, cancel func()) {
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		cancel()
		<-done
	}
}

// WaitSubscribed waits until the broker has acknowledged the subscription of
// every filter of the current rules, or ctx is done.
func (t *Trigger) WaitSubscribed(ctx context.Context) error {
	for {
		t.mu.Lock()
		lanes := make([]*lane, 0, len(t.lanes))
		for _, l := range t.lanes {
			lanes = append(lanes, l)
		}
		t.mu.Unlock()
		all := true
		for _, l := range lanes {
			all = all && l.subscribed()
		}
		if all {
			return nil
		}
		if !sleep(ctx, 10*time.Millisecond) {
			return fmt.Errorf("mqtt: not every subscription is acknowledged: %w", ctx.Err())
		}
	}
}

func (t *Trigger) count(function, outcome string) {
	if t.obs != nil {
		t.obs.MQTTMessage(function, outcome)
	}
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
