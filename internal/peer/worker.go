package peer

import (
	"fmt"
	"time"
)

// Worker authentication: a protocol connection is accepted only when the
// process at its other end is the worker process the host started for the
// instance, or one of its descendants (the worker's process tree). On
// Linux the process is found from the connection's socket: for TCP, the
// socket's inode in /proc/net/tcp{,6} and the process of the worker's tree
// whose file descriptors hold it (only that tree is searched); for unix
// sockets, SO_PEERCRED, whose pid must lead to the worker by its parents.

// Reasons a worker connection is refused: the reason label of
// polyfn_worker_connections_refused_total.
const (
	// ReasonNotWorker: the connection is held by a process outside the
	// worker's process tree.
	ReasonNotWorker = "not_worker"
	// ReasonUnidentified: the connection's socket, or the process holding
	// it, could not be found (or /proc could not be read).
	ReasonUnidentified = "unidentified"
)

// RefusalCounter counts refused worker connections by protocol (stream,
// call) and reason; *metrics.Metrics is one.
type RefusalCounter interface {
	WorkerConnectionRefused(protocol, reason string)
}

// Process is the process found at the other end of a connection.
type Process struct {
	Pid int
	UID int
}

// Refusal says why a connection is not the worker's.
type Refusal struct {
	Reason string
	// Subject names what was checked: "the stream's client", "a listener
	// on 127.0.0.1:4000".
	Subject string
	// Worker is the worker process's id.
	Worker int
	// Pid and UID are the offending process and its user: 0 and -1 when
	// not known.
	Pid, UID int
	// Err says why the peer could not be identified (ReasonUnidentified).
	Err error
}

func (r *Refusal) Error() string {
	if r.Reason == ReasonUnidentified {
		return fmt.Sprintf("%s could not be identified as worker process %d or a process it started: %v", r.Subject, r.Worker, r.Err)
	}
	who := fmt.Sprintf("pid %d (uid %d)", r.Pid, r.UID)
	switch {
	case r.Pid == 0 && r.UID >= 0:
		who = fmt.Sprintf("a process of uid %d (pid not looked up)", r.UID)
	case r.Pid == 0:
		who = "an unknown process"
	}
	return fmt.Sprintf("%s is %s, not worker process %d or a process it started", r.Subject, who, r.Worker)
}

// LogArgs are the refusal's log record attributes.
func (r *Refusal) LogArgs() []any {
	return []any{"reason", r.Reason, "pid", r.Pid, "uid", r.UID, "worker_pid", r.Worker}
}

// Looking up the offender of a refused TCP connection means reading the
// file descriptors of every process, so it is rate limited: a process
// that floods the host with connections cannot make it scan /proc without
// bound. Past the limit a refusal is logged with its uid only.
const (
	// OffenderLookupBurst is how many lookups may run back to back.
	OffenderLookupBurst = 10
	// OffenderLookupInterval is how often one more lookup is allowed.
	OffenderLookupInterval = 100 * time.Millisecond
)
