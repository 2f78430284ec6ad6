// Package stream is the host side of the stream protocol (the Azure
// Functions language-worker contract): a gRPC server on loopback that
// workers dial into, one bidirectional EventStream per worker, and the
// instances built on it.
package stream

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	grpcpeer "google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	rpc "github.com/polyfn/polyfn/api/azure"
	"github.com/polyfn/polyfn/internal/peer"
)

// MaxMessageSize is the largest message either side may send.
const MaxMessageSize = 2147483647

// WindowSize is the gRPC flow-control window of each stream and of each
// connection, both ways: the largest gRPC's own window estimation reaches.
const WindowSize = 16 << 20

// Server accepts worker streams. Each stream must open with StartStream
// carrying a worker id the host issued with expect, and come from the
// process the host started with that id or one of its descendants
// (internal/peer): any other process, even one that read the id, is
// refused, and the real worker can still connect.
type Server struct {
	rpc.UnimplementedFunctionRpcServer
	log      *slog.Logger
	lis      net.Listener
	grpc     *grpc.Server
	refusals peer.RefusalCounter

	mu       sync.Mutex
	expected map[string]*expectation
}

// ReasonUnknownID is the refusal reason of a StartStream whose worker id the
// host is not waiting for (peer.ReasonNotWorker and peer.ReasonUnidentified
// are the others).
const ReasonUnknownID = "unknown_worker_id"

// ReasonNoStartStream counts streams that did not send StartStream within
// StartStreamTimeout.
const ReasonNoStartStream = "no_start_stream"

// StartStreamTimeout bounds the wait for a stream's first message: any local
// process may open streams, and one that never speaks must not hold a
// goroutine and its buffers for ever. A worker sends StartStream as soon as
// its stream is open.
var StartStreamTimeout = 10 * time.Second

var errNoStartStream = errors.New("no StartStream within the start-stream timeout")

// recvFirst receives the stream's first message, or gives up after
// timeout. Returning from the handler ends the stream, which ends the Recv
// left behind.
func recvFirst(st rpc.FunctionRpc_EventStreamServer, timeout time.Duration) (*rpc.StreamingMessage, error) {
	type result struct {
		m   *rpc.StreamingMessage
		err error
	}
	ch := make(chan result, 1)
	go func() {
		m, err := st.Recv()
		ch <- result{m, err}
	}()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case r := <-ch:
		return r.m, r.err
	case <-t.C:
		return nil, errNoStartStream
	}
}

// NewServer listens on 127.0.0.1 on a free port and serves in the
// background. refusals, if not nil, counts the streams it refuses.
func NewServer(log *slog.Logger, refusals peer.RefusalCounter) (*Server, error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("stream protocol listener: %w", err)
	}
	return serve(lis, log, refusals), nil
}

// serve serves the FunctionRpc service on lis in the background.
func serve(lis net.Listener, log *slog.Logger, refusals peer.RefusalCounter) *Server {
	s := &Server{log: log, lis: lis, refusals: refusals, expected: map[string]*expectation{}}
	s.grpc = grpc.NewServer(grpc.MaxRecvMsgSize(MaxMessageSize), grpc.MaxSendMsgSize(MaxMessageSize),
		// Fixed flow-control windows, as large as the dynamic ones may grow:
		// with them set, gRPC sends no BDP-estimation pings (a ping and its
		// acknowledgement every round trip, under load) and fewer window
		// updates.
		grpc.InitialWindowSize(WindowSize), grpc.InitialConnWindowSize(WindowSize))
	rpc.RegisterFunctionRpcServer(s.grpc, s)
	go func() { _ = s.grpc.Serve(lis) }()
	return s
}

// Addr returns the host:port workers dial: the listener's address, loopback
// when it listens on every address.
func (s *Server) Addr() string { return dialAddr(s.lis.Addr()) }

// Close stops the server and ends every stream.
func (s *Server) Close() { s.grpc.Stop() }

// expectation is a worker the host is starting that has not connected yet.
type expectation struct {
	// conn receives the worker's stream once it is accepted.
	conn chan *Conn
	// known is closed once the worker's pid is set (started), or the
	// expectation dropped (forget) with pid 0. A stream that presents the
	// id before then waits for it.
	known chan struct{}
	once  sync.Once
	pid   int
	// name and instance tag log records.
	name, instance string
}

// started records the worker's process id: streams presenting its id must
// come from that process or its descendants.
func (e *expectation) started(pid int) {
	e.once.Do(func() { e.pid = pid; close(e.known) })
}

// expect registers a worker id, for the worker of instance serving name.
// The caller must call started once the process runs and forget when the
// start is over.
func (s *Server) expect(workerID, name, instance string) *expectation {
	e := &expectation{conn: make(chan *Conn, 1), known: make(chan struct{}), name: name, instance: instance}
	s.mu.Lock()
	s.expected[workerID] = e
	s.mu.Unlock()
	return e
}

func (s *Server) forget(workerID string, e *expectation) {
	s.mu.Lock()
	if s.expected[workerID] == e {
		delete(s.expected, workerID)
	}
	s.mu.Unlock()
	e.once.Do(func() { close(e.known) })
}

// errNotStartStream, errUnknownWorker and errNotWorker are what a
// misbehaving worker or an impostor is told.
var (
	errNotStartStream = status.Error(codes.InvalidArgument, "the first message on a stream must be StartStream")
	errUnknownWorker  = status.Error(codes.PermissionDenied, "unknown worker id")
	errNotWorker      = status.Error(codes.PermissionDenied, "this connection does not come from the worker process the host started with that worker id")
)

// EventStream implements the FunctionRpc service.
func (s *Server) EventStream(st rpc.FunctionRpc_EventStreamServer) error {
	first, err := recvFirst(st, StartStreamTimeout)
	if err != nil {
		if errors.Is(err, errNoStartStream) {
			s.refused(ReasonNoStartStream)
			args := []any{"timeout", StartStreamTimeout}
			if client, server, aerr := streamAddrs(st); aerr == nil {
				p := peer.TCPClientProcess(client, server)
				args = append(args, "pid", p.Pid, "uid", p.UID)
			}
			s.log.Warn("stream refused: no StartStream in time", args...)
			return status.Error(codes.DeadlineExceeded, err.Error())
		}
		return err
	}
	ss := first.GetStartStream()
	if ss == nil {
		s.log.Warn("stream refused: first message is not StartStream", "message", fmt.Sprintf("%T", first.GetContent()))
		return errNotStartStream
	}
	s.mu.Lock()
	e := s.expected[ss.WorkerId]
	s.mu.Unlock()
	if e != nil {
		// The worker's pid is set right after it is started: a stream that
		// comes first waits for it.
		select {
		case <-e.known:
		default:
			s.log.Debug("stream waits for its worker's process id", "function", e.name, "instance", e.instance)
		}
		select {
		case <-e.known:
		case <-st.Context().Done():
			return st.Context().Err()
		}
	}
	if e == nil || e.pid == 0 {
		s.refuseUnknown(st, ss.WorkerId)
		return errUnknownWorker
	}
	client, server, err := streamAddrs(st)
	if err == nil {
		_, err = peer.TCPClient(e.pid, client, server)
	}
	if err != nil {
		reason := peer.ReasonUnidentified
		args := []any{"function", e.name, "instance", e.instance, "worker_pid", e.pid, "error", err}
		var r *peer.Refusal
		if errors.As(err, &r) {
			reason = r.Reason
			args = append([]any{"function", e.name, "instance", e.instance, "error", err}, r.LogArgs()...)
		}
		s.refused(reason)
		s.log.Warn("stream refused: the connection is not the worker's", args...)
		return errNotWorker // the expectation stays: the real worker can still connect
	}
	s.mu.Lock()
	taken := s.expected[ss.WorkerId] != e
	delete(s.expected, ss.WorkerId)
	s.mu.Unlock()
	if taken {
		s.refuseUnknown(st, ss.WorkerId) // a second stream of the same worker
		return errUnknownWorker
	}
	c := newConn(st, ss.WorkerId)
	e.conn <- c
	err = c.serve()
	if errors.Is(err, errClosedByHost) {
		return nil
	}
	return err
}

// refuseUnknown logs and counts a stream whose worker id is not expected,
// with the process it comes from when it can be found.
func (s *Server) refuseUnknown(st rpc.FunctionRpc_EventStreamServer, workerID string) {
	s.refused(ReasonUnknownID)
	args := []any{"worker_id", workerID}
	if client, server, err := streamAddrs(st); err == nil {
		p := peer.TCPClientProcess(client, server)
		args = append(args, "pid", p.Pid, "uid", p.UID)
	}
	s.log.Warn("stream refused: unknown worker id", args...)
}

func (s *Server) refused(reason string) {
	if s.refusals != nil {
		s.refusals.WorkerConnectionRefused("stream", reason)
	}
}

// streamAddrs returns the client's and the server's address of a stream's
// connection.
func streamAddrs(st rpc.FunctionRpc_EventStreamServer) (client, server netip.AddrPort, err error) {
	p, ok := grpcpeer.FromContext(st.Context())
	if !ok || p.Addr == nil || p.LocalAddr == nil {
		return client, server, errors.New("the stream's connection has no addresses")
	}
	if client, err = netip.ParseAddrPort(p.Addr.String()); err != nil {
		return client, server, err
	}
	server, err = netip.ParseAddrPort(p.LocalAddr.String())
	return client, server, err
}
