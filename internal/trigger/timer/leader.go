package timer

import "sync/atomic"

// Leader says whether this replica may fire timers now: with several
// replicas, only the one holding the lease does (internal/leader).
type Leader interface{ IsLeader() bool }

// processLeader is the Leader of the schedulers that name none; nil: every
// tick fires.
var processLeader atomic.Pointer[Leader]

// SetLeader makes the schedulers of this process that name no Leader of
// their own fire only while l leads; nil fires every tick again.
func SetLeader(l Leader) {
	if l == nil {
		processLeader.Store(nil)
		return
	}
	processLeader.Store(&l)
}

// leads reports whether s may fire a tick now.
func (s *Scheduler) leads() bool {
	l := s.leader
	if l == nil {
		if p := processLeader.Load(); p != nil {
			l = *p
		}
	}
	return l == nil || l.IsLeader()
}
