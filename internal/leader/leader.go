// Package leader elects one replica of a polyfn deployment, through a
// Kubernetes Lease (client-go's leaderelection), as the one whose timers
// fire.
//
// Safety: a replica is leader only until RenewDeadline has passed since its
// last successful write of the Lease as holder. Another replica may take the
// Lease only once LeaseDuration (longer than RenewDeadline) has passed since
// it saw that write, or after the leader released it; the release clears
// this replica's leadership before it is written. So a replica that loses
// the Lease has stopped firing before another starts, as long as the
// replicas' clocks run at about the same rate (LeaseDuration minus
// RenewDeadline is the margin).
package leader

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	coordinationv1client "k8s.io/client-go/kubernetes/typed/coordination/v1"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
)

// Options configure an Elector.
type Options struct {
	// Client reaches the API server holding the Lease (only the
	// coordination API: the whole clientset would add every API type to
	// the binary).
	Client coordinationv1client.LeasesGetter
	// Lock, when set, is used instead of a Lease lock through Client
	// (tests wrap one to cut a replica off).
	Lock resourcelock.Interface
	// Namespace and Name name the Lease; Identity names this replica in it.
	Namespace, Name, Identity string
	// LeaseDuration, RenewDeadline and RetryPeriod are client-go's
	// leaderelection settings (config.LeaderElection documents them).
	LeaseDuration, RenewDeadline, RetryPeriod time.Duration
	Log                                       *slog.Logger
}

// Elector campaigns for the Lease and says whether this replica leads.
type Elector struct {
	o    Options
	lock resourcelock.Interface
	now  func() time.Time

	mu sync.Mutex
	// validUntil is the end of the current leadership (zero: not leading).
	validUntil time.Time
	// since is when the current leadership began.
	since time.Time
}

// New returns an Elector; Run starts it.
func New(o Options) (*Elector, error) {
	if o.LeaseDuration%time.Second != 0 {
		return nil, fmt.Errorf("leader election: lease duration %s is not a whole number of seconds (the Lease holds seconds)", o.LeaseDuration)
	}
	if o.Identity == "" {
		return nil, errors.New("leader election: no identity")
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	e := &Elector{o: o, now: time.Now}
	lock := o.Lock
	if lock == nil {
		if o.Client == nil {
			return nil, errors.New("leader election: no client")
		}
		lock = &resourcelock.LeaseLock{LeaseMeta: metav1.ObjectMeta{Namespace: o.Namespace, Name: o.Name},
			Client: o.Client, LockConfig: resourcelock.ResourceLockConfig{Identity: o.Identity}}
	}
	e.lock = &trackingLock{Interface: lock, e: e}
	return e, nil
}

// IsLeader reports whether this replica holds the Lease now.
func (e *Elector) IsLeader() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.now().Before(e.validUntil)
}

// ValidUntil returns when the current leadership ends unless renewed (the
// zero time when not leading), and since when it lasts.
func (e *Elector) ValidUntil() (until, since time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.validUntil, e.since
}

// Run campaigns until ctx is done: it takes the Lease when it is free,
// renews it while leading, and campaigns again after losing it. When ctx
// ends while leading, the Lease is released so that another replica takes
// over at once.
func (e *Elector) Run(ctx context.Context) error {
	le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
		Lock:            e.lock,
		LeaseDuration:   e.o.LeaseDuration,
		RenewDeadline:   e.o.RenewDeadline,
		RetryPeriod:     e.o.RetryPeriod,
		ReleaseOnCancel: true,
		Name:            e.o.Name,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(context.Context) {
				e.o.Log.Info("leader election: leading; timers fire on this replica", "lease", e.lock.Describe(), "identity", e.o.Identity)
			},
			OnStoppedLeading: e.stop,
			OnNewLeader: func(id string) {
				if id != e.o.Identity {
					e.o.Log.Info("leader election: another replica leads; timers wait", "lease", e.lock.Describe(), "leader", id)
				}
			},
		},
	})
	if err != nil {
		return fmt.Errorf("leader election: %w", err)
	}
	for ctx.Err() == nil {
		le.Run(ctx) // returns when leadership is lost or ctx is done
	}
	return nil
}

// stop ends the leadership at once.
func (e *Elector) stop() {
	e.mu.Lock()
	was := !e.validUntil.IsZero()
	e.validUntil, e.since = time.Time{}, time.Time{}
	e.mu.Unlock()
	if was {
		e.o.Log.Warn("leader election: stopped leading; timers stop firing on this replica", "identity", e.o.Identity)
	}
}

// renewed extends the leadership from start, when a write that names this
// replica holder began.
func (e *Elector) renewed(start time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.validUntil.IsZero() {
		e.since = start
	}
	e.validUntil = start.Add(e.o.RenewDeadline)
}

// trackingLock records each successful write of the Lease by this replica
// as holder; a write that does not name it (the release) ends the
// leadership before it is sent.
type trackingLock struct {
	resourcelock.Interface
	e *Elector
}

func (l *trackingLock) Create(ctx context.Context, r resourcelock.LeaderElectionRecord) error {
	return l.write(ctx, r, l.Interface.Create)
}

func (l *trackingLock) Update(ctx context.Context, r resourcelock.LeaderElectionRecord) error {
	return l.write(ctx, r, l.Interface.Update)
}

func (l *trackingLock) write(ctx context.Context, r resourcelock.LeaderElectionRecord, op func(context.Context, resourcelock.LeaderElectionRecord) error) error {
	if r.HolderIdentity != l.e.o.Identity {
		l.e.stop()
		return op(ctx, r)
	}
	start := l.e.now()
	if err := op(ctx, r); err != nil {
		return err
	}
	l.e.renewed(start)
	return nil
}

// InCluster reports whether the process runs in a Kubernetes pod with a
// service account.
func InCluster() bool {
	if os.Getenv("KUBERNETES_SERVICE_HOST") == "" {
		return false
	}
	_, err := os.Stat(serviceAccountDir + "/token")
	return err == nil
}

const serviceAccountDir = "/var/run/secrets/kubernetes.io/serviceaccount"

// PodNamespace returns the namespace of the pod's service account, or
// "default".
func PodNamespace() string {
	if b, err := os.ReadFile(serviceAccountDir + "/namespace"); err == nil && len(b) > 0 {
		return string(b)
	}
	return "default"
}
