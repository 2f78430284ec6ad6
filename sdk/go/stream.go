package polyfn

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	rpc "github.com/polyfn/polyfn/api/azure"
)

const (
	// eventBinding is the input binding that carries the payload.
	eventBinding = "event"
	// runtimeCategory is the RpcLog category of the SDK's messages that
	// name no function.
	runtimeCategory = "polyfn_runtime"
	// closeTimeout bounds each step of closing the stream: flushing what is
	// queued, and waiting for the host to end the call.
	closeTimeout = 2 * time.Second
)

// capabilities are what the worker tells the host in WorkerInitResponse.
var capabilities = map[string]string{
	"HandlesInvocationCancelMessage": "true",
	"HandlesWorkerTerminateMessage":  "true",
	"polyfn":                         "1",
}

// serveStream runs stream mode: it dials the host, opens the EventStream and
// serves it until ctx is done, the host sends WorkerTerminate, or the stream
// breaks.
func serveStream(ctx context.Context, h Handler, o streamOptions, stderr logSink) error {
	conn, err := grpc.NewClient("passthrough:///"+o.target(),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithNoProxy(), // the host is local: never through a proxy from the environment
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(o.maxMessage), grpc.MaxCallSendMsgSize(o.maxMessage)),
	)
	if err != nil {
		return fmt.Errorf("cannot connect to the host at %s: %w", o.target(), err)
	}
	defer conn.Close()
	streamCtx, cancelStream := context.WithCancel(context.Background())
	defer cancelStream()
	stream, err := rpc.NewFunctionRpcClient(conn).EventStream(streamCtx)
	if err != nil {
		return fmt.Errorf("cannot open the stream to the host at %s: %w", o.target(), err)
	}
	w := newStreamWorker(ctx, h, stderr)
	w.out.push(&rpc.StreamingMessage{RequestId: o.requestID, Content: &rpc.StreamingMessage_StartStream{
		StartStream: &rpc.StartStream{WorkerId: o.workerID}}})
	go w.writeLoop(stream)
	go w.readLoop(stream)

	select {
	case <-ctx.Done():
		w.requestStop(defaultGrace)
	case <-w.stopRequested:
	case <-w.broken:
		return w.lost(o)
	}
	if err := w.drain(); err != nil {
		return w.lost(o)
	}
	// Everything queued goes out, then our side of the stream is closed.
	w.closing.Store(true)
	w.out.close()
	if !waitFor(w.writerDone, closeTimeout) || w.brokenErr() != nil {
		return w.lost(o)
	}
	w.logs.live.Store(false)
	// Let the host end the call, so that it sees a clean end, not a cancel.
	waitFor(w.readerDone, closeTimeout)
	runtimeLog(stderr, slog.LevelInfo, "", "stopped")
	return nil
}

// streamWorker is one connection to the host.
type streamWorker struct {
	h    Handler
	base context.Context // parent of the invocations' contexts: Serve's, without its cancellation
	out  *outbox
	logs *streamSink

	stopRequested chan struct{} // closed by requestStop
	writerDone    chan struct{}
	readerDone    chan struct{}
	closing       atomic.Bool // our side of the stream is closing: the host's EOF is expected

	brokenOnce sync.Once
	broken     chan struct{}
	brokenWhy  atomic.Pointer[error]

	mu        sync.Mutex
	functions map[string]string            // function id → function name
	inflight  map[string]*streamInvocation // by invocation id
	running   int                          // invocations started and not answered yet
	stopping  bool                         // no new invocations
	grace     time.Duration                // for those in flight, once stopping
	drained   chan struct{}                // closed when stopping and nothing runs
}

func newStreamWorker(ctx context.Context, h Handler, stderr logSink) *streamWorker {
	out := newOutbox()
	return &streamWorker{
		h:             h,
		base:          context.WithoutCancel(ctx),
		out:           out,
		logs:          &streamSink{out: out, fallback: stderr},
		stopRequested: make(chan struct{}),
		writerDone:    make(chan struct{}),
		readerDone:    make(chan struct{}),
		broken:        make(chan struct{}),
		functions:     map[string]string{},
		inflight:      map[string]*streamInvocation{},
	}
}

// fail records why the stream broke (the first reason wins).
func (w *streamWorker) fail(err error) {
	w.brokenOnce.Do(func() {
		w.brokenWhy.Store(&err)
		close(w.broken)
	})
}

func (w *streamWorker) brokenErr() error {
	if p := w.brokenWhy.Load(); p != nil {
		return *p
	}
	return nil
}

// lost ends a broken stream: queued records go to stderr, and the error
// says why.
func (w *streamWorker) lost(o streamOptions) error {
	w.logs.live.Store(false)
	w.out.close()
	w.spill(w.out.drain())
	why := w.brokenErr()
	if why == nil {
		why = errors.New("the stream did not close in time")
	}
	return fmt.Errorf("lost the stream to the host at %s: %w", o.target(), why)
}

// requestStop stops taking invocations; those in flight get grace. Only the
// first call counts.
func (w *streamWorker) requestStop(grace time.Duration) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopping {
		return
	}
	w.stopping = true
	w.grace = grace
	close(w.stopRequested)
}

// drain waits up to the grace period for the invocations in flight; after
// it, their contexts are cancelled. It fails when the stream breaks.
func (w *streamWorker) drain() error {
	w.mu.Lock()
	running, grace := w.running, w.grace
	drained := make(chan struct{})
	if running == 0 {
		close(drained)
	} else {
		w.drained = drained
	}
	w.mu.Unlock()
	runtimeLog(w.logs, slog.LevelInfo, "", "stopping: no new invocations, up to %s for %d in flight", grace, running)
	timer := time.NewTimer(grace)
	defer timer.Stop()
	select {
	case <-drained:
		return nil
	case <-w.broken:
		return w.brokenErr()
	case <-timer.C:
	}
	w.mu.Lock()
	runtimeLog(w.logs, slog.LevelWarn, "", "%d invocation(s) still running after the grace period: cancelling them and exiting", w.running)
	for _, inv := range w.inflight {
		inv.cancel()
	}
	w.mu.Unlock()
	return nil
}

// send queues a message for the host; false when the stream is closed.
func (w *streamWorker) send(m *rpc.StreamingMessage) bool { return w.out.push(m) }

// writeLoop is the stream's only writer: it sends what is queued, in order,
// and closes our side of the stream once the outbox is closed and empty.
func (w *streamWorker) writeLoop(stream rpc.FunctionRpc_EventStreamClient) {
	defer close(w.writerDone)
	for {
		items, closed := w.out.take()
		for i, m := range items {
			if err := stream.Send(m); err != nil {
				if errors.Is(err, io.EOF) {
					// The stream has ended: the reader learns how, and decides
					// whether that is a failure (a host ending it after
					// WorkerTerminate is not).
					<-w.readerDone
				} else {
					w.fail(fmt.Errorf("cannot write to the stream: %w", err))
				}
				w.logs.live.Store(false)
				w.out.close()
				w.spill(items[i:])
				return
			}
		}
		if len(items) > 0 {
			continue
		}
		if closed {
			_ = stream.CloseSend()
			return
		}
		select {
		case <-w.out.wake:
		case <-w.broken:
			return
		}
	}
}

// spill writes the log records of unsent messages to stderr.
func (w *streamWorker) spill(items []*rpc.StreamingMessage) {
	for _, m := range items {
		if l := m.GetRpcLog(); l != nil {
			w.logs.fallback.emit(recordOf(l))
		}
	}
}

// readLoop reads and dispatches the host's messages until the stream ends.
func (w *streamWorker) readLoop(stream rpc.FunctionRpc_EventStreamClient) {
	defer close(w.readerDone)
	first := true
	for {
		m, err := stream.Recv()
		if err != nil {
			if w.closing.Load() {
				return
			}
			if errors.Is(err, io.EOF) {
				w.mu.Lock()
				stopping := w.stopping
				w.mu.Unlock()
				if !stopping {
					w.fail(errors.New("the host closed the stream"))
				}
				return
			}
			if s, ok := status.FromError(err); ok {
				err = fmt.Errorf("%s: %s", s.Code(), s.Message())
			}
			w.fail(err)
			return
		}
		if first {
			// The host accepted the stream: logs go to it from now on.
			first = false
			w.logs.live.Store(true)
		}
		w.dispatch(m)
	}
}

func (w *streamWorker) dispatch(m *rpc.StreamingMessage) {
	switch c := m.Content.(type) {
	case *rpc.StreamingMessage_InvocationRequest:
		w.onInvocation(m.RequestId, c.InvocationRequest)
	case *rpc.StreamingMessage_InvocationCancel:
		w.onCancel(c.InvocationCancel)
	case *rpc.StreamingMessage_WorkerInitRequest:
		runtimeLog(w.logs, slog.LevelInfo, "", "initialized by host %s", firstNonEmpty(c.WorkerInitRequest.GetHostVersion(), "(no version)"))
		w.send(&rpc.StreamingMessage{RequestId: m.RequestId, Content: &rpc.StreamingMessage_WorkerInitResponse{
			WorkerInitResponse: &rpc.WorkerInitResponse{
				WorkerVersion:  version,
				Capabilities:   capabilities,
				Result:         success(),
				WorkerMetadata: workerMetadata(),
			}}})
	case *rpc.StreamingMessage_FunctionsMetadataRequest:
		// polyfn's functions are indexed by the host and sent in FunctionLoadRequests.
		w.send(&rpc.StreamingMessage{RequestId: m.RequestId, Content: &rpc.StreamingMessage_FunctionMetadataResponse{
			FunctionMetadataResponse: &rpc.FunctionMetadataResponse{UseDefaultMetadataIndexing: true, Result: success()}}})
	case *rpc.StreamingMessage_FunctionLoadRequest:
		w.send(&rpc.StreamingMessage{RequestId: m.RequestId, Content: &rpc.StreamingMessage_FunctionLoadResponse{
			FunctionLoadResponse: w.load(c.FunctionLoadRequest)}})
	case *rpc.StreamingMessage_FunctionLoadRequestCollection:
		var responses []*rpc.FunctionLoadResponse
		for _, r := range c.FunctionLoadRequestCollection.GetFunctionLoadRequests() {
			responses = append(responses, w.load(r))
		}
		w.send(&rpc.StreamingMessage{RequestId: m.RequestId, Content: &rpc.StreamingMessage_FunctionLoadResponseCollection{
			FunctionLoadResponseCollection: &rpc.FunctionLoadResponseCollection{FunctionLoadResponses: responses}}})
	case *rpc.StreamingMessage_WorkerTerminate:
		grace := defaultGrace
		if g := c.WorkerTerminate.GetGracePeriod(); g != nil {
			grace = max(0, g.AsDuration())
		}
		runtimeLog(w.logs, slog.LevelInfo, "", "received WorkerTerminate (grace period %s)", grace)
		w.requestStop(grace)
	case *rpc.StreamingMessage_WorkerStatusRequest:
		w.send(&rpc.StreamingMessage{RequestId: m.RequestId, Content: &rpc.StreamingMessage_WorkerStatusResponse{
			WorkerStatusResponse: &rpc.WorkerStatusResponse{}}})
	case *rpc.StreamingMessage_FunctionEnvironmentReloadRequest:
		w.send(&rpc.StreamingMessage{RequestId: m.RequestId, Content: &rpc.StreamingMessage_FunctionEnvironmentReloadResponse{
			FunctionEnvironmentReloadResponse: w.reloadEnvironment(c.FunctionEnvironmentReloadRequest)}})
	case *rpc.StreamingMessage_WorkerWarmupRequest:
		w.send(&rpc.StreamingMessage{RequestId: m.RequestId, Content: &rpc.StreamingMessage_WorkerWarmupResponse{
			WorkerWarmupResponse: &rpc.WorkerWarmupResponse{Result: success()}}})
	case *rpc.StreamingMessage_WorkerHeartbeat:
	default:
		runtimeLog(w.logs, slog.LevelDebug, "", "ignoring a %T message", m.Content)
	}
}

// load registers a function: every function is served by the handler, so
// loading cannot fail.
func (w *streamWorker) load(r *rpc.FunctionLoadRequest) *rpc.FunctionLoadResponse {
	name := firstNonEmpty(r.GetMetadata().GetName(), r.GetFunctionId())
	w.mu.Lock()
	w.functions[r.GetFunctionId()] = name
	w.mu.Unlock()
	runtimeLog(w.logs, slog.LevelInfo, name, "loaded function %s", name)
	return &rpc.FunctionLoadResponse{FunctionId: r.GetFunctionId(), Result: success()}
}

// reloadEnvironment replaces the environment and changes to the function
// app directory (a standby worker being specialised).
func (w *streamWorker) reloadEnvironment(r *rpc.FunctionEnvironmentReloadRequest) *rpc.FunctionEnvironmentReloadResponse {
	os.Clearenv()
	for k, v := range r.GetEnvironmentVariables() {
		_ = os.Setenv(k, v)
	}
	result := success()
	if dir := r.GetFunctionAppDirectory(); dir != "" {
		if err := os.Chdir(dir); err != nil {
			runtimeLog(w.logs, slog.LevelError, "", "cannot change to the function app directory %q: %v", dir, err)
			result = failureResult(errorType(err), err.Error())
		}
	}
	runtimeLog(w.logs, slog.LevelInfo, "", "environment reloaded (%d variables)", len(r.GetEnvironmentVariables()))
	return &rpc.FunctionEnvironmentReloadResponse{WorkerMetadata: workerMetadata(), Capabilities: capabilities, Result: result}
}

// streamInvocation is one invocation between its request and its response.
type streamInvocation struct {
	id        string
	requestID string
	cancel    context.CancelFunc
	cancelled atomic.Bool // the host sent InvocationCancel
}

func (w *streamWorker) onInvocation(requestID string, req *rpc.InvocationRequest) {
	w.mu.Lock()
	name, known := w.functions[req.GetFunctionId()]
	if w.stopping || !known {
		stopping := w.stopping
		w.mu.Unlock()
		result := failureResult("WorkerStopping", "the worker is stopping: it takes no new invocations")
		if !stopping {
			result = failureResult("FunctionNotFound", "function not found: "+req.GetFunctionId())
		}
		w.send(invocationResponse(requestID, &rpc.InvocationResponse{InvocationId: req.GetInvocationId(), Result: result}))
		return
	}
	ctx, cancel := context.WithCancel(w.base)
	inv := &streamInvocation{id: req.GetInvocationId(), requestID: requestID, cancel: cancel}
	w.inflight[inv.id] = inv
	w.running++
	w.mu.Unlock()
	go w.run(ctx, inv, req, name)
}

// run runs one invocation in its own goroutine and answers it.
func (w *streamWorker) run(ctx context.Context, inv *streamInvocation, req *rpc.InvocationRequest, name string) {
	var resp *rpc.InvocationResponse
	defer func() {
		if resp == nil { // the handler called runtime.Goexit
			resp = &rpc.InvocationResponse{InvocationId: inv.id, Result: failureResult("Goexit", "the handler called runtime.Goexit")}
			resp.Result.Exception.IsUserException = true
		}
		if inv.cancelled.Load() {
			resp = &rpc.InvocationResponse{InvocationId: inv.id, Result: &rpc.StatusResult{Status: rpc.StatusResult_Cancelled}}
		}
		inv.cancel()
		w.finish(inv, resp)
	}()
	info := streamContext(req, name)
	if !info.Deadline.IsZero() {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, info.Deadline)
		defer cancel()
	}
	o := invoke(withInvocation(ctx, info, w.logs), w.h, NewEvent(eventPayload(req)))
	resp = &rpc.InvocationResponse{InvocationId: inv.id}
	if o.fail != nil {
		if !inv.cancelled.Load() {
			w.logs.emit(logRecord{level: slog.LevelError, msg: o.fail.logText(), function: name, invocationID: inv.id})
		}
		resp.Result = &rpc.StatusResult{Status: rpc.StatusResult_Failure, Exception: &rpc.RpcException{
			Type:            o.fail.typ,
			Message:         o.fail.msg,
			StackTrace:      o.fail.stack,
			IsUserException: true,
		}}
		if o.fail.kind == kindReturn {
			resp.Result.Exception.Source = kindReturn
		}
		return
	}
	resp.Result = success()
	switch {
	case o.http != nil:
		h := &rpc.RpcHttp{StatusCode: strconv.Itoa(o.http.Status), Headers: o.http.Headers}
		if len(o.payload) > 0 {
			h.Body = &rpc.TypedData{Data: &rpc.TypedData_Bytes{Bytes: o.payload}}
		}
		resp.ReturnValue = &rpc.TypedData{Data: &rpc.TypedData_Http{Http: h}}
	case len(o.payload) > 0:
		resp.ReturnValue = &rpc.TypedData{Data: &rpc.TypedData_Bytes{Bytes: o.payload}}
	}
}

// finish sends the response and forgets the invocation.
func (w *streamWorker) finish(inv *streamInvocation, resp *rpc.InvocationResponse) {
	w.send(invocationResponse(inv.requestID, resp))
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.inflight[inv.id] == inv {
		delete(w.inflight, inv.id)
	}
	w.running--
	if w.running == 0 && w.drained != nil {
		close(w.drained)
		w.drained = nil
	}
}

// onCancel cancels an invocation's ctx; it is answered Cancelled when its
// handler returns, whatever the handler returns. Cancels of invocations not
// in flight are ignored.
func (w *streamWorker) onCancel(c *rpc.InvocationCancel) {
	w.mu.Lock()
	inv := w.inflight[c.GetInvocationId()]
	w.mu.Unlock()
	if inv == nil {
		runtimeLog(w.logs, slog.LevelDebug, "", "InvocationCancel for %s: not in flight", c.GetInvocationId())
		return
	}
	inv.cancelled.Store(true)
	inv.cancel()
}

// streamContext builds the invocation's Context from trigger_metadata
// (docs/protocols.md, "polyfn functions over the stream").
func streamContext(req *rpc.InvocationRequest, name string) *Context {
	md := req.GetTriggerMetadata()
	info := &Context{FunctionName: name, InvocationID: req.GetInvocationId(), Trigger: TriggerInvoke}
	if s := md["trigger"].GetString_(); s != "" {
		info.Trigger = s
	}
	info.MessageQOS = uint32(md["messageQOS"].GetInt())
	info.MessageID = uint64(md["messageID"].GetInt())
	info.MessageTopic = md["messageTopic"].GetString_()
	info.MessageTimestamp = md["messageTimestamp"].GetInt()
	if s := md["deadline"].GetString_(); s != "" {
		if d, err := time.Parse(time.RFC3339Nano, s); err == nil {
			info.Deadline = d
		}
	}
	if s := md["scheduledTime"].GetString_(); s != "" {
		if at, err := time.Parse(time.RFC3339Nano, s); err == nil {
			info.ScheduledTime = at
		}
	}
	if td := md["http"]; td != nil {
		text := firstNonEmpty(td.GetJson(), td.GetString_())
		var h HTTPRequest
		if text != "" && json.Unmarshal([]byte(text), &h) == nil {
			info.HTTP = &h
		}
	}
	return info
}

// eventPayload is the bytes of the input binding named "event", else of the
// first one; none is an empty payload.
func eventPayload(req *rpc.InvocationRequest) []byte {
	var chosen *rpc.ParameterBinding
	for _, b := range req.GetInputData() {
		if b.GetName() == eventBinding {
			chosen = b
			break
		}
		if chosen == nil {
			chosen = b
		}
	}
	switch d := chosen.GetData().GetData().(type) {
	case *rpc.TypedData_Bytes:
		return d.Bytes
	case *rpc.TypedData_String_:
		return []byte(d.String_)
	case *rpc.TypedData_Json:
		return []byte(d.Json)
	case *rpc.TypedData_Stream:
		return d.Stream
	}
	return nil
}

func invocationResponse(requestID string, r *rpc.InvocationResponse) *rpc.StreamingMessage {
	return &rpc.StreamingMessage{RequestId: requestID, Content: &rpc.StreamingMessage_InvocationResponse{InvocationResponse: r}}
}

func success() *rpc.StatusResult { return &rpc.StatusResult{Status: rpc.StatusResult_Success} }

func failureResult(typ, msg string) *rpc.StatusResult {
	return &rpc.StatusResult{Status: rpc.StatusResult_Failure, Exception: &rpc.RpcException{Type: typ, Message: msg}}
}

func workerMetadata() *rpc.WorkerMetadata {
	return &rpc.WorkerMetadata{
		RuntimeName:    "go",
		RuntimeVersion: runtime.Version(),
		WorkerVersion:  version,
		WorkerBitness:  strconv.Itoa(strconv.IntSize),
	}
}

// waitFor waits until ch is closed or d passes; it reports whether ch closed.
func waitFor(ch <-chan struct{}, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ch:
		return true
	case <-t.C:
		return false
	}
}

// outbox is the unbounded queue of messages for the host; writeLoop drains
// it. Nothing is accepted after close.
type outbox struct {
	mu     sync.Mutex
	items  []*rpc.StreamingMessage
	closed bool
	wake   chan struct{}
}

func newOutbox() *outbox { return &outbox{wake: make(chan struct{}, 1)} }

// push queues m; false when the outbox is closed.
func (o *outbox) push(m *rpc.StreamingMessage) bool {
	o.mu.Lock()
	if o.closed {
		o.mu.Unlock()
		return false
	}
	o.items = append(o.items, m)
	o.mu.Unlock()
	o.signal()
	return true
}

func (o *outbox) close() {
	o.mu.Lock()
	o.closed = true
	o.mu.Unlock()
	o.signal()
}

func (o *outbox) signal() {
	select {
	case o.wake <- struct{}{}:
	default:
	}
}

// take returns what is queued and whether the outbox is closed.
func (o *outbox) take() ([]*rpc.StreamingMessage, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	items := o.items
	o.items = nil
	return items, o.closed
}

// drain returns what is queued (after close).
func (o *outbox) drain() []*rpc.StreamingMessage {
	items, _ := o.take()
	return items
}

// streamSink sends log records to the host as RpcLog while the stream is
// up (live), and to stderr before and after.
type streamSink struct {
	out      *outbox
	live     atomic.Bool
	fallback logSink
}

var rpcLevels = map[string]rpc.RpcLog_Level{
	"debug": rpc.RpcLog_Debug, "info": rpc.RpcLog_Information, "warning": rpc.RpcLog_Warning, "error": rpc.RpcLog_Error,
}

func (s *streamSink) emit(r logRecord) {
	if s.live.Load() {
		l := &rpc.RpcLog{Level: rpcLevels[levelName(r.level)], Message: r.msg}
		if r.runtime {
			l.LogCategory = rpc.RpcLog_System
			l.Category = firstNonEmpty(r.function, runtimeCategory)
		} else {
			l.LogCategory = rpc.RpcLog_User
			l.Category = r.function
			l.InvocationId = r.invocationID
		}
		if s.out.push(&rpc.StreamingMessage{Content: &rpc.StreamingMessage_RpcLog{RpcLog: l}}) {
			return
		}
	}
	s.fallback.emit(r)
}

// recordOf turns an unsent RpcLog back into a record.
func recordOf(l *rpc.RpcLog) logRecord {
	level := slog.LevelInfo
	switch l.GetLevel() {
	case rpc.RpcLog_Trace, rpc.RpcLog_Debug:
		level = slog.LevelDebug
	case rpc.RpcLog_Warning:
		level = slog.LevelWarn
	case rpc.RpcLog_Error, rpc.RpcLog_Critical:
		level = slog.LevelError
	}
	r := logRecord{level: level, msg: l.GetMessage(), invocationID: l.GetInvocationId(), runtime: l.GetLogCategory() == rpc.RpcLog_System}
	if c := l.GetCategory(); c != runtimeCategory {
		r.function = c
	}
	return r
}
