package polyfn

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"os"
	"runtime"
	"sort"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/polyfn/polyfn/api/baetyl"
)

// gRPC metadata of call mode (docs/protocols.md).
const (
	// contextMetadataKey carries the context FunctionMessage has no field
	// for: a JSON object {trigger, deadline, http}.
	contextMetadataKey = "polyfn-context-bin"
	// responseMetadataKey is the response header that carries the status and
	// headers of an explicit HTTP response: a JSON object {status, headers}.
	responseMetadataKey = "polyfn-response-bin"
)

// maxDetailsBytes bounds the error details of a failed call; longer ones are
// cut and end with " [truncated]".
const maxDetailsBytes = 2048

// serveCall runs call mode: a baetyl.Function/Call server for the functions
// of the config file at path.
func serveCall(ctx context.Context, h Handler, path string, sink logSink) error {
	cfg, err := loadCallConfig(path)
	if err != nil {
		return err
	}
	if cfg.address == "" {
		return usagef("no address to listen on: set %s (127.0.0.1:PORT or unix:/path) or server.address in %s", addressEnv, path)
	}
	as := ""
	if cfg.name != "" {
		as = " as " + cfg.name
	}
	functions := make([]string, 0, len(cfg.functions))
	for name := range cfg.functions {
		functions = append(functions, name)
	}
	sort.Strings(functions)
	runtimeLog(sink, slog.LevelInfo, "", "polyfn go runtime %s starting in call mode%s, functions %s (%s)",
		version, as, strings.Join(functions, ", "), runtime.Version())
	lis, shown, err := listen(cfg.address)
	if err != nil {
		return fmt.Errorf("cannot listen on %s: %w", cfg.address, err)
	}
	srv := grpc.NewServer(grpc.MaxRecvMsgSize(maxMessageSize), grpc.MaxSendMsgSize(maxMessageSize),
		// Fixed flow-control windows, as large as the dynamic ones may grow:
		// with them set, gRPC sends no BDP-estimation pings.
		grpc.InitialWindowSize(windowSize), grpc.InitialConnWindowSize(windowSize))
	calls := &callServer{h: h, functions: cfg.functions, sink: sink}
	baetyl.RegisterFunctionServer(srv, calls)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	runtimeLog(sink, slog.LevelInfo, "", "listening on %s", shown)

	select {
	case <-ctx.Done():
	case err := <-served:
		return fmt.Errorf("serving on %s: %w", shown, err)
	}
	runtimeLog(sink, slog.LevelInfo, "", "stopping: no new calls, up to %s for %d in flight", cfg.grace, calls.running.Load())
	stopped := make(chan struct{})
	go func() {
		srv.GracefulStop()
		close(stopped)
	}()
	grace := time.NewTimer(cfg.grace)
	defer grace.Stop()
	select {
	case <-stopped:
	case <-grace.C:
		runtimeLog(sink, slog.LevelWarn, "", "%d invocation(s) still running after the grace period: cancelling them and exiting", calls.running.Load())
		srv.Stop() // cancels the calls' contexts; does not wait for their handlers
		<-stopped
	}
	runtimeLog(sink, slog.LevelInfo, "", "stopped")
	return nil
}

// listen listens on 127.0.0.1:PORT (any TCP address) or unix:/path; it
// returns the listener and the address to report.
func listen(address string) (net.Listener, string, error) {
	if path, ok := strings.CutPrefix(address, "unix:"); ok {
		if strings.HasPrefix(path, "//") {
			path = path[2:] // unix:///abs/path
		}
		if fi, err := os.Lstat(path); err == nil && fi.Mode()&os.ModeSocket != 0 {
			_ = os.Remove(path) // a stale socket of an earlier worker
		}
		lis, err := net.Listen("unix", path) // removed again when closed
		return lis, "unix:" + path, err
	}
	lis, err := net.Listen("tcp", address)
	if err != nil {
		return nil, "", err
	}
	return lis, lis.Addr().String(), nil
}

// callServer is the baetyl.Function service.
type callServer struct {
	baetyl.UnimplementedFunctionServer
	h         Handler
	functions map[string]bool
	sink      logSink
	running   atomic.Int64
}

// hostContext is the JSON of the polyfn-context-bin metadata.
type hostContext struct {
	Trigger  string       `json:"trigger"`
	Deadline string       `json:"deadline"`
	HTTP     *HTTPRequest `json:"http"`
	// ScheduledTime is a timer invocation's tick.
	ScheduledTime string `json:"scheduledTime"`
}

// Call runs one invocation. The reply is the request with Payload replaced;
// a failure is status UNKNOWN with "[UserCodeInvoke] Type: message",
// "[UserCodeReturn] Type: message" or "function not found: name".
func (s *callServer) Call(ctx context.Context, req *baetyl.FunctionMessage) (*baetyl.FunctionMessage, error) {
	if !s.functions[req.FunctionName] {
		return nil, status.Error(codes.Unknown, truncateDetails("function not found: "+req.FunctionName))
	}
	s.running.Add(1)
	defer s.running.Add(-1)
	info := &Context{
		FunctionName:     req.FunctionName,
		InvocationID:     req.FunctionInvokeID,
		Trigger:          TriggerInvoke,
		MessageQOS:       req.QOS,
		MessageTopic:     req.Topic,
		MessageID:        req.ID,
		MessageTimestamp: req.Timestamp,
	}
	s.hostContext(ctx, info)
	if d, ok := ctx.Deadline(); ok {
		info.Deadline = d
	} else if !info.Deadline.IsZero() {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, info.Deadline)
		defer cancel()
	}
	o := invoke(withInvocation(ctx, info, s.sink), s.h, NewEvent(req.Payload))
	if o.fail != nil {
		s.sink.emit(logRecord{level: slog.LevelError, msg: o.fail.logText(), function: info.FunctionName, invocationID: info.InvocationID})
		return nil, status.Error(codes.Unknown, truncateDetails(o.fail.details()))
	}
	if o.http != nil {
		meta, err := json.Marshal(o.http)
		if err == nil {
			err = grpc.SetHeader(ctx, metadata.Pairs(responseMetadataKey, string(meta)))
		}
		if err != nil {
			return nil, status.Error(codes.Unknown, truncateDetails(fmt.Sprintf("[%s] InvalidResponse: cannot send the response's status and headers: %v", kindReturn, err)))
		}
	}
	req.Payload = o.payload
	return req, nil
}

// hostContext merges the polyfn-context-bin metadata into info.
func (s *callServer) hostContext(ctx context.Context, info *Context) {
	values := metadata.ValueFromIncomingContext(ctx, contextMetadataKey)
	if len(values) == 0 {
		return
	}
	var hc hostContext
	if err := json.Unmarshal([]byte(values[0]), &hc); err != nil {
		runtimeLog(s.sink, slog.LevelWarn, info.FunctionName, "ignoring %s metadata: not a JSON object: %v", contextMetadataKey, err)
		return
	}
	if hc.Trigger != "" {
		info.Trigger = hc.Trigger
	}
	if hc.Deadline != "" {
		if d, err := time.Parse(time.RFC3339Nano, hc.Deadline); err == nil {
			info.Deadline = d
		}
	}
	info.HTTP = hc.HTTP
	if hc.ScheduledTime != "" {
		if at, err := time.Parse(time.RFC3339Nano, hc.ScheduledTime); err == nil {
			info.ScheduledTime = at
		}
	}
}

// truncateDetails cuts gRPC status details to a size every client accepts
// in a trailer.
func truncateDetails(text string) string {
	if len(text) <= maxDetailsBytes {
		return text
	}
	cut := maxDetailsBytes
	for cut > 0 && !utf8.RuneStart(text[cut]) {
		cut--
	}
	return text[:cut] + " [truncated]"
}
