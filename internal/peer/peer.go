// Package peer identifies the local process at the other end of a
// connection. Guard tells whether an HTTP client is one of the host's
// workers (or something a worker started), so that endpoints meant for
// operators can refuse it; TCPClient, TCPServer and UnixServer (worker.go)
// authenticate worker protocol connections: the process must be the
// instance's worker or one of its descendants.
//
// On Linux the client's socket is found in /proc/net/tcp{,6} by its
// address; the processes holding it are looked for among the host's
// descendants, the processes working under the host's run directory and
// the processes of the users workers run as. A connection from another
// machine, or from a process that is none of these, is not a worker's.
package peer

// Guard identifies workers' connections.
type Guard struct {
	// HostPID is the host's process id; the host itself is not a worker.
	HostPID int
	// RunDir is the directory holding the workers' private directories.
	RunDir string
	// UIDs are the users workers run as (other than the host's own).
	UIDs map[int]bool
	// UIDLo..UIDHi, when UIDHi is not zero, is a range of user ids
	// workers run as (isolation.uids).
	UIDLo, UIDHi int
}

// workerUID reports whether uid is one workers run as.
func (g Guard) workerUID(uid int) bool {
	return g.UIDs[uid] || g.UIDHi != 0 && uid >= g.UIDLo && uid <= g.UIDHi
}
