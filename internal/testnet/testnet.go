// Package testnet picks addresses for tests that must listen on the same
// address more than once (a server restarted in a test, a broker its
// clients reconnect to).
package testnet

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"testing"
)

// ephemeral is the kernel's range of ports for port 0 and outgoing
// connections, read from procfs (Linux's default when it cannot be).
func ephemeral() (lo, hi int) {
	lo, hi = 32768, 60999
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		var l, h int
		if n, _ := fmt.Sscan(string(b), &l, &h); n == 2 && l > 0 && h >= l {
			lo, hi = l, h
		}
	}
	return lo, hi
}

// StableAddr returns 127.0.0.1:PORT with a port that is free now and that
// the kernel does not hand out by itself: outside its ephemeral range, so
// that no port-0 listener and no outgoing connection of another process
// takes it between two listens of the test (a port from 127.0.0.1:0 can be
// taken by anyone once it is closed).
func StableAddr(t testing.TB) string {
	t.Helper()
	lo, hi := ephemeral()
	// The ports above 10000 that are not ephemeral: below the range, or
	// above it when it leaves room there.
	var candidates [][2]int
	if lo > 10000 {
		candidates = append(candidates, [2]int{10000, lo - 1})
	}
	if hi < 65000 {
		candidates = append(candidates, [2]int{hi + 1, 65535})
	}
	if len(candidates) == 0 {
		candidates = [][2]int{{1024, 65535}}
	}
	for range 200 {
		r := candidates[rand.IntN(len(candidates))]
		addr := fmt.Sprintf("127.0.0.1:%d", r[0]+rand.IntN(r[1]-r[0]+1))
		l, err := net.Listen("tcp", addr)
		if err != nil {
			continue
		}
		l.Close()
		return addr
	}
	t.Fatal("no free port outside the ephemeral range")
	return ""
}
