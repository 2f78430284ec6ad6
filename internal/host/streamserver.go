package host

import (
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/polyfn/polyfn/internal/peer"
	"github.com/polyfn/polyfn/internal/stream"
)

// A stream server on a chosen address (stream.listen set) is shared by the
// hosts of one process that ask for the same address: a reload brings its
// new host up while the old one drains, and both could not listen on one
// fixed port. The last host to let go closes it. A server on a port the
// kernel chooses (the default) belongs to its host alone.
var sharedStreams struct {
	mu sync.Mutex
	m  map[string]*sharedStream
}

type sharedStream struct {
	srv  *stream.Server
	refs int
	// refusals counts into the newest host's metrics.
	refusals *latestCounter
}

// latestCounter forwards refusals to the counter set last.
type latestCounter struct {
	c atomic.Pointer[peer.RefusalCounter]
}

func (l *latestCounter) WorkerConnectionRefused(protocol, reason string) {
	if c := l.c.Load(); c != nil {
		(*c).WorkerConnectionRefused(protocol, reason)
	}
}

// openStream gives the host its stream server; closeStream lets it go.
func (h *Host) openStream(log *slog.Logger) error {
	spec := h.cfg.Stream.Listen
	if spec == "" {
		srv, err := stream.NewServer(log, h.metrics)
		h.stream = srv
		return err
	}
	sharedStreams.mu.Lock()
	defer sharedStreams.mu.Unlock()
	s := sharedStreams.m[spec]
	if s == nil {
		s = &sharedStream{refusals: &latestCounter{}}
		srv, err := stream.NewServerOn(spec, log, s.refusals)
		if err != nil {
			return err
		}
		s.srv = srv
		if sharedStreams.m == nil {
			sharedStreams.m = map[string]*sharedStream{}
		}
		sharedStreams.m[spec] = s
	}
	var c peer.RefusalCounter = h.metrics
	s.refusals.c.Store(&c)
	s.refs++
	h.stream = s.srv
	return nil
}

func (h *Host) closeStream() {
	if h.stream == nil {
		return
	}
	spec := h.cfg.Stream.Listen
	if spec == "" {
		h.stream.Close()
		return
	}
	sharedStreams.mu.Lock()
	defer sharedStreams.mu.Unlock()
	if s := sharedStreams.m[spec]; s != nil && s.srv == h.stream {
		if s.refs--; s.refs == 0 {
			delete(sharedStreams.m, spec)
			s.srv.Close()
		}
	}
}

// StreamAddr returns the address stream workers dial, empty when the host
// has no stream server.
func (h *Host) StreamAddr() string {
	if h.stream == nil {
		return ""
	}
	return h.stream.Addr()
}
