package timer

// Leader says whether this replica may fire timers now: with several
// replicas, only the one holding the lease does (internal/leader).
type Leader interface{ IsLeader() bool }

// leads reports whether s may fire a tick now.
func (s *Scheduler) leads() bool {
	return s.leader == nil || s.leader.IsLeader()
}
