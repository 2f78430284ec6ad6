//go:build linux

package peer

import (
	"bufio"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// FromWorker reports whether the client of a TCP connection (remote, as
// seen by the server, and local, the server's own address) is a process of
// a worker. Errors reading /proc are returned with false.
func (g Guard) FromWorker(remote, local string) (bool, error) {
	ra, err := netip.ParseAddrPort(remote)
	if err != nil {
		return false, err
	}
	la, err := netip.ParseAddrPort(local)
	if err != nil {
		return false, err
	}
	uid, inode, found, err := lookupSocket(ra, la)
	if err != nil || !found {
		return false, err // not a local process
	}
	if g.workerUID(uid) {
		return true, nil
	}
	for _, pid := range g.candidates() {
		if holds(pid, inode) {
			return true, nil
		}
	}
	return false, nil
}

// lookupSocket finds the socket whose local address is client and whose
// remote address is server.
func lookupSocket(client, server netip.AddrPort) (uid int, inode uint64, found bool, err error) {
	client = unmap(client)
	server = unmap(server)
	if diagAvailable() {
		if s, found, err := diagLookup(client, server); err == nil {
			return s.uid, s.inode, found, nil
		}
	}
	return lookupSocketProc(client, server)
}

// lookupSocketProc is lookupSocket reading /proc/net/tcp{,6}.
func lookupSocketProc(client, server netip.AddrPort) (uid int, inode uint64, found bool, err error) {
	err = scanTCP(func(e tcpEntry) bool {
		if e.local == client && e.remote == server {
			uid, inode, found = e.uid, e.inode, true
			return false
		}
		return true
	})
	return uid, inode, found, err
}

func unmap(a netip.AddrPort) netip.AddrPort { return netip.AddrPortFrom(a.Addr().Unmap(), a.Port()) }

// tcpListen is the state of a listening socket in /proc/net/tcp.
const tcpListen = "0A"

// tcpEntry is one socket of /proc/net/tcp{,6}. inode is 0 for a
// connection still in its listener's accept queue.
type tcpEntry struct {
	local, remote netip.AddrPort
	state         string
	uid           int
	inode         uint64
}

// scanTCP calls f for each socket of /proc/net/tcp and /proc/net/tcp6
// until f returns false.
func scanTCP(f func(tcpEntry) bool) error {
	for _, name := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		fh, err := os.Open(name)
		if err != nil {
			if os.IsNotExist(err) {
				continue
			}
			return err
		}
		sc := bufio.NewScanner(fh)
		sc.Scan() // header
		more := true
		for more && sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) < 10 {
				continue
			}
			l, err1 := parseAddr(fields[1])
			r, err2 := parseAddr(fields[2])
			u, err3 := strconv.Atoi(fields[7])
			n, err4 := strconv.ParseUint(fields[9], 10, 64)
			if err1 != nil || err2 != nil || err3 != nil || err4 != nil {
				continue
			}
			more = f(tcpEntry{local: l, remote: r, state: fields[3], uid: u, inode: n})
		}
		err = sc.Err()
		fh.Close()
		if err != nil {
			return fmt.Errorf("read %s: %w", name, err)
		}
		if !more {
			return nil
		}
	}
	return nil
}

// parseAddr parses /proc/net/tcp's HEXADDR:HEXPORT, the address in 32-bit
// words of the machine's byte order.
func parseAddr(s string) (netip.AddrPort, error) {
	a, p, ok := strings.Cut(s, ":")
	if !ok {
		return netip.AddrPort{}, fmt.Errorf("bad address %q", s)
	}
	raw, err := hex.DecodeString(a)
	if err != nil || (len(raw) != 4 && len(raw) != 16) {
		return netip.AddrPort{}, fmt.Errorf("bad address %q", s)
	}
	for i := 0; i < len(raw); i += 4 {
		binary.BigEndian.PutUint32(raw[i:], binary.NativeEndian.Uint32(raw[i:]))
	}
	port, err := strconv.ParseUint(p, 16, 16)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("bad port %q", s)
	}
	addr, _ := netip.AddrFromSlice(raw)
	return netip.AddrPortFrom(addr.Unmap(), uint16(port)), nil
}

// candidates returns the processes that may be workers: the host's
// descendants, the processes working under the run directory, and those of
// the workers' users.
func (g Guard) candidates() []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	children := map[int][]int{}
	var out []int
	seen := map[int]bool{g.HostPID: true}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == g.HostPID {
			continue
		}
		ppid, uid, ok := statusOf(pid)
		if !ok {
			continue
		}
		children[ppid] = append(children[ppid], pid)
		if g.workerUID(uid) || g.RunDir != "" && under(pid, g.RunDir) {
			seen[pid] = true
			out = append(out, pid)
		}
	}
	queue := []int{g.HostPID}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		for _, c := range children[p] {
			if !seen[c] {
				seen[c] = true
				out = append(out, c)
			}
			queue = append(queue, c)
		}
	}
	return out
}

func statusOf(pid int) (ppid, uid int, ok bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, false
	}
	gotP, gotU := false, false
	for _, line := range strings.Split(string(b), "\n") {
		k, v, _ := strings.Cut(line, ":")
		switch k {
		case "PPid":
			ppid, err = strconv.Atoi(strings.TrimSpace(v))
			gotP = err == nil
		case "Uid":
			f := strings.Fields(v)
			if len(f) > 0 {
				uid, err = strconv.Atoi(f[0])
				gotU = err == nil
			}
		}
	}
	return ppid, uid, gotP && gotU
}

func under(pid int, dir string) bool {
	cwd, err := os.Readlink(fmt.Sprintf("/proc/%d/cwd", pid))
	if err != nil {
		return false
	}
	rel, err := filepath.Rel(dir, cwd)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, "../")
}

// holds reports whether process pid has the socket inode open.
func holds(pid int, inode uint64) bool {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return false
	}
	want := fmt.Sprintf("socket:[%d]", inode)
	for _, e := range ents {
		if l, err := os.Readlink(filepath.Join(dir, e.Name())); err == nil && l == want {
			return true
		}
	}
	return false
}
