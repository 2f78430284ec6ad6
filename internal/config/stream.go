package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// DefaultStreamListen is where the stream protocol's gRPC server listens
// when stream.listen is not set: loopback, on a port the kernel chooses.
const DefaultStreamListen = "127.0.0.1:0"

// Stream configures the stream protocol's gRPC server, the one every stream
// worker of the host dials. A reload that keeps Listen shares the running
// server; one that changes it opens a new server, and the old one closes
// once the old configuration has drained.
type Stream struct {
	// Listen is "HOST:PORT" or "HOST:LO-HI" (the first free port of the
	// range is taken). HOST is an IP address or "localhost". Empty means
	// DefaultStreamListen.
	Listen string `yaml:"listen"`
	// AllowRemote must be true for a Listen whose HOST is not a loopback
	// address (docs/security.md, "The stream server's address"). False
	// means only loopback addresses are accepted.
	AllowRemote bool `yaml:"allow_remote"`
}

// StreamListen is a parsed stream.listen: the ports Lo to Hi on Addr, Lo
// == Hi for a single port, 0 for one the kernel chooses.
type StreamListen struct {
	Addr   netip.Addr
	Lo, Hi uint16
}

// Loopback reports whether the address is a loopback address.
func (l StreamListen) Loopback() bool { return l.Addr.IsLoopback() }

// ParseStreamListen parses a stream.listen value; empty means
// DefaultStreamListen.
func ParseStreamListen(s string) (StreamListen, error) {
	if s == "" {
		s = DefaultStreamListen
	}
	host, ports, err := net.SplitHostPort(s)
	if err != nil {
		return StreamListen{}, errors.New("want HOST:PORT or HOST:LO-HI")
	}
	var l StreamListen
	if host == "localhost" {
		l.Addr = netip.AddrFrom4([4]byte{127, 0, 0, 1})
	} else if l.Addr, err = netip.ParseAddr(host); err != nil || l.Addr.Zone() != "" {
		return StreamListen{}, fmt.Errorf("host %q is not an IP address or localhost", host)
	}
	l.Addr = l.Addr.Unmap()
	lo, hi, isRange := strings.Cut(ports, "-")
	if !isRange {
		hi = lo
	}
	a, err1 := strconv.ParseUint(lo, 10, 16)
	b, err2 := strconv.ParseUint(hi, 10, 16)
	switch {
	case err1 != nil || err2 != nil:
		return StreamListen{}, fmt.Errorf("port %q is not a number from 0 to 65535 or a range LO-HI", ports)
	case isRange && (a == 0 || b < a):
		return StreamListen{}, fmt.Errorf("port range %q: want 0 < LO <= HI", ports)
	}
	l.Lo, l.Hi = uint16(a), uint16(b)
	return l, nil
}

// validateStream checks the stream section.
func validateStream(s Stream, d *decoder) {
	l, err := ParseStreamListen(s.Listen)
	if err != nil {
		d.errorf(d.at("stream.listen"), "stream.listen", "invalid address %q: %v, such as 127.0.0.1:7000-7099", s.Listen, err)
		return
	}
	if !l.Loopback() && !s.AllowRemote {
		d.errorf(d.at("stream.listen"), "stream.listen",
			"%s is not a loopback address: set stream.allow_remote: true to listen on it (docs/security.md, \"The stream server's address\")", l.Addr)
	}
}
