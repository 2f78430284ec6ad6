//go:build linux

package peer

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// TCPClient identifies the process at the client end of a TCP connection
// the host accepted (client and server as the server sees them). The
// process must belong to worker's process tree; otherwise the error is a
// *Refusal.
func TCPClient(worker int, client, server netip.AddrPort) (Process, error) {
	subject := "the connection's client " + client.String()
	uid, inode, found, err := lookupSocket(client, server)
	switch {
	case err != nil:
		return Process{}, &Refusal{Reason: ReasonUnidentified, Subject: subject, Worker: worker, UID: -1, Err: err}
	case !found || inode == 0:
		return Process{}, &Refusal{Reason: ReasonUnidentified, Subject: subject, Worker: worker, UID: -1,
			Err: errors.New("no local socket has that address (a remote client, or one already closed)")}
	}
	if pid := holderInTree(worker, inode); pid != 0 {
		return Process{Pid: pid, UID: uid}, nil
	}
	return Process{}, &Refusal{Reason: ReasonNotWorker, Subject: subject, Worker: worker, Pid: offender(inode), UID: uid}
}

// TCPClientProcess finds the process at the client end of a TCP connection
// the host accepted, among every process (rate limited: see
// OffenderLookupInterval), for the log of a refused connection. Pid is 0
// and UID -1 when they are not known.
func TCPClientProcess(client, server netip.AddrPort) Process {
	uid, inode, found, err := lookupSocket(client, server)
	if err != nil || !found {
		return Process{UID: -1}
	}
	return Process{Pid: offender(inode), UID: uid}
}

// acceptPoll bounds the pause between two looks at whether the worker has
// accepted the host's connection (TCPServer).
const acceptPoll = 2 * time.Millisecond

// TCPServer checks a TCP connection the host opened from client to server
// (a worker's address): the process that accepted it, and every process
// listening where a connection to server may land (server itself, or the
// unspecified address on its port, shared with SO_REUSEPORT or not), must
// belong to worker's process tree. It waits for the connection to be
// accepted until ctx is done. A connection served by another process gives
// a *Refusal; one not accepted in time (or reset), a plain error.
func TCPServer(ctx context.Context, worker int, client, server netip.AddrPort) (Process, error) {
	client, server = unmap(client), unmap(server)
	subject := "the process that accepted the connection to " + server.String()
	var uid int
	var inode uint64
	// Nothing tells another process's accept: look until the connection's
	// server end has a file (an inode), with growing pauses. A worker
	// blocked in accept takes it at once.
	for wait := 20 * time.Microsecond; ; wait = min(2*wait, acceptPoll) {
		var found bool
		var err error
		uid, inode, found, err = lookupSocket(server, client)
		if err != nil {
			return Process{}, &Refusal{Reason: ReasonUnidentified, Subject: subject, Worker: worker, UID: -1, Err: err}
		}
		if found && inode != 0 {
			break // accepted
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return Process{}, fmt.Errorf("connection to %s not accepted: %w", server, ctx.Err())
		case <-t.C:
		}
	}
	pid := holderInTree(worker, inode)
	if pid == 0 {
		return Process{}, &Refusal{Reason: ReasonNotWorker, Subject: subject, Worker: worker, Pid: offender(inode), UID: uid}
	}
	others, err := listeners(server)
	if err != nil {
		return Process{}, &Refusal{Reason: ReasonUnidentified, Subject: "the listeners on " + server.String(), Worker: worker, UID: -1, Err: err}
	}
	for _, l := range others {
		if holderInTree(worker, l.inode) == 0 {
			return Process{}, &Refusal{Reason: ReasonNotWorker, Subject: "a process listening on " + l.local.String(),
				Worker: worker, Pid: offender(l.inode), UID: l.uid}
		}
	}
	return Process{Pid: pid, UID: uid}, nil
}

// listeners returns the TCP sockets listening where a connection to addr
// may land: on addr itself, or on the unspecified address of either family,
// on addr's port.
func listeners(addr netip.AddrPort) ([]tcpEntry, error) {
	var all []tcpEntry
	var err error
	if diagAvailable() {
		var socks []diagSocket
		if socks, err = diagListeners(addr.Port()); err == nil {
			for _, s := range socks {
				all = append(all, tcpEntry{local: s.local, state: tcpListen, uid: s.uid, inode: s.inode})
			}
		}
	}
	if !diagAvailable() || err != nil {
		if all, err = listenersProc(); err != nil {
			return nil, err
		}
	}
	var out []tcpEntry
	for _, e := range all {
		if e.state == tcpListen && e.local.Port() == addr.Port() && (e.local.Addr() == addr.Addr() || e.local.Addr().IsUnspecified()) {
			out = append(out, e)
		}
	}
	return out, nil
}

// listenersProc returns every listening TCP socket of /proc/net/tcp{,6}.
func listenersProc() ([]tcpEntry, error) {
	var all []tcpEntry
	err := scanTCP(func(e tcpEntry) bool {
		if e.state == tcpListen {
			all = append(all, e)
		}
		return true
	})
	return all, err
}

// UnixServer checks the server end of a unix socket connection the host
// opened: the process that created the listening socket (SO_PEERCRED) must
// belong to worker's process tree.
func UnixServer(worker int, c *net.UnixConn) (Process, error) {
	subject := "the process listening on " + c.RemoteAddr().String()
	cred, err := peerCred(c)
	if err != nil {
		return Process{}, &Refusal{Reason: ReasonUnidentified, Subject: subject, Worker: worker, UID: -1, Err: err}
	}
	p := Process{Pid: int(cred.Pid), UID: int(cred.Uid)}
	if !Descends(p.Pid, worker) {
		return Process{}, &Refusal{Reason: ReasonNotWorker, Subject: subject, Worker: worker, Pid: p.Pid, UID: p.UID}
	}
	return p, nil
}

func peerCred(c *net.UnixConn) (*syscall.Ucred, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	var cred *syscall.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
	}); err != nil {
		return nil, err
	}
	if cerr != nil {
		return nil, fmt.Errorf("SO_PEERCRED: %w", cerr)
	}
	return cred, nil
}

// maxDepth bounds the walk up a process's parents.
const maxDepth = 1024

// Descends reports whether process pid is root or one of its descendants,
// walking its parents (PPid) up from pid. A process whose parent exited
// was adopted by init (or a subreaper) and no longer descends from root.
func Descends(pid, root int) bool {
	for range maxDepth {
		if pid == root {
			return true
		}
		if pid <= 1 {
			return false
		}
		ppid, _, ok := statusOf(pid)
		if !ok {
			return false
		}
		pid = ppid
	}
	return false
}

// holderInTree returns the process of root's tree that holds socket inode
// (root first: it usually is the one), or 0.
func holderInTree(root int, inode uint64) int {
	if holds(root, inode) {
		return root
	}
	for _, pid := range descendants(root) {
		if holds(pid, inode) {
			return pid
		}
	}
	return 0
}

// descendants returns the processes below root, read from the children
// lists of its threads (/proc/PID/task/TID/children), or, where the kernel
// has none, by scanning every process's parent.
func descendants(root int) []int {
	var out []int
	queue := []int{root}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		kids, ok := children(p)
		if !ok {
			return descendantsByScan(root)
		}
		out = append(out, kids...)
		queue = append(queue, kids...)
	}
	return out
}

// children lists pid's children; ok is false when the kernel does not
// provide the lists (CONFIG_PROC_CHILDREN).
func children(pid int) (kids []int, ok bool) {
	dir := "/proc/" + strconv.Itoa(pid) + "/task"
	tasks, err := os.ReadDir(dir)
	if err != nil {
		return nil, true // gone
	}
	for _, t := range tasks {
		b, err := os.ReadFile(dir + "/" + t.Name() + "/children")
		if err != nil {
			if os.IsNotExist(err) {
				if _, serr := os.Stat(dir + "/" + t.Name()); serr == nil {
					return nil, false // the thread is there, its list is not
				}
			}
			continue
		}
		for _, f := range strings.Fields(string(b)) {
			if k, err := strconv.Atoi(f); err == nil {
				kids = append(kids, k)
			}
		}
	}
	return kids, true
}

func descendantsByScan(root int) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	kids := map[int][]int{}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if ppid, _, ok := statusOf(pid); ok {
			kids[ppid] = append(kids[ppid], pid)
		}
	}
	var out []int
	queue := []int{root}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		out = append(out, kids[p]...)
		queue = append(queue, kids[p]...)
	}
	return out
}

// offenderBucket rate-limits offender lookups (OffenderLookupBurst,
// OffenderLookupInterval).
var offenderBucket = struct {
	sync.Mutex
	tokens float64
	last   time.Time
}{tokens: OffenderLookupBurst}

// offender returns the process holding socket inode, looked for among every
// process, or 0 when none does or the lookup is over its rate limit.
func offender(inode uint64) int {
	offenderBucket.Lock()
	now := time.Now()
	if !offenderBucket.last.IsZero() {
		offenderBucket.tokens = min(OffenderLookupBurst, offenderBucket.tokens+float64(now.Sub(offenderBucket.last))/float64(OffenderLookupInterval))
	}
	offenderBucket.last = now
	allowed := offenderBucket.tokens >= 1
	if allowed {
		offenderBucket.tokens--
	}
	offenderBucket.Unlock()
	if !allowed {
		return 0
	}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0
	}
	self := os.Getpid()
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		if holds(pid, inode) {
			return pid
		}
	}
	return 0
}
