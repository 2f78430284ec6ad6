package stream

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"syscall"

	"github.com/polyfn/polyfn/internal/config"
	"github.com/polyfn/polyfn/internal/peer"
)

// ErrListenBusy is returned (wrapped) when stream.listen's address, or every
// port of its range, is in use.
var ErrListenBusy = errors.New("address in use")

// Listen opens the listener stream.listen names (empty: the default,
// loopback on a port the kernel chooses). For a range it takes the first
// free port from LO up.
func Listen(spec string) (net.Listener, error) {
	l, err := config.ParseStreamListen(spec)
	if err != nil {
		return nil, fmt.Errorf("stream.listen %q: %w", spec, err)
	}
	if spec == "" {
		spec = config.DefaultStreamListen
	}
	var last error
	for p := int(l.Lo); p <= int(l.Hi); p++ {
		lis, err := net.Listen("tcp", netip.AddrPortFrom(l.Addr, uint16(p)).String())
		if err == nil {
			return lis, nil
		}
		if !errors.Is(err, syscall.EADDRINUSE) {
			return nil, fmt.Errorf("stream.listen %s: %w", spec, err)
		}
		last = err
	}
	if l.Lo == l.Hi {
		return nil, fmt.Errorf("stream.listen %s: %w (%w)", spec, ErrListenBusy, last)
	}
	return nil, fmt.Errorf("stream.listen %s: every port from %d to %d is in use: %w (last: %w)", spec, l.Lo, l.Hi, ErrListenBusy, last)
}

// NewServerOn is NewServer on the listener stream.listen names.
func NewServerOn(spec string, log *slog.Logger, refusals peer.RefusalCounter) (*Server, error) {
	lis, err := Listen(spec)
	if err != nil {
		return nil, err
	}
	return serve(lis, log, refusals), nil
}

// dialAddr is the address workers are told to dial for a listener's
// address: the same, but loopback for an unspecified one (0.0.0.0, ::).
func dialAddr(a net.Addr) string {
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil || !ap.Addr().IsUnspecified() {
		return a.String()
	}
	lo := netip.IPv6Loopback()
	if ap.Addr().Unmap().Is4() {
		lo = netip.AddrFrom4([4]byte{127, 0, 0, 1})
	}
	return net.JoinHostPort(lo.String(), strconv.Itoa(int(ap.Port())))
}
