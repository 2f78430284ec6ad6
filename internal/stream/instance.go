package stream

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/types/known/durationpb"

	rpc "github.com/polyfn/polyfn/api/azure"
	"github.com/polyfn/polyfn/internal/azure"
	"github.com/polyfn/polyfn/internal/buildinfo"
	"github.com/polyfn/polyfn/internal/config"
	"github.com/polyfn/polyfn/internal/invoke"
	"github.com/polyfn/polyfn/internal/pool"
	"github.com/polyfn/polyfn/internal/tracing"
	"github.com/polyfn/polyfn/internal/worker"
)

// Capabilities the host acts on.
const (
	CapCancel    = "HandlesInvocationCancelMessage"
	CapTerminate = "HandlesWorkerTerminateMessage"
)

// TypeWorkerUnavailable is the RpcException type with which polyfn's
// runtimes answer an invocation they cannot run at all (no thread could
// be started for it), is_user_exception false: the invocation fails as
// the worker's failure and the instance is replaced (docs/protocols.md).
const TypeWorkerUnavailable = "WorkerUnavailable"

// PropDependencies is the FunctionLoadRequest metadata property naming the
// directory of a function's built dependencies, which polyfn's runtimes add
// to their module search path after their own (docs/protocols.md).
const PropDependencies = "polyfn.dependencies"

// PropConcurrency is the FunctionLoadRequest metadata property carrying the
// instance's concurrency: how many invocations the host sends the worker at
// once, over all its functions. At 1, polyfn's Python runtime runs a plain
// function on its event loop's thread instead of in a thread pool
// (docs/protocols.md).
const PropConcurrency = "polyfn.concurrency"

// cancelGrace is the grace period sent with InvocationCancel.
const cancelGrace = time.Second

// exitWait bounds how long an invocation whose stream ended waits for the
// worker's exit to be observed, to report how the worker ended.
const exitWait = 50 * time.Millisecond

// Options configure one instance.
type Options struct {
	Server *Server
	// Runtime is the effective runtime (protocol stream).
	Runtime config.Runtime
	// Functions are loaded into the worker by the host (discovery config).
	Functions []config.Function
	// Name tags logs: the function or app the instance serves.
	Name string
	// ID names the instance.
	ID string
	// Dir is the instance's private directory, created and removed by the
	// instance; AppDir is the working directory and the app directory the
	// worker is told about (Dir when empty).
	Dir    string
	AppDir string
	Env    map[string]string
	Log    *slog.Logger
	// App: AppDir is an Azure Functions app; the instance asks the worker for
	// its functions (or reads their function.json files) and loads them all.
	App bool
	// Isolation confines the worker: resource limits, the user it runs as
	// (Dir is given to that user).
	Isolation worker.Isolation
	// LogLevels filter an app worker's RpcLogs by category (host.json's
	// logging.logLevel; the zero value passes Information and above).
	LogLevels azure.LogLevels
}

// Instance is what the pool runs invocations on.
var _ pool.Instance = (*Instance)(nil)

// Instance is one running stream-protocol worker.
type Instance struct {
	opts Options
	proc *worker.Process
	conn *Conn
	caps map[string]string
	// proxy forwards HTTP requests to a worker that serves HTTP itself
	// (HttpUri capability, httpproxy.go); nil otherwise.
	proxy *httpProxy

	mu       sync.Mutex
	inflight map[string]string // invocation id → function name, for log records
	// abandoned holds invocations the host gave up on that the worker has
	// not answered yet; stuck says why the instance was replaced, if it was.
	abandoned map[string]bool
	// late holds responses that came after their waiter left, in case they
	// beat the abandon record (bounded: cleared when large).
	late  map[string]bool
	stuck string
	// stopping: Stop was called. lostStream: the worker's stream ended
	// before that, with this error.
	stopping   bool
	lostStream error
	name, id   string // what the instance serves and is called (Bind changes them)
	stopOnce   sync.Once

	// For apps: the functions the worker loaded, the ones that failed
	// indexing or loading with why, and the ones polyfn cannot serve
	// (*azure.UnsupportedError each).
	appFunctions []*azure.Function
	broken       []error
	unsupported  []error
	// said holds the last warnings and errors the worker logged before it
	// was ready (its own reason when it fails to start or index).
	said  []string
	ready bool
}

// saidMax bounds Instance.said, saidLen each of its messages (in
// characters; the Python worker logs whole module tables).
const (
	saidMax = 5
	saidLen = 300
)

// Start launches the worker and waits, within the runtime's init timeout,
// for its stream, init and the load of every function. On any failure the
// process group is killed and the error says why.
func Start(ctx context.Context, o Options) (*Instance, error) {
	iso, err := o.Isolation.Lease()
	if err != nil {
		return nil, err
	}
	o.Isolation = iso
	if err := os.MkdirAll(o.Dir, 0o700); err != nil {
		iso.Release()
		return nil, fmt.Errorf("instance directory: %w", err)
	}
	if err := o.Isolation.Own(o.Dir); err != nil {
		iso.Release()
		os.RemoveAll(o.Dir)
		return nil, fmt.Errorf("instance directory: %w", err)
	}
	if o.AppDir == "" {
		o.AppDir = o.Dir
	}
	workerID := invoke.NewID()
	requestID := invoke.NewID()
	exp := o.Server.expect(workerID, o.Name, o.ID)
	defer o.Server.forget(workerID, exp)

	host, port, err := net.SplitHostPort(o.Server.Addr())
	if err != nil {
		iso.Release()
		os.RemoveAll(o.Dir)
		return nil, err
	}
	args, env := launch(o, host, port, workerID, requestID)
	proc, err := worker.Start(worker.Spec{Function: o.Name, Instance: o.ID, Command: args, Dir: o.AppDir, Env: worker.ScrubbedEnv(env), Log: o.Log, Isolation: o.Isolation})
	if err != nil {
		iso.Release()
		os.RemoveAll(o.Dir)
		return nil, err
	}
	exp.started(proc.Pid())
	i := &Instance{opts: o, proc: proc, inflight: map[string]string{}, abandoned: map[string]bool{}, late: map[string]bool{}, name: o.Name, id: o.ID}
	if err := i.handshake(ctx, exp.conn); err != nil {
		i.proc.Kill()
		if i.conn != nil {
			i.conn.Close()
		}
		os.RemoveAll(o.Dir)
		return nil, err
	}
	// A worker whose stream ends is done for: stop its process so the pool
	// sees it exit.
	go func() {
		select {
		case <-i.conn.Done():
			i.mu.Lock()
			if !i.stopping {
				i.lostStream = i.conn.Err()
			}
			i.mu.Unlock()
			i.proc.Stop(context.Background(), o.Runtime.StopGrace.D())
		case <-i.proc.Done():
			i.conn.Close()
		}
	}()
	return i, nil
}

// WorkerIDEnv is the environment variable that carries the worker id to
// polyfn's own runtimes instead of the command line, which every local user
// may read (/proc/PID/cmdline); the environment only the worker's user and
// root may read.
const WorkerIDEnv = "POLYFN_WORKER_ID"

// launch returns a worker's command line and environment (docs/protocols.md,
// "Launch"). Foreign workers get the worker id as the official Azure
// Functions host passes it, in --workerId and --functions-worker-id;
// polyfn's own runtimes in WorkerIDEnv.
func launch(o Options, host, port, workerID, requestID string) (args []string, env map[string]string) {
	env = workerEnv(o)
	max := strconv.Itoa(MaxMessageSize)
	uri := "http://" + o.Server.Addr() + "/"
	args = append([]string(nil), o.Runtime.Command...)
	if o.Runtime.BuiltIn {
		env[WorkerIDEnv] = workerID
		return append(args, "--host", host, "--port", port, "--requestId", requestID, "--grpcMaxMessageLength", max,
			"--functions-uri", uri, "--functions-request-id", requestID, "--functions-grpc-max-message-length", max), env
	}
	return append(args, "--host", host, "--port", port, "--workerId", workerID, "--requestId", requestID, "--grpcMaxMessageLength", max,
		"--functions-uri", uri, "--functions-worker-id", workerID, "--functions-request-id", requestID, "--functions-grpc-max-message-length", max), env
}

// workerEnv is a worker's whole environment: scrubbed, plus the runtime's
// and the function's variables and the protocol's.
func workerEnv(o Options) map[string]string {
	base := map[string]string{"FUNCTIONS_WORKER_RUNTIME": o.Runtime.Name}
	if o.App {
		// The Python worker puts the script root on sys.path to import
		// function_app; the Azure host has it in every worker's environment.
		base["AzureWebJobsScriptRoot"] = o.AppDir
	}
	own := map[string]string{
		"FUNCTIONS_WORKER_DIRECTORY":      o.Dir,
		"FUNCTIONS_APPLICATION_DIRECTORY": o.AppDir,
	}
	if o.Isolation.OtherUser() {
		own["HOME"] = o.Dir // the host's home is not theirs
	}
	return worker.ScrubbedEnvMap(base, o.Runtime.Env, o.Env, own)
}

// Bind specializes a standby instance — started with no function — for
// name's functions: the worker's environment becomes env's (as if it had
// been started for them) and each function is loaded. id renames the
// instance. On error the caller must stop the instance.
func (i *Instance) Bind(ctx context.Context, name, id string, functions []config.Function, env map[string]string) error {
	o := i.opts
	o.Name, o.ID, o.Env, o.Functions = name, id, env, functions
	ctx, cancel := context.WithTimeout(ctx, i.opts.Runtime.InitTimeout.D())
	defer cancel()
	resp, err := i.conn.Request(ctx, "reload", &rpc.StreamingMessage{
		RequestId: invoke.NewID(),
		Content: &rpc.StreamingMessage_FunctionEnvironmentReloadRequest{FunctionEnvironmentReloadRequest: &rpc.FunctionEnvironmentReloadRequest{
			EnvironmentVariables: workerEnv(o), FunctionAppDirectory: o.AppDir}},
	})
	if err != nil {
		return fmt.Errorf("environment reload: %w", err)
	}
	if err := resultError(resp.GetFunctionEnvironmentReloadResponse().GetResult()); err != nil {
		return fmt.Errorf("environment reload failed: %w", err)
	}
	i.mu.Lock()
	i.name, i.id = name, id
	i.mu.Unlock()
	i.proc.SetTags(name, id)
	for _, f := range functions {
		if err := i.load(ctx, loadRequest(f, o.Runtime.Name)); err != nil {
			return err
		}
	}
	return nil
}

// tags returns the function (or app) and instance names the instance
// currently serves under.
func (i *Instance) tags() (name, id string) {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.name, i.id
}

func (i *Instance) handshake(ctx context.Context, connc <-chan *Conn) error {
	timeout := i.opts.Runtime.InitTimeout.D()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	ctx, stop := i.proc.CancelOnExit(ctx)
	defer stop()
	fail := func(stage string, err error) error {
		if i.proc.Exited() {
			return fmt.Errorf("worker exited during %s: %w", stage, i.proc.ExitError())
		}
		if errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("worker did not complete %s within init timeout %s (runtimes.%s.init_timeout)", stage, timeout, i.opts.Runtime.Name)
		}
		return fmt.Errorf("worker %s: %w", stage, err)
	}
	select {
	case i.conn = <-connc:
	case <-ctx.Done():
		return fail("its connection (StartStream)", ctx.Err())
	}
	i.conn.SetHandlers(i.onLog, i.onOther)
	resp, err := i.conn.Request(ctx, "init", &rpc.StreamingMessage{
		RequestId: invoke.NewID(),
		Content: &rpc.StreamingMessage_WorkerInitRequest{WorkerInitRequest: &rpc.WorkerInitRequest{
			HostVersion:          buildinfo.HostVersion(),
			Capabilities:         map[string]string{},
			WorkerDirectory:      i.opts.Dir,
			FunctionAppDirectory: i.opts.AppDir,
		}},
	})
	if err != nil {
		return fail("init", err)
	}
	ir := resp.GetWorkerInitResponse()
	if err := resultError(ir.GetResult()); err != nil {
		return fmt.Errorf("worker init failed: %w", err)
	}
	i.caps = ir.GetCapabilities()
	if uri := i.caps[CapHTTPURI]; uri != "" {
		p, err := newHTTPProxy(uri, i.proc.Pid())
		if err != nil {
			return err
		}
		i.proxy = p
	}
	for _, f := range i.opts.Functions {
		if err := i.load(ctx, loadRequest(f, i.opts.Runtime.Name)); err != nil {
			return fail("function load", err)
		}
	}
	if i.opts.App {
		if err := i.index(ctx); err != nil {
			return fail("indexing", err)
		}
	}
	i.mu.Lock()
	i.ready, i.said = true, nil
	i.mu.Unlock()
	return nil
}

// withSaid appends to a start error that carries no exception of the
// worker what the worker itself said before it was ready: its last
// warnings and errors (RpcLog), else the last lines of its stderr; what
// the error already quotes is left out.
func (i *Instance) withSaid(err error) error {
	i.mu.Lock()
	said := slices.Clone(i.said)
	i.mu.Unlock()
	what := "the worker said"
	if len(said) == 0 {
		what, said = "the worker's last stderr lines", stackless(i.proc.StderrTail())
		if len(said) > saidMax {
			said = said[len(said)-saidMax:]
		}
	}
	text := err.Error()
	said = slices.DeleteFunc(said, func(s string) bool { return strings.TrimSpace(s) == "" || strings.Contains(text, s) })
	if len(said) == 0 {
		return err
	}
	return fmt.Errorf("%w; %s: %s", err, what, strings.Join(said, " | "))
}

// stackless drops the lines of stack traces from stderr lines: indented
// ones ("    at f (index.js:1:2)", "  File ...") and Node.js's require
// stack ("- /app/src/index.js"), which crowd out the line naming the
// error.
func stackless(lines []string) []string {
	return slices.DeleteFunc(lines, func(l string) bool {
		return l == "" || l[0] == ' ' || l[0] == '\t' || strings.HasPrefix(l, "- ")
	})
}

// index discovers an app's functions and loads each. Functions that fail
// to index or load are recorded as broken; an app with no function left
// is an error.
func (i *Instance) index(ctx context.Context) error {
	resp, err := i.conn.Request(ctx, "metadata", &rpc.StreamingMessage{
		RequestId: invoke.NewID(),
		Content: &rpc.StreamingMessage_FunctionsMetadataRequest{FunctionsMetadataRequest: &rpc.FunctionsMetadataRequest{
			FunctionAppDirectory: i.opts.AppDir}},
	})
	if err != nil {
		return err
	}
	mr := resp.GetFunctionMetadataResponse()
	type candidate struct {
		fn    *azure.Function
		props map[string]string
	}
	var found []candidate
	if r := mr.GetResult(); r != nil && r.GetStatus() != rpc.StatusResult_Success && mr.GetUseDefaultMetadataIndexing() {
		// The worker failed (an entry point that does not load, say) and falls
		// back to function.json files: keep its error.
		i.broken = append(i.broken, fmt.Errorf("worker indexing: %w", resultError(r)))
	}
	switch {
	case mr.GetUseDefaultMetadataIndexing():
		fns, errs := azure.IndexApp(i.opts.AppDir)
		i.broken = append(i.broken, errs...)
		for _, fn := range fns {
			found = append(found, candidate{fn: fn})
		}
	default:
		if err := resultError(mr.GetResult()); err != nil {
			return fmt.Errorf("the worker could not index the app: %w", err)
		}
		for _, md := range mr.GetFunctionMetadataResults() {
			if st := md.GetStatus(); st != nil && st.GetStatus() != rpc.StatusResult_Success {
				i.broken = append(i.broken, fmt.Errorf("function %s: %w", md.GetName(), resultError(st)))
				continue
			}
			fn, err := azure.FromWorkerMetadata(md)
			if err != nil {
				i.broken = append(i.broken, err)
				continue
			}
			found = append(found, candidate{fn: fn, props: md.GetProperties()})
		}
	}
	for _, c := range found {
		if err := azure.CheckSupported(c.fn); err != nil {
			i.unsupported = append(i.unsupported, err)
			continue
		}
		if err := i.load(ctx, c.fn.LoadRequest(c.props)); err != nil {
			i.broken = append(i.broken, err)
			continue
		}
		i.appFunctions = append(i.appFunctions, c.fn)
	}
	if len(i.appFunctions) == 0 && len(i.unsupported) == 0 {
		if len(i.broken) > 0 {
			return fmt.Errorf("no function of app %s could be loaded: %w", i.opts.AppDir, errors.Join(i.broken...))
		}
		return i.withSaid(fmt.Errorf("app %s has no functions (the worker listed none and no */function.json exists)", i.opts.AppDir))
	}
	return nil
}

// AppFunctions returns the functions an app instance loaded, and the errors
// of those that could not be indexed or loaded.
func (i *Instance) AppFunctions() ([]*azure.Function, []error) { return i.appFunctions, i.broken }

// Unsupported returns the app functions polyfn cannot serve, an
// *azure.UnsupportedError each (not loaded into the worker).
func (i *Instance) Unsupported() []error { return i.unsupported }

func (i *Instance) load(ctx context.Context, req *rpc.FunctionLoadRequest) error {
	resp, err := i.conn.Request(ctx, "load:"+req.FunctionId, &rpc.StreamingMessage{
		RequestId: invoke.NewID(),
		Content:   &rpc.StreamingMessage_FunctionLoadRequest{FunctionLoadRequest: req},
	})
	if err != nil {
		return err
	}
	if err := resultError(resp.GetFunctionLoadResponse().GetResult()); err != nil {
		return fmt.Errorf("load %s: %w", req.Metadata.GetName(), err)
	}
	return nil
}

// loadRequest is how the host tells a worker to load a function of
// polyfn.yaml (docs/protocols.md, "polyfn functions over the stream").
func loadRequest(f config.Function, language string) *rpc.FunctionLoadRequest {
	props := map[string]string{"polyfn": "1"}
	if f.Dependencies != "" {
		props[PropDependencies] = f.Dependencies
	}
	if f.Concurrency > 0 {
		props[PropConcurrency] = strconv.Itoa(f.Concurrency)
	}
	return &rpc.FunctionLoadRequest{
		FunctionId: f.Name,
		Metadata: &rpc.RpcFunctionMetadata{
			Name:       f.Name,
			FunctionId: f.Name,
			Directory:  f.Codedir,
			EntryPoint: f.Handler,
			Language:   language,
			Bindings: map[string]*rpc.BindingInfo{
				"event":   {Type: "polyfn", Direction: rpc.BindingInfo_in, DataType: rpc.BindingInfo_binary},
				"$return": {Type: "polyfn", Direction: rpc.BindingInfo_out, DataType: rpc.BindingInfo_binary},
			},
			Properties: props,
		},
	}
}

// resultError turns a non-success StatusResult into an error carrying the
// worker's exception.
func resultError(r *rpc.StatusResult) error {
	if r.GetStatus() == rpc.StatusResult_Success {
		return nil
	}
	msg := r.GetResult()
	if ex := r.GetException(); ex != nil {
		msg = ex.GetMessage()
		if ex.GetType() != "" {
			msg = ex.GetType() + ": " + msg
		}
	}
	if msg == "" {
		msg = "status " + r.GetStatus().String()
	}
	return errors.New(msg)
}

// ID returns the instance id.
func (i *Instance) ID() string { _, id := i.tags(); return id }

// Pid returns the worker's process id.
func (i *Instance) Pid() int { return i.proc.Pid() }

// Done is closed when the worker process has exited.
func (i *Instance) Done() <-chan struct{} { return i.proc.Done() }

// ExitError says why an instance that ended on its own ended: the
// worker's exit status and last stderr lines, that its stream ended, or
// that it was replaced for holding on to an invocation. It is nil when the
// instance was stopped (Stop) while its worker was running.
func (i *Instance) ExitError() error {
	i.mu.Lock()
	stuck, lost := i.stuck, i.lostStream
	i.mu.Unlock()
	switch {
	case stuck != "":
		return errors.New(stuck)
	case lost != nil:
		return fmt.Errorf("%v (stream: %v)", i.proc.ExitError(), lost)
	case !i.proc.Stopped():
		return i.proc.ExitError()
	}
	return nil
}

// Stop sends WorkerTerminate to workers that handle it, waits up to the
// runtime's stop grace, then stops the process (SIGTERM, grace, SIGKILL to
// the group). It blocks until the worker is gone and is safe to call more
// than once.
func (i *Instance) Stop(ctx context.Context) {
	i.stopOnce.Do(func() {
		i.mu.Lock()
		i.stopping = true
		select {
		case <-i.conn.Done(): // the worker's end came first
			if err := i.conn.Err(); i.lostStream == nil && !errors.Is(err, errClosedByHost) {
				i.lostStream = err
			}
		default:
		}
		i.mu.Unlock()
		i.proc.ExpectExit() // before WorkerTerminate, which the worker answers by exiting
		grace := i.opts.Runtime.StopGrace.D()
		if i.caps[CapTerminate] != "" && i.conn.Err() == nil {
			i.sendControl(&rpc.StreamingMessage{Content: &rpc.StreamingMessage_WorkerTerminate{
				WorkerTerminate: &rpc.WorkerTerminate{GracePeriod: durationpb.New(grace)}}})
			t := time.NewTimer(grace)
			select {
			case <-i.proc.Done():
			case <-t.C:
			case <-ctx.Done():
			}
			t.Stop()
		}
		i.proc.Stop(ctx, grace)
		i.conn.Close()
		if i.proxy != nil {
			i.proxy.close()
		}
		os.RemoveAll(i.opts.Dir)
	})
	<-i.proc.Done()
}

// Invoke runs one invocation of a polyfn function. ctx carries the
// deadline; when it passes, workers that handle cancellation are sent
// InvocationCancel.
func (i *Instance) Invoke(ctx context.Context, req *invoke.Request) (*invoke.Result, error) {
	ctx, span := tracing.Start(ctx, "stream InvocationRequest", trace.SpanKindClient, attribute.String("polyfn.instance", i.ID()))
	defer span.End()
	// The messages of the request, allocated at once.
	msg := &struct {
		m       rpc.StreamingMessage
		content rpc.StreamingMessage_InvocationRequest
		ir      rpc.InvocationRequest
		input   [1]*rpc.ParameterBinding
		binding rpc.ParameterBinding
		data    rpc.ParameterBinding_Data
		event   rpc.TypedData
		bytes   rpc.TypedData_Bytes
	}{}
	ir := &msg.ir
	ir.InvocationId = req.ID
	if tp, ts := tracing.TraceParent(ctx); tp != "" {
		ir.TraceContext = &rpc.RpcTraceContext{TraceParent: tp, TraceState: ts}
	}
	var appFn *azure.Function
	if req.App != "" && i.proxy != nil && req.HTTPRequest != nil {
		fn := i.appFunction(req.Function)
		if fn == nil {
			return nil, invoke.Errorf(invoke.KindNotFound, "app %s has no function %q", req.App, req.Function)
		}
		msg.content.InvocationRequest = ir
		msg.m.RequestId, msg.m.Content = req.ID, &msg.content
		return i.invokeProxied(ctx, req, fn, &msg.m, ir)
	}
	if req.HTTPStream != nil && req.HTTPStream.Body != nil && i.proxy == nil {
		// The body was left unread for a streaming worker; this one is not.
		return nil, invoke.Errorf(invoke.KindUnavailable, "instance %s of app %s does not serve HTTP itself (no HttpUri) while the app's last started instance did", i.ID(), req.App)
	}
	if req.App != "" {
		var err error
		if appFn, err = i.appInput(ir, req); err != nil {
			return nil, err
		}
	} else {
		ir.FunctionId = req.Function
		msg.bytes.Bytes = req.Payload
		msg.event.Data = &msg.bytes
		msg.data.Data = &msg.event
		msg.binding.Name, msg.binding.RpcData = "event", &msg.data
		msg.input[0] = &msg.binding
		ir.InputData = msg.input[:]
		setTriggerMetadata(ir, ctx, req)
	}
	msg.content.InvocationRequest = ir
	msg.m.RequestId, msg.m.Content = req.ID, &msg.content
	m := &msg.m
	resp, err := i.request(ctx, req.ID, req.Function, m)
	if err != nil {
		return nil, err
	}
	out := resp.GetInvocationResponse()
	switch r := out.GetResult(); r.GetStatus() {
	case rpc.StatusResult_Success:
		if appFn != nil {
			return appResult(appFn, out)
		}
		if h := out.GetReturnValue().GetHttp(); h != nil {
			return httpResult(h)
		}
		return &invoke.Result{Payload: typedBytes(out.GetReturnValue())}, nil
	case rpc.StatusResult_Cancelled:
		return nil, invoke.Errorf(invoke.KindTimeout, "invocation cancelled by the worker")
	default:
		ex := r.GetException()
		if ex.GetType() == TypeWorkerUnavailable && !ex.GetIsUserException() {
			msg := fmt.Sprintf("instance %s cannot run the invocation: %s", i.ID(), ex.GetMessage())
			if note := i.proc.PidsLimitNote(); note != "" {
				msg += "; " + note
			}
			return nil, invoke.Errorf(invoke.KindWorkerCrashed, "%s", msg)
		}
		typ, msg := ex.GetType(), ex.GetMessage()
		if appFn != nil {
			// The official workers send the class in the message or stack.
			typ, msg = azure.ExceptionType(ex)
		}
		if typ == "" {
			typ = "FunctionError"
		}
		if msg == "" {
			msg = r.GetResult()
		}
		return nil, &invoke.Error{Kind: invoke.KindFunction, Type: typ, Message: msg, Stack: ex.GetStackTrace()}
	}
}

// request sends an InvocationRequest and waits for its response, mapping a
// lost stream, a timeout and a cancelled context to invocation errors.
func (i *Instance) request(ctx context.Context, invocationID, function string, m *rpc.StreamingMessage) (*rpc.StreamingMessage, error) {
	i.mu.Lock()
	i.inflight[invocationID] = function
	i.mu.Unlock()
	defer func() {
		i.mu.Lock()
		delete(i.inflight, invocationID)
		i.mu.Unlock()
	}()
	resp, err := i.conn.Request(ctx, "inv:"+invocationID, m)
	if err == nil {
		return resp, nil
	}
	if ctx.Err() != nil {
		if i.caps[CapCancel] != "" {
			i.sendControl(&rpc.StreamingMessage{Content: &rpc.StreamingMessage_InvocationCancel{
				InvocationCancel: &rpc.InvocationCancel{InvocationId: invocationID, GracePeriod: durationpb.New(cancelGrace)}}})
		}
		i.abandon(invocationID)
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return nil, invoke.TimeoutError(ctx, fmt.Sprintf("function %s did not finish", function))
		}
		return nil, invoke.Errorf(invoke.KindUnavailable, "invocation cancelled: %v", context.Cause(ctx))
	}
	lost := invoke.Errorf(invoke.KindWorkerCrashed, "instance %s lost while running the invocation: %v", i.ID(), err)
	var ns *NotSentError
	lost.Undelivered = errors.As(err, &ns)
	switch {
	case lost.Undelivered:
	case i.proc.OOMKilled(time.Second):
		lost.Type, lost.Message = invoke.TypeOutOfMemory, fmt.Sprintf("instance %s lost while running the invocation: %s", i.ID(), i.proc.ExitStatus())
	case i.proc.ExitedWithin(exitWait):
		lost.Message = fmt.Sprintf("instance %s exited while running the invocation: %v", i.ID(), i.proc.ExitError())
	default:
		if note := i.proc.PidsLimitNote(); note != "" {
			lost.Message += "; " + note
		}
	}
	return nil, lost
}

// sendControl sends InvocationCancel or WorkerTerminate without waiting
// for the write. A worker that has stopped reading its stream blocks writes
// once the transport's flow control is exhausted, and only the end of the
// stream unblocks them; the caller is what ends it (abandon replaces the
// instance after the cancel grace, Stop kills the worker after the stop
// grace), so it must not wait behind such a write. The goroutine ends once
// the message is written or the stream has ended.
func (i *Instance) sendControl(m *rpc.StreamingMessage) {
	go func() { _ = i.conn.Send(context.Background(), m) }()
}

// abandon records an invocation the host gave up on. The worker still
// runs it and so still holds its slot; if it has not answered within the
// runtime's cancel grace, the instance is replaced.
func (i *Instance) abandon(invocationID string) {
	i.mu.Lock()
	if i.late[invocationID] {
		delete(i.late, invocationID) // answered already
		i.mu.Unlock()
		return
	}
	i.abandoned[invocationID] = true
	i.mu.Unlock()
	grace := i.opts.Runtime.CancelGrace.D()
	time.AfterFunc(grace, func() {
		if i.proc.Exited() {
			return
		}
		i.mu.Lock()
		stuck := i.abandoned[invocationID]
		if stuck && i.stuck == "" {
			i.stuck = fmt.Sprintf("replaced: it did not answer invocation %s within %s (runtimes.%s.cancel_grace) of the host giving up on it", invocationID, grace, i.opts.Runtime.Name)
		}
		reason := i.stuck
		i.mu.Unlock()
		if stuck {
			if i.opts.Log != nil {
				_, id := i.tags()
				i.opts.Log.Warn("instance still holds a slot it was asked to give back; replacing it", "instance", id, "invocation", invocationID, "reason", reason)
			}
			go i.Stop(context.Background())
		}
	})
}

// httpResult is an explicit HTTP response a polyfn runtime returned.
func httpResult(h *rpc.RpcHttp) (*invoke.Result, error) {
	hr := &invoke.HTTPResponse{Headers: h.GetHeaders()}
	if sc := h.GetStatusCode(); sc != "" {
		n, err := strconv.Atoi(sc)
		if err != nil {
			return nil, &invoke.Error{Kind: invoke.KindFunction, Type: "InvalidResponse", Message: fmt.Sprintf("status code %q is not a number", sc)}
		}
		hr.Status = n
	}
	if err := hr.Validate(); err != nil {
		return nil, &invoke.Error{Kind: invoke.KindFunction, Type: "InvalidResponse", Message: err.Error()}
	}
	return &invoke.Result{Payload: typedBytes(h.GetBody()), HTTP: hr}, nil
}

// typedBytes returns the payload of a result value.
func typedBytes(td *rpc.TypedData) []byte {
	switch d := td.GetData().(type) {
	case *rpc.TypedData_Bytes:
		return d.Bytes
	case *rpc.TypedData_String_:
		return []byte(d.String_)
	case *rpc.TypedData_Json:
		return []byte(d.Json)
	case *rpc.TypedData_Stream:
		return d.Stream
	case *rpc.TypedData_Int:
		return strconv.AppendInt(nil, d.Int, 10)
	case *rpc.TypedData_Double:
		return strconv.AppendFloat(nil, d.Double, 'g', -1, 64)
	}
	return nil
}

var rpcLevels = map[rpc.RpcLog_Level]slog.Level{
	rpc.RpcLog_Trace: slog.LevelDebug, rpc.RpcLog_Debug: slog.LevelDebug, rpc.RpcLog_Information: slog.LevelInfo,
	rpc.RpcLog_Warning: slog.LevelWarn, rpc.RpcLog_Error: slog.LevelError, rpc.RpcLog_Critical: slog.LevelError,
}

// onLog turns an RpcLog into a host log record tagged with the function,
// instance and invocation.
func (i *Instance) onLog(l *rpc.RpcLog) {
	if l.GetLevel() == rpc.RpcLog_None || i.opts.Log == nil {
		return
	}
	lvl := rpcLevels[l.GetLevel()]
	if i.opts.App {
		i.noteSaid(l)
	}
	if l.GetLogCategory() == rpc.RpcLog_System && lvl == slog.LevelInfo && i.opts.App {
		// The official workers log every invocation at System/Information.
		lvl = slog.LevelDebug
	}
	if !i.opts.Log.Enabled(context.Background(), lvl) {
		return
	}
	fn, id := i.tags()
	attrs := make([]slog.Attr, 0, 6)
	invoked := false
	if id := l.GetInvocationId(); id != "" {
		i.mu.Lock()
		if name, ok := i.inflight[id]; ok {
			fn, invoked = name, true
		}
		i.mu.Unlock()
		attrs = append(attrs, slog.String("invocation", id))
	}
	if i.opts.App && !i.opts.LogLevels.Enabled(i.logCategory(l, fn, invoked), azure.LogLevel(l.GetLevel())) {
		return // host.json's logging.logLevel
	}
	attrs = append(attrs, slog.String("function", fn), slog.String("instance", id))
	source := "user"
	if l.GetLogCategory() == rpc.RpcLog_System {
		source = "runtime"
	}
	attrs = append(attrs, slog.String("source", source))
	if c := l.GetCategory(); c != "" {
		attrs = append(attrs, slog.String("category", c))
	}
	if ex := l.GetException(); ex != nil {
		attrs = append(attrs, slog.String("exception", ex.GetMessage()+"\n"+ex.GetStackTrace()))
	}
	i.opts.Log.LogAttrs(context.Background(), lvl, l.GetMessage(), attrs...)
}

// logCategory is the category the official host logs an app worker's
// RpcLog under (see azure.FunctionCategory), for host.json's
// logging.logLevel: fn is the function of the invocation it belongs to,
// if invoked.
func (i *Instance) logCategory(l *rpc.RpcLog, fn string, invoked bool) string {
	switch {
	case !invoked:
		return azure.WorkerCategory(i.opts.Runtime.Name)
	case l.GetLogCategory() == rpc.RpcLog_User:
		return azure.FunctionUserCategory(fn)
	}
	return azure.FunctionCategory(fn)
}

// noteSaid keeps the worker's warnings and errors until it is ready: they
// are its own reason when it fails to start or index.
func (i *Instance) noteSaid(l *rpc.RpcLog) {
	if l.GetLevel() < rpc.RpcLog_Warning {
		return
	}
	msg := l.GetMessage()
	if ex := l.GetException(); ex != nil && ex.GetMessage() != "" && !strings.Contains(msg, ex.GetMessage()) {
		msg += ": " + ex.GetMessage()
	}
	msg = strings.Join(strings.Fields(msg), " ")
	if msg == "" {
		return
	}
	if r := []rune(msg); len(r) > saidLen {
		msg = string(r[:saidLen]) + "..."
	}
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.ready {
		return
	}
	if len(i.said) == saidMax {
		i.said = append(i.said[:0], i.said[1:]...)
	}
	i.said = append(i.said, msg)
}

// onOther handles worker messages that answer no pending request: late
// responses for invocations that already timed out, and unsolicited ones.
func (i *Instance) onOther(m *rpc.StreamingMessage) {
	if i.opts.Log == nil {
		return
	}
	switch x := m.Content.(type) {
	case *rpc.StreamingMessage_InvocationResponse:
		id := x.InvocationResponse.GetInvocationId()
		i.mu.Lock()
		if i.abandoned[id] {
			delete(i.abandoned, id) // the slot is back
		} else {
			if len(i.late) > 1024 {
				clear(i.late)
			}
			i.late[id] = true
		}
		i.mu.Unlock()
		i.opts.Log.Debug("response for an invocation that is no longer waiting", "instance", i.ID(), "invocation", x.InvocationResponse.GetInvocationId())
	case *rpc.StreamingMessage_WorkerHeartbeat, *rpc.StreamingMessage_WorkerStatusResponse:
	default:
		i.opts.Log.Debug("unexpected message from worker", "instance", i.ID(), "message", fmt.Sprintf("%T", m.Content))
	}
}
