//go:build linux

package peer

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"syscall"
	"time"
)

// Sockets are looked up with the kernel's sock_diag netlink interface: one
// socket by its addresses, or the listeners on a port, each a lookup in the
// kernel's tables. Reading /proc/net/tcp instead walks the whole
// established-connections hash table, which takes milliseconds on a machine
// with much memory even when it holds few sockets; it is the fallback where
// sock_diag is missing (a kernel without inet_diag).

const (
	netlinkSockDiag  = 4  // NETLINK_SOCK_DIAG
	sockDiagByFamily = 20 // SOCK_DIAG_BY_FAMILY
	tcpStateListen   = 10 // TCP_LISTEN
	diagReqLen       = 56 // struct inet_diag_req_v2
	diagMsgLen       = 72 // struct inet_diag_msg
)

// diagTimeout bounds the wait for the kernel's answer to one request.
const diagTimeout = time.Second

// diagSocket is a TCP socket as sock_diag reports it. inode is 0 for a
// connection still in its listener's accept queue.
type diagSocket struct {
	local, remote netip.AddrPort
	state         uint8
	uid           int
	inode         uint64
}

var diagProbe = sync.OnceValue(func() bool {
	_, err := diagListeners(1)
	return err == nil
})

// diagAvailable reports whether sock_diag answers on this system.
func diagAvailable() bool { return diagProbe() }

// diagLookup finds the TCP socket whose local address is local and whose
// remote address is remote.
func diagLookup(local, remote netip.AddrPort) (s diagSocket, found bool, err error) {
	local, remote = unmap(local), unmap(remote)
	family := uint8(syscall.AF_INET)
	if !local.Addr().Is4() || !remote.Addr().Is4() {
		family = syscall.AF_INET6
	}
	socks, err := diagQuery(diagRequest(family, ^uint32(0), syscall.NLM_F_REQUEST, local, remote), false)
	if errors.Is(err, syscall.ENOENT) {
		return s, false, nil
	}
	if err != nil {
		return s, false, err
	}
	for _, s := range socks {
		// With no connection of those addresses the kernel may answer with
		// a listener on the local port.
		if s.local == local && s.remote == remote {
			return s, true, nil
		}
	}
	return s, false, nil
}

// diagListeners returns the TCP sockets listening on port, of either
// address family.
func diagListeners(port uint16) ([]diagSocket, error) {
	var out []diagSocket
	for _, family := range []uint8{syscall.AF_INET, syscall.AF_INET6} {
		var zero netip.AddrPort
		socks, err := diagQuery(diagRequest(family, 1<<tcpStateListen, syscall.NLM_F_REQUEST|syscall.NLM_F_DUMP,
			netip.AddrPortFrom(netip.IPv4Unspecified(), port), zero), true)
		if err != nil {
			if family == syscall.AF_INET6 && errors.Is(err, syscall.ENOENT) {
				continue // no IPv6 here
			}
			return nil, err
		}
		for _, s := range socks {
			if s.state == tcpStateListen && s.local.Port() == port {
				out = append(out, s)
			}
		}
	}
	return out, nil
}

// diagRequest builds a netlink message holding an inet_diag_req_v2.
func diagRequest(family uint8, states uint32, flags uint16, local, remote netip.AddrPort) []byte {
	ne := binary.NativeEndian
	b := make([]byte, syscall.NLMSG_HDRLEN+diagReqLen)
	ne.PutUint32(b[0:], uint32(len(b)))
	ne.PutUint16(b[4:], sockDiagByFamily)
	ne.PutUint16(b[6:], flags)
	ne.PutUint32(b[8:], 1) // sequence number
	r := b[syscall.NLMSG_HDRLEN:]
	r[0], r[1] = family, syscall.IPPROTO_TCP
	ne.PutUint32(r[4:], states)
	id := r[8:] // struct inet_diag_sockid
	binary.BigEndian.PutUint16(id[0:], local.Port())
	binary.BigEndian.PutUint16(id[2:], remote.Port())
	putDiagAddr(id[4:20], local.Addr(), family)
	putDiagAddr(id[20:36], remote.Addr(), family)
	ne.PutUint32(id[40:], ^uint32(0)) // INET_DIAG_NOCOOKIE
	ne.PutUint32(id[44:], ^uint32(0))
	return b
}

func putDiagAddr(b []byte, a netip.Addr, family uint8) {
	if !a.IsValid() {
		return
	}
	if family == syscall.AF_INET {
		v4 := a.Unmap().As4()
		copy(b, v4[:])
		return
	}
	v6 := a.As16()
	copy(b, v6[:])
}

// diagQuery sends one request and collects the sockets of the answer: one
// message, or for a dump every message up to NLMSG_DONE.
func diagQuery(req []byte, dump bool) ([]diagSocket, error) {
	fd, err := syscall.Socket(syscall.AF_NETLINK, syscall.SOCK_DGRAM|syscall.SOCK_CLOEXEC, netlinkSockDiag)
	if err != nil {
		return nil, fmt.Errorf("sock_diag socket: %w", err)
	}
	defer syscall.Close(fd)
	tv := syscall.NsecToTimeval(int64(diagTimeout))
	if err := syscall.SetsockoptTimeval(fd, syscall.SOL_SOCKET, syscall.SO_RCVTIMEO, &tv); err != nil {
		return nil, fmt.Errorf("sock_diag socket: %w", err)
	}
	if err := syscall.Sendto(fd, req, 0, &syscall.SockaddrNetlink{Family: syscall.AF_NETLINK}); err != nil {
		return nil, fmt.Errorf("sock_diag request: %w", err)
	}
	var out []diagSocket
	buf := make([]byte, 32<<10)
	for {
		n, _, err := syscall.Recvfrom(fd, buf, 0)
		if err != nil {
			return nil, fmt.Errorf("sock_diag answer: %w", err)
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return nil, fmt.Errorf("sock_diag answer: %w", err)
		}
		for _, m := range msgs {
			switch m.Header.Type {
			case syscall.NLMSG_DONE:
				return out, nil
			case syscall.NLMSG_ERROR:
				if len(m.Data) < 4 {
					return nil, errors.New("sock_diag answer: short error message")
				}
				if errno := -int32(binary.NativeEndian.Uint32(m.Data)); errno != 0 {
					return nil, syscall.Errno(errno)
				}
				return out, nil
			case sockDiagByFamily:
				if s, ok := parseDiagMsg(m.Data); ok {
					out = append(out, s)
				}
			}
		}
		if !dump {
			return out, nil
		}
	}
}

// parseDiagMsg decodes a struct inet_diag_msg.
func parseDiagMsg(m []byte) (diagSocket, bool) {
	if len(m) < diagMsgLen {
		return diagSocket{}, false
	}
	ne := binary.NativeEndian
	family := m[0]
	id := m[4:52]
	addr := func(b []byte) netip.Addr {
		if family == syscall.AF_INET {
			return netip.AddrFrom4([4]byte(b[:4]))
		}
		return netip.AddrFrom16([16]byte(b[:16])).Unmap()
	}
	return diagSocket{
		local:  netip.AddrPortFrom(addr(id[4:20]), binary.BigEndian.Uint16(id[0:])),
		remote: netip.AddrPortFrom(addr(id[20:36]), binary.BigEndian.Uint16(id[2:])),
		state:  m[1],
		uid:    int(ne.Uint32(m[64:])),
		inode:  uint64(ne.Uint32(m[68:])),
	}, true
}
