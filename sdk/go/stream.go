package polyfn

import (
	"context"
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
	// windowSize is the stream's gRPC flow-control window, both ways.
	windowSize = 16 << 20
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
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(o.maxMessage), grpc.MaxCallSendMsgSize(o.maxMessage), grpc.ForceCodecV2(streamCodec{})),
		// Fixed flow-control windows, as large as the dynamic ones may grow:
		// with them set, gRPC sends no BDP-estimation pings (a ping and its
		// acknowledgement every round trip, under load) and fewer window
		// updates.
		grpc.WithInitialWindowSize(windowSize), grpc.WithInitialConnWindowSize(windowSize),
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
	w.stream = stream
	w.out.push(&rpc.StreamingMessage{RequestId: o.requestID, Content: &rpc.StreamingMessage_StartStream{
		StartStream: &rpc.StartStream{WorkerId: o.workerID}}})
	go w.writeLoop()
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
	// stream is written by writeLoop and sendNow, whichever holds sending.
	stream  rpc.FunctionRpc_EventStreamClient
	sending sync.Mutex

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

// sendNow writes m to the stream itself when nothing is queued and no one
// is writing, sparing the hand-off to writeLoop; otherwise it queues m
// behind the rest. Only for goroutines other than the reader: after a
// failed write it waits for the reader, as writeLoop does.
func (w *streamWorker) sendNow(m *rpc.StreamingMessage) {
	if !w.sending.TryLock() {
		w.send(m)
		return
	}
	if !w.out.empty() {
		w.sending.Unlock()
		w.send(m)
		return
	}
	err := w.stream.Send(m)
	w.sending.Unlock()
	if err != nil {
		w.writeFailed(err, nil)
	}
}

// writeLoop sends what is queued, in order, and closes our side of the
// stream once the outbox is closed and empty. It holds sending while it
// writes a batch, so sendNow never overtakes queued messages.
func (w *streamWorker) writeLoop() {
	defer close(w.writerDone)
	for {
		w.sending.Lock()
		items, closed := w.out.take()
		for i, m := range items {
			if err := w.stream.Send(m); err != nil {
				w.sending.Unlock()
				w.writeFailed(err, items[i:])
				return
			}
		}
		if len(items) == 0 && closed {
			_ = w.stream.CloseSend()
			w.sending.Unlock()
			return
		}
		w.sending.Unlock()
		if len(items) > 0 {
			continue
		}
		select {
		case <-w.out.wake:
		case <-w.broken:
			return
		}
	}
}

// writeFailed handles a failed write: nothing more is sent, and the log
// records of the unsent messages go to stderr.
func (w *streamWorker) writeFailed(err error, unsent []*rpc.StreamingMessage) {
	if errors.Is(err, io.EOF) {
		// The stream has ended: the reader learns how, and decides whether
		// that is a failure (a host ending it after WorkerTerminate is not).
		<-w.readerDone
	} else {
		w.fail(fmt.Errorf("cannot write to the stream: %w", err))
	}
	w.logs.live.Store(false)
	w.out.close()
	w.spill(unsent)
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
	info, httpJSON := streamContext(req)
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
	info.FunctionName = name
	// One context per invocation: cancelled by the host's InvocationCancel,
	// the grace period of a stopping worker, or the deadline.
	var (
		ctx    context.Context
		cancel context.CancelFunc
	)
	if info.Deadline.IsZero() {
		ctx, cancel = context.WithCancel(w.base)
	} else {
		ctx, cancel = context.WithDeadline(w.base, info.Deadline)
	}
	inv := &streamInvocation{id: req.GetInvocationId(), requestID: requestID, cancel: cancel}
	w.inflight[inv.id] = inv
	w.running++
	w.mu.Unlock()
	go w.run(streamJob{ctx: ctx, inv: inv, req: req, name: name, info: info, httpJSON: httpJSON})
}

// streamJob is an invocation for run.
type streamJob struct {
	ctx      context.Context
	inv      *streamInvocation
	req      *rpc.InvocationRequest
	name     string
	info     *Context
	httpJSON string
}

// run runs one invocation, on a goroutine of its own, and answers it.
func (w *streamWorker) run(j streamJob) {
	growStack()
	ctx, inv, req, name, info := j.ctx, j.inv, j.req, j.name, j.info
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
	o := invoke(withStreamInvocation(ctx, info, j.httpJSON, w.logs), w.h, NewEvent(eventPayload(req)))
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
	w.sendNow(invocationResponse(inv.requestID, resp))
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

// streamContext builds the invocation's Context, but its FunctionName, from
// trigger_metadata (docs/protocols.md, "polyfn functions over the stream"):
// the map, or the entries the stream codec left undecoded. The HTTP request
// is returned as JSON, for FromContext to decode if the handler asks.
func streamContext(req *rpc.InvocationRequest) (info *Context, httpJSON string) {
	info = &Context{InvocationID: req.GetInvocationId(), Trigger: TriggerInvoke}
	var trigger, deadline, scheduled string
	if md := req.GetTriggerMetadata(); len(md) > 0 {
		trigger = md["trigger"].GetString_()
		info.MessageQOS = uint32(md["messageQOS"].GetInt())
		info.MessageID = uint64(md["messageID"].GetInt())
		info.MessageTopic = md["messageTopic"].GetString_()
		info.MessageTimestamp = md["messageTimestamp"].GetInt()
		deadline = md["deadline"].GetString_()
		scheduled = md["scheduledTime"].GetString_()
		if td := md["http"]; td != nil {
			httpJSON = firstNonEmpty(td.GetJson(), td.GetString_())
		}
	} else {
		// The same getters on entries: the last of a key wins, as in a map.
		rawMetadata(req, func(e entry) {
			switch string(e.key) {
			case "trigger":
				trigger = e.triggerValue()
			case "messageQOS":
				info.MessageQOS = uint32(e.intValue())
			case "messageID":
				info.MessageID = uint64(e.intValue())
			case "messageTopic":
				info.MessageTopic = e.stringValue()
			case "messageTimestamp":
				info.MessageTimestamp = e.intValue()
			case "deadline":
				deadline = e.stringValue()
			case "scheduledTime":
				scheduled = e.stringValue()
			case "http":
				httpJSON = e.jsonValue()
			}
		})
	}
	if trigger != "" {
		info.Trigger = trigger
	}
	if deadline != "" {
		if d, err := time.Parse(time.RFC3339Nano, deadline); err == nil {
			info.Deadline = d
		}
	}
	if scheduled != "" {
		if at, err := time.Parse(time.RFC3339Nano, scheduled); err == nil {
			info.ScheduledTime = at
		}
	}
	return info, httpJSON
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

// invocationStack is about the stack an invocation takes, the handler's
// own frames aside: calling the handler, encoding and sending the response.
const invocationStack = 4 << 10

// growStack makes the new goroutine's stack at least invocationStack at
// once, while it holds a frame or two. A goroutine's stack starts small
// and grows by doubling when a call needs more, each time copying the stack
// and adjusting every frame on it: left to itself, an invocation's
// goroutine did that on nearly every invocation, deep in the call chain,
// for about a tenth of a no-op invocation's CPU in the worker. Growing it
// first copies one frame.
//
//go:noinline
func growStack() {
	var frame [invocationStack]byte
	keep(frame[:])
}

// keep keeps growStack's frame from being optimised away.
//
//go:noinline
func keep([]byte) {}

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

// empty reports whether nothing is queued and the outbox is open.
func (o *outbox) empty() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return !o.closed && len(o.items) == 0
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
