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
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	rpc "github.com/polyfn/polyfn/api/azure"
)

// MaxMessageSize is the largest message either side may send.
const MaxMessageSize = 2147483647

// WindowSize is the gRPC flow-control window of each stream and of each
// connection, both ways: the largest gRPC's own window estimation reaches.
const WindowSize = 16 << 20

// Server accepts worker streams. Each stream must open with StartStream
// carrying a worker id the host issued with Expect.
type Server struct {
	rpc.UnimplementedFunctionRpcServer
	log  *slog.Logger
	lis  net.Listener
	grpc *grpc.Server

	mu       sync.Mutex
	expected map[string]chan *Conn
}

// NewServer listens on 127.0.0.1 on a free port and serves in the background.
func NewServer(log *slog.Logger) (*Server, error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("stream protocol listener: %w", err)
	}
	s := &Server{log: log, lis: lis, expected: map[string]chan *Conn{}}
	s.grpc = grpc.NewServer(grpc.MaxRecvMsgSize(MaxMessageSize), grpc.MaxSendMsgSize(MaxMessageSize),
		// Fixed flow-control windows, as large as the dynamic ones may grow:
		// with them set, gRPC sends no BDP-estimation pings (a ping and its
		// acknowledgement every round trip, under load) and fewer window
		// updates.
		grpc.InitialWindowSize(WindowSize), grpc.InitialConnWindowSize(WindowSize))
	rpc.RegisterFunctionRpcServer(s.grpc, s)
	go func() { _ = s.grpc.Serve(lis) }()
	return s, nil
}

// Addr returns the host:port workers dial.
func (s *Server) Addr() string { return s.lis.Addr().String() }

// Close stops the server and ends every stream.
func (s *Server) Close() { s.grpc.Stop() }

// expect registers a worker id; the worker's stream is delivered on the
// returned channel. forget must be called when the start is over.
func (s *Server) expect(workerID string) <-chan *Conn {
	ch := make(chan *Conn, 1)
	s.mu.Lock()
	s.expected[workerID] = ch
	s.mu.Unlock()
	return ch
}

func (s *Server) forget(workerID string) {
	s.mu.Lock()
	delete(s.expected, workerID)
	s.mu.Unlock()
}

// errNotStartStream and errUnknownWorker are what a misbehaving worker is told.
var (
	errNotStartStream = status.Error(codes.InvalidArgument, "the first message on a stream must be StartStream")
	errUnknownWorker  = status.Error(codes.PermissionDenied, "unknown worker id")
)

// EventStream implements the FunctionRpc service.
func (s *Server) EventStream(st rpc.FunctionRpc_EventStreamServer) error {
	first, err := st.Recv()
	if err != nil {
		return err
	}
	ss := first.GetStartStream()
	if ss == nil {
		s.log.Warn("stream refused: first message is not StartStream", "message", fmt.Sprintf("%T", first.GetContent()))
		return errNotStartStream
	}
	s.mu.Lock()
	ch, ok := s.expected[ss.WorkerId]
	delete(s.expected, ss.WorkerId)
	s.mu.Unlock()
	if !ok {
		s.log.Warn("stream refused: unknown worker id", "worker_id", ss.WorkerId)
		return errUnknownWorker
	}
	c := newConn(st, ss.WorkerId)
	ch <- c
	err = c.serve()
	if errors.Is(err, errClosedByHost) {
		return nil
	}
	return err
}
