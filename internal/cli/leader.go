//go:build kubernetes

package cli

import (
	"context"
	"fmt"
	"log/slog"
	"os"

	coordinationv1client "k8s.io/client-go/kubernetes/typed/coordination/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"

	"github.com/polyfn/polyfn/internal/config"
	"github.com/polyfn/polyfn/internal/leader"
	"github.com/polyfn/polyfn/internal/trigger/timer"
)

// startLeaderElection campaigns for the timers' Lease when le asks for it
// (mode always, or auto in a pod) and returns the Leader that gates the
// timers: they fire only while this replica leads. The returned stop
// releases the Lease. leader_election takes effect on start; a reload does
// not change it. Nil Leader: every tick fires.
func startLeaderElection(le config.LeaderElection, log *slog.Logger) (l timer.Leader, stop func(), err error) {
	inCluster := leader.InCluster()
	if le.Mode == config.LeaderNever || le.Mode == config.LeaderAuto && !inCluster {
		return nil, func() {}, nil
	}
	var rc *rest.Config
	if inCluster {
		rc, err = rest.InClusterConfig()
	} else {
		rules := clientcmd.NewDefaultClientConfigLoadingRules()
		if le.Kubeconfig != "" {
			rules.ExplicitPath = le.Kubeconfig
		}
		rc, err = clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, nil).ClientConfig()
	}
	if err != nil {
		return nil, nil, fmt.Errorf("leader election: %w", err)
	}
	client, err := coordinationv1client.NewForConfig(rc)
	if err != nil {
		return nil, nil, fmt.Errorf("leader election: %w", err)
	}
	ns := le.Namespace
	if ns == "" {
		ns = leader.PodNamespace()
	}
	id := le.Identity
	if id == "" {
		if id, err = os.Hostname(); err != nil {
			return nil, nil, fmt.Errorf("leader election: identity: %w", err)
		}
	}
	el, err := leader.New(leader.Options{Client: client, Namespace: ns, Name: le.Lease, Identity: id,
		LeaseDuration: le.LeaseDuration.D(), RenewDeadline: le.RenewDeadline.D(), RetryPeriod: le.RetryPeriod.D(), Log: log})
	if err != nil {
		return nil, nil, err
	}
	klog.SetSlogLogger(log) // client-go's own messages go to the host's log
	log.Info("leader election: timers fire only on the replica holding the lease", "lease", ns+"/"+le.Lease, "identity", id)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = el.Run(ctx) }()
	return el, func() { cancel(); <-done }, nil
}
