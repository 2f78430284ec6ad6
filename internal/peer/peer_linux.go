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
	client = netip.AddrPortFrom(client.Addr().Unmap(), client.Port())
	server = netip.AddrPortFrom(server.Addr().Unmap(), server.Port())
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		fh, err := os.Open(f)
		if err != nil {
			if os.IsNotExist(err) {
				continue
			}
			return 0, 0, false, err
		}
		sc := bufio.NewScanner(fh)
		sc.Scan() // header
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) < 10 {
				continue
			}
			l, err1 := parseAddr(fields[1])
			r, err2 := parseAddr(fields[2])
			if err1 != nil || err2 != nil || l != client || r != server {
				continue
			}
			u, err1 := strconv.Atoi(fields[7])
			n, err2 := strconv.ParseUint(fields[9], 10, 64)
			if err1 != nil || err2 != nil {
				continue
			}
			fh.Close()
			return u, n, true, nil
		}
		fh.Close()
	}
	return 0, 0, false, nil
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
