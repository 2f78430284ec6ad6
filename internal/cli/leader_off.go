//go:build !kubernetes

package cli

import (
	"fmt"
	"log/slog"
	"os"

	"github.com/polyfn/polyfn/internal/config"
	"github.com/polyfn/polyfn/internal/trigger/timer"
)

// startLeaderElection without Kubernetes support: leader_election.mode
// always is an error; in a pod (mode auto) the timers fire on every
// replica, which the log says.
func startLeaderElection(le config.LeaderElection, log *slog.Logger) (timer.Leader, func(), error) {
	switch {
	case le.Mode == config.LeaderAlways:
		return nil, nil, fmt.Errorf("leader_election.mode always: %w", errNoKubernetes)
	case le.Mode == config.LeaderAuto && os.Getenv("KUBERNETES_SERVICE_HOST") != "":
		log.Warn("running in a Kubernetes pod without leader election: every replica fires every timer", "error", errNoKubernetes)
	}
	return nil, func() {}, nil
}
