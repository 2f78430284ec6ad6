package config

import (
	"regexp"
	"time"
)

// The values of LeaderElection.Mode.
const (
	// LeaderAuto elects a leader when the host runs in a Kubernetes pod
	// (KUBERNETES_SERVICE_HOST is set and a service account is mounted).
	LeaderAuto = "auto"
	// LeaderAlways elects a leader wherever the host runs, through the
	// cluster of Kubeconfig (or $KUBECONFIG) outside a pod.
	LeaderAlways = "always"
	// LeaderNever fires every timer on this host.
	LeaderNever = "never"
)

// Defaults of leader_election (docs/config.md).
const (
	DefaultLeaseName          = "polyfn-timers"
	DefaultLeaseDuration      = 15 * time.Second
	DefaultLeaseRenewDeadline = 10 * time.Second
	DefaultLeaseRetryPeriod   = 2 * time.Second
)

// LeaderElection makes the replicas of a host elect one, through a
// Kubernetes Lease, whose timers fire; the others' timers wait. A leader
// that cannot renew the lease within RenewDeadline stops firing, and the
// lease cannot be taken by another replica before LeaseDuration has passed
// since its last renewal, so two replicas never fire the same tick.
type LeaderElection struct {
	// Mode is LeaderAuto, LeaderAlways or LeaderNever. Empty means LeaderAuto.
	Mode string `yaml:"mode"`
	// Lease names the Lease object. Replicas of one deployment share it.
	// Empty means DefaultLeaseName.
	Lease string `yaml:"lease"`
	// Namespace holds the Lease. Empty means the pod's namespace (from its
	// service account), or "default" outside a pod.
	Namespace string `yaml:"namespace"`
	// Identity names this replica in the Lease. Empty means the host name
	// (the pod's name).
	Identity string `yaml:"identity"`
	// Kubeconfig is the kubeconfig file used outside a pod. Empty means
	// $KUBECONFIG, then ~/.kube/config.
	Kubeconfig string `yaml:"kubeconfig"`
	// LeaseDuration is how long a lease holds without renewal before
	// another replica may take it. Zero means DefaultLeaseDuration.
	LeaseDuration Duration `yaml:"lease_duration"`
	// RenewDeadline is how long the leader retries renewing before it
	// gives up leading (and stops firing); below LeaseDuration. Zero means
	// DefaultLeaseRenewDeadline.
	RenewDeadline Duration `yaml:"renew_deadline"`
	// RetryPeriod is the wait between attempts to take or renew the lease.
	// Zero means DefaultLeaseRetryPeriod.
	RetryPeriod Duration `yaml:"retry_period"`
}

func applyLeaderDefaults(c *Config) {
	le := &c.LeaderElection
	if le.Mode == "" {
		le.Mode = LeaderAuto
	}
	if le.Lease == "" {
		le.Lease = DefaultLeaseName
	}
	if le.LeaseDuration == 0 {
		le.LeaseDuration = Duration(DefaultLeaseDuration)
	}
	if le.RenewDeadline == 0 {
		le.RenewDeadline = Duration(DefaultLeaseRenewDeadline)
	}
	if le.RetryPeriod == 0 {
		le.RetryPeriod = Duration(DefaultLeaseRetryPeriod)
	}
}

// leaseJitter is client-go's leaderelection.JitterFactor: the renew
// deadline must exceed the retry period by this factor.
const leaseJitter = 1.2

func validateLeaderElection(c *Config, d *decoder) {
	le := c.LeaderElection
	const p = "leader_election"
	switch le.Mode {
	case LeaderAuto, LeaderAlways, LeaderNever:
	default:
		d.errorf(d.at(p+".mode"), p+".mode", "unknown mode %q (known: auto, always, never)", le.Mode)
	}
	for _, k := range []string{"lease_duration", "renew_deadline", "retry_period"} {
		if d.explicitZero(p + "." + k) {
			d.errorf(d.at(p+"."+k), p+"."+k, "must be above zero (leave it out for the default)")
		}
	}
	if le.LeaseDuration%Duration(time.Second) != 0 {
		// The Lease holds whole seconds; a fraction would be cut off
		// and the lease held shorter than the leader believes.
		d.errorf(d.at(p+".lease_duration"), p+".lease_duration", "%s is not a whole number of seconds (the Lease holds seconds)", le.LeaseDuration)
	}
	if le.RenewDeadline >= le.LeaseDuration {
		d.errorf(d.at(p+".renew_deadline"), p+".renew_deadline",
			"%s is not below lease_duration (%s): a leader must give up before another replica may take the lease", le.RenewDeadline, le.LeaseDuration)
	}
	if float64(le.RenewDeadline) <= leaseJitter*float64(le.RetryPeriod) {
		d.errorf(d.at(p+".retry_period"), p+".retry_period",
			"%s is too long for renew_deadline %s: the deadline must exceed %.1f retry periods", le.RetryPeriod, le.RenewDeadline, leaseJitter)
	}
	if le.Lease != "" && !dnsLabelRE.MatchString(le.Lease) {
		d.errorf(d.at(p+".lease"), p+".lease", "invalid Lease name %q: lower-case letters, digits, '-' and '.', at most 253 bytes", le.Lease)
	}
}

var dnsLabelRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$`)
