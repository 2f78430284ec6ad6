// Package call runs instances of call-protocol (Baetyl) workers: the worker
// is a gRPC server on an address the host chose, and the host calls
// /baetyl.Function/Call once per invocation.
package call

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"go.yaml.in/yaml/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/polyfn/polyfn/api/baetyl"
	"github.com/polyfn/polyfn/internal/config"
	"github.com/polyfn/polyfn/internal/invoke"
	"github.com/polyfn/polyfn/internal/peer"
	"github.com/polyfn/polyfn/internal/pool"
	"github.com/polyfn/polyfn/internal/tracing"
	"github.com/polyfn/polyfn/internal/worker"
)

// ContextMetadataKey is the gRPC metadata key under which the host sends the
// invocation context that FunctionMessage has no field for (trigger,
// deadline, http), as a JSON object. Runtimes that do not know it ignore it.
const ContextMetadataKey = "polyfn-context-bin"

// ResponseMetadataKey is the gRPC response header metadata key under which a
// worker sends the status and headers of an explicit HTTP response, as a
// JSON object {"status": 201, "headers": {...}}; Payload is the body.
const ResponseMetadataKey = "polyfn-response-bin"

// maxMessageSize is the largest message either side may send.
const maxMessageSize = 2147483647

// windowSize is the gRPC flow-control window of each call and of the
// connection: the largest gRPC's own window estimation reaches.
const windowSize = 16 << 20

// connectTimeout bounds one connection attempt to a worker, its check that
// the worker accepted it included (gRPC's minimum connect timeout).
const connectTimeout = time.Second

// readinessBackoff replaces grpc-go's default reconnect backoff (1 s base),
// so a worker is seen ready within milliseconds of listening.
var readinessBackoff = backoff.Config{BaseDelay: 5 * time.Millisecond, Multiplier: 1.5, Jitter: 0.1, MaxDelay: 100 * time.Millisecond}

// Options configure one instance.
type Options struct {
	// Functions are the functions the worker serves (one, or every function
	// of a shared-worker app).
	Functions []config.Function
	// Name tags logs: the function or app the instance serves.
	Name    string
	Env     map[string]string
	Runtime config.Runtime
	// ID names the instance in logs and in BAETYL_SERVICE_INSTANCE_NAME.
	ID string
	// Dir is the instance's private working directory; it is created, and
	// removed when the instance stops.
	Dir string
	Log *slog.Logger
	// Isolation confines the worker: resource limits, the user it runs as
	// (its directory and runtime config file are given to that user).
	Isolation worker.Isolation
	// Refusals, if not nil, counts connections to the worker's address
	// refused because another process serves it.
	Refusals peer.RefusalCounter
}

// Instance is what the pool runs invocations on, and one the pool retires
// after a timeout (RetireAfterTimeout).
var (
	_ pool.Instance       = (*Instance)(nil)
	_ pool.TimeoutRetirer = (*Instance)(nil)
)

// Instance is one running call-protocol worker.
type Instance struct {
	opts   Options
	proc   *worker.Process
	conn   *grpc.ClientConn
	client baetyl.FunctionClient
	// ready is set once the worker was first reached; refused holds the
	// last refusal of a connection to its address (peer.TCPServer,
	// peer.UnixServer).
	ready   atomic.Bool
	refused atomic.Pointer[peer.Refusal]
	// abortStart ends the wait for the worker to be ready (set before
	// the first dial).
	abortStart context.CancelCauseFunc
	// handshake is a standby worker's end of its standard input until it
	// is bound (standby.go); nil for other instances.
	handshake net.Conn
}

// runtimeConfig is the file a Baetyl runtime reads with -c.
type runtimeConfig struct {
	Name      string            `yaml:"name"`
	Functions []runtimeFunction `yaml:"functions"`
}

type runtimeFunction struct {
	Name    string `yaml:"name"`
	Handler string `yaml:"handler"`
	Codedir string `yaml:"codedir"`
	// Dependencies is the directory of the function's built dependencies
	// (polyfn's runtimes add it to their module search path).
	Dependencies string `yaml:"dependencies,omitempty"`
}

// Start starts the worker and waits until it accepts connections, it exits,
// the runtime's start timeout passes or ctx is done, whichever comes first.
// On any failure the process group is killed and the error says why,
// including the exit status and last stderr lines of a worker that exited.
func Start(ctx context.Context, o Options) (*Instance, error) {
	iso, err := o.Isolation.Lease()
	if err != nil {
		return nil, err
	}
	o.Isolation = iso
	inst, err := start(ctx, o)
	if err != nil {
		iso.Release() // a no-op once a started worker has ended it
	}
	return inst, err
}

func start(ctx context.Context, o Options) (*Instance, error) {
	if err := os.MkdirAll(o.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("instance directory: %w", err)
	}
	cfgPath, err := writeConfig(o)
	if err != nil {
		os.RemoveAll(o.Dir)
		return nil, err
	}
	addr, dialTarget, err := listenAddress(o.Runtime.Address, o.Dir)
	if err != nil {
		return nil, err
	}
	env := worker.ScrubbedEnv(o.Runtime.Env, o.Env, ownEnv(o, addr))
	proc, err := worker.Start(worker.Spec{
		Function:  o.Name,
		Instance:  o.ID,
		Command:   command(o.Runtime.Command, cfgPath),
		Dir:       o.Dir,
		Env:       env,
		Log:       o.Log,
		Isolation: o.Isolation,
	})
	if err != nil {
		os.RemoveAll(o.Dir)
		return nil, err
	}
	inst := &Instance{opts: o, proc: proc}
	if err := inst.connect(ctx, dialTarget); err != nil {
		inst.proc.Kill()
		if inst.conn != nil {
			inst.conn.Close()
		}
		os.RemoveAll(o.Dir)
		return nil, err
	}
	return inst, nil
}

// configPath is where the runtime config file of an instance whose
// directory is dir is written.
func configPath(dir string) string { return filepath.Join(dir, "service.yml") }

// writeConfig writes the runtime config file of o's functions into o.Dir,
// which must exist, and gives both to the worker's user.
func writeConfig(o Options) (string, error) {
	cfgPath := configPath(o.Dir)
	rc := runtimeConfig{Name: o.ID}
	for _, f := range o.Functions {
		rc.Functions = append(rc.Functions, runtimeFunction{Name: f.Name, Handler: f.Handler, Codedir: f.Codedir, Dependencies: f.Dependencies})
	}
	data, err := yaml.Marshal(rc)
	if err != nil {
		return "", err
	}
	if err := os.WriteFile(cfgPath, data, 0o600); err != nil {
		return "", fmt.Errorf("runtime config: %w", err)
	}
	if err := o.Isolation.Own(o.Dir, cfgPath); err != nil {
		return "", fmt.Errorf("instance directory: %w", err)
	}
	return cfgPath, nil
}

// ownEnv returns the variables the host sets for a worker of o listening
// on addr, over the runtime's and the function's.
func ownEnv(o Options, addr string) map[string]string {
	own := map[string]string{
		"BAETYL_SERVICE_INSTANCE_ADDRESS": addr,
		"BAETYL_SERVICE_INSTANCE_NAME":    o.ID,
	}
	if o.Isolation.OtherUser() {
		own["HOME"] = o.Dir // the host's home is not theirs
	}
	return own
}

// command returns the worker argv: {config} in any argument is replaced by
// path; when no argument holds it, "-c path" is appended.
func command(tmpl []string, path string) []string {
	out := make([]string, 0, len(tmpl)+2)
	found := false
	for _, a := range tmpl {
		if strings.Contains(a, "{config}") {
			found = true
			a = strings.ReplaceAll(a, "{config}", path)
		}
		out = append(out, a)
	}
	if !found {
		out = append(out, "-c", path)
	}
	return out
}

// dialTarget is where the host dials a worker.
type dialTarget struct{ network, address string }

// listenAddress picks the address the worker listens on and the target the
// host dials.
func listenAddress(kind, dir string) (addr string, target dialTarget, err error) {
	if kind == "unix" {
		sock := filepath.Join(dir, "worker.sock")
		return "unix:" + sock, dialTarget{"unix", sock}, nil
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", target, fmt.Errorf("pick a port: %w", err)
	}
	addr = l.Addr().String()
	l.Close()
	return addr, dialTarget{"tcp", addr}, nil
}

// dial opens a connection to the worker and checks that the worker's
// process tree is what serves it (the worker's address could have been
// taken, or shared, by another process); a connection that is not the
// worker's is closed, logged, counted and never used. A refusal during the
// start fails it; one later (a reconnection) replaces the instance.
func (i *Instance) dial(target dialTarget) func(context.Context, string) (net.Conn, error) {
	return func(ctx context.Context, _ string) (net.Conn, error) {
		var d net.Dialer
		c, err := d.DialContext(ctx, target.network, target.address)
		if err != nil {
			return nil, err
		}
		switch cc := c.(type) {
		case *net.UnixConn:
			_, err = peer.UnixServer(i.proc.Pid(), cc)
		case *net.TCPConn:
			_, err = peer.TCPServer(ctx, i.proc.Pid(), cc.LocalAddr().(*net.TCPAddr).AddrPort(), cc.RemoteAddr().(*net.TCPAddr).AddrPort())
		}
		if err == nil {
			return c, nil
		}
		c.Close()
		var r *peer.Refusal
		if !errors.As(err, &r) {
			return nil, err // not accepted in time: gRPC dials again
		}
		i.refused.Store(r)
		i.abortStart(r)
		if i.opts.Refusals != nil {
			i.opts.Refusals.WorkerConnectionRefused("call", r.Reason)
		}
		if i.opts.Log != nil {
			i.opts.Log.Warn("connection to the worker refused: its address is not served by the worker",
				append([]any{"function", i.opts.Name, "instance", i.opts.ID, "address", target.address, "error", r}, r.LogArgs()...)...)
		}
		if i.ready.Load() {
			go i.proc.Kill() // the pool replaces it; ExitError says why
		}
		return nil, err
	}
}

func (i *Instance) connect(ctx context.Context, target dialTarget) error {
	// The dialer ignores the address gRPC resolved: it dials target.
	authority := target.address
	if target.network == "unix" {
		authority = "localhost" // what gRPC sends for unix:// targets
	}
	conn, err := grpc.NewClient("passthrough:///"+target.address,
		grpc.WithContextDialer(i.dial(target)), grpc.WithAuthority(authority),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: readinessBackoff, MinConnectTimeout: connectTimeout}),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxMessageSize), grpc.MaxCallSendMsgSize(maxMessageSize)),
		// Fixed flow-control windows, as large as the dynamic ones may grow:
		// with them set, gRPC sends no BDP-estimation pings (a ping and its
		// acknowledgement every round trip, under load).
		grpc.WithInitialWindowSize(windowSize), grpc.WithInitialConnWindowSize(windowSize),
	)
	if err != nil {
		return fmt.Errorf("dial worker: %w", err)
	}
	i.conn = conn
	timeout := i.opts.Runtime.StartTimeout.D()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	ctx, stop := i.proc.CancelOnExit(ctx) // stop waiting as soon as the process exits
	defer stop()
	// A refused connection ends the wait: gRPC's state need not change
	// (it stays in TRANSIENT_FAILURE across failed attempts).
	ctx, abort := context.WithCancelCause(ctx)
	defer abort(nil)
	i.abortStart = abort
	conn.Connect()
	for {
		s := conn.GetState()
		if s == connectivity.Ready {
			i.client = baetyl.NewFunctionClient(conn)
			i.ready.Store(true)
			return nil
		}
		if r := i.refused.Load(); r != nil {
			return fmt.Errorf("worker address refused: %w", r)
		}
		if s == connectivity.TransientFailure || s == connectivity.Idle {
			conn.Connect()
		}
		if !conn.WaitForStateChange(ctx, s) {
			break
		}
	}
	if r := i.refused.Load(); r != nil {
		return fmt.Errorf("worker address refused: %w", r)
	}
	if i.proc.Exited() {
		return fmt.Errorf("worker exited before it was ready: %w", i.proc.ExitError())
	}
	if ctx.Err() != nil && errors.Is(context.Cause(ctx), context.DeadlineExceeded) {
		return fmt.Errorf("worker not ready within start timeout %s (runtimes.%s.start_timeout)", timeout, i.opts.Runtime.Name)
	}
	return fmt.Errorf("worker start aborted: %w", ctx.Err())
}

// ID returns the instance id.
func (i *Instance) ID() string { return i.opts.ID }

// Pid returns the worker's process id.
func (i *Instance) Pid() int { return i.proc.Pid() }

// Done is closed when the worker process has exited.
func (i *Instance) Done() <-chan struct{} { return i.proc.Done() }

// ExitError says how a worker that ended on its own ended (its exit status
// and last stderr lines), or why the host replaced it; it is nil when the
// worker was stopped.
func (i *Instance) ExitError() error {
	if r := i.refused.Load(); r != nil && i.ready.Load() {
		return fmt.Errorf("replaced: a connection to its address was refused: %w", r)
	}
	if i.proc.Stopped() {
		return nil
	}
	return i.proc.ExitError()
}

// Stop asks the worker to exit (SIGTERM), waits up to the runtime's stop
// grace, then kills its process group. It blocks until the worker is gone and
// is safe to call more than once.
func (i *Instance) Stop(ctx context.Context) {
	i.proc.Stop(ctx, i.opts.Runtime.StopGrace.D())
	if i.handshake != nil {
		i.handshake.Close()
	}
	if i.conn != nil {
		i.conn.Close()
	}
	os.RemoveAll(i.opts.Dir)
}

// Invoke runs one invocation. ctx carries the deadline; cancelling it
// cancels the call on the worker.
func (i *Instance) Invoke(ctx context.Context, req *invoke.Request) (*invoke.Result, error) {
	msg := &baetyl.FunctionMessage{
		ID:               req.MessageID,
		QOS:              req.QOS,
		Topic:            req.Topic,
		Payload:          req.Payload,
		Timestamp:        req.Timestamp.Unix(),
		FunctionName:     req.Function,
		FunctionInvokeID: req.ID,
	}
	ctx, span := tracing.Start(ctx, "call /baetyl.Function/Call", trace.SpanKindClient, attribute.String("polyfn.instance", i.opts.ID))
	defer span.End()
	if md := contextMetadata(ctx, req); md != nil {
		ctx = metadata.AppendToOutgoingContext(ctx, ContextMetadataKey, string(md))
	}
	if i.proc.Exited() {
		e := invoke.Errorf(invoke.KindWorkerCrashed, "instance %s had exited: %v", i.opts.ID, i.proc.ExitError())
		e.Undelivered = true
		return nil, e
	}
	var header metadata.MD
	out, err := i.client.Call(ctx, msg, grpc.Header(&header))
	if err != nil {
		return nil, i.mapError(ctx, req, err)
	}
	res := &invoke.Result{Payload: out.Payload}
	if v := header.Get(ResponseMetadataKey); len(v) > 0 {
		var hr invoke.HTTPResponse
		if err := json.Unmarshal([]byte(v[0]), &hr); err != nil {
			return nil, &invoke.Error{Kind: invoke.KindFunction, Type: "InvalidResponse", Message: fmt.Sprintf("%s metadata is not a JSON response object: %v", ResponseMetadataKey, err)}
		}
		if err := hr.Validate(); err != nil {
			return nil, &invoke.Error{Kind: invoke.KindFunction, Type: "InvalidResponse", Message: err.Error()}
		}
		res.HTTP = &hr
	}
	return res, nil
}

// invocationContext is the JSON sent under ContextMetadataKey.
type invocationContext struct {
	Trigger     invoke.Trigger   `json:"trigger"`
	Deadline    string           `json:"deadline,omitempty"`
	HTTP        *invoke.HTTPInfo `json:"http,omitempty"`
	TraceParent string           `json:"traceparent,omitempty"`
	TraceState  string           `json:"tracestate,omitempty"`
	// ScheduledTime is the tick of a timer invocation, to the nanosecond
	// (the message's Timestamp has whole seconds).
	ScheduledTime string `json:"scheduledTime,omitempty"`
}

func contextMetadata(ctx context.Context, req *invoke.Request) []byte {
	ic := invocationContext{Trigger: req.Trigger, HTTP: req.HTTP}
	ic.TraceParent, ic.TraceState = tracing.TraceParent(ctx)
	if d, ok := ctx.Deadline(); ok {
		ic.Deadline = d.UTC().Format(time.RFC3339Nano)
	}
	if req.Trigger == invoke.TriggerTimer {
		ic.ScheduledTime = req.Timestamp.UTC().Format(time.RFC3339Nano)
	}
	return ic.appendJSON(make([]byte, 0, 256))
}

// appendJSON appends ic as json.Marshal encodes it, without reflection: it
// runs on every invocation.
func (ic *invocationContext) appendJSON(b []byte) []byte {
	b = append(b, `{"trigger":`...)
	b = invoke.AppendJSONString(b, string(ic.Trigger))
	field := func(name, v string) {
		if v != "" {
			b = append(b, `,"`...)
			b = append(b, name...)
			b = append(b, `":`...)
			b = invoke.AppendJSONString(b, v)
		}
	}
	field("deadline", ic.Deadline)
	if ic.HTTP != nil {
		b = append(b, `,"http":`...)
		b = ic.HTTP.AppendJSON(b)
	}
	field("traceparent", ic.TraceParent)
	field("tracestate", ic.TraceState)
	field("scheduledTime", ic.ScheduledTime)
	return append(b, '}')
}

// userErrorRE matches the error detail polyfn's runtimes send for a
// function's exception: "[UserCodeInvoke] ValueError: message".
var userErrorRE = regexp.MustCompile(`(?s)^\[(UserCode\w*)\]\s*([A-Za-z_][\w.]*): ?(.*)$`)

func (i *Instance) mapError(ctx context.Context, req *invoke.Request, err error) error {
	st := status.Convert(err)
	switch {
	case ctx.Err() != nil && errors.Is(ctx.Err(), context.DeadlineExceeded), st.Code() == codes.DeadlineExceeded:
		return invoke.TimeoutError(ctx, fmt.Sprintf("function %s did not finish", req.Function))
	case ctx.Err() != nil:
		return invoke.Errorf(invoke.KindUnavailable, "invocation cancelled: %v", context.Cause(ctx))
	case st.Code() == codes.Unavailable || st.Code() == codes.Canceled:
		return i.lost(st)
	case st.Code() == codes.ResourceExhausted && messageSizeRE.MatchString(st.Message()):
		return tooLarge(req, st)
	}
	msg := st.Message()
	if m := userErrorRE.FindStringSubmatch(msg); m != nil {
		return &invoke.Error{Kind: invoke.KindFunction, Type: m[2], Message: m[3]}
	}
	if typ, message, ok, parsed := parseBaetylError(msg); ok {
		if !parsed {
			// The function raised, but its exception's repr is not one
			// this reads: keep the message as it came.
			typ, message = "FunctionError", msg
		}
		return &invoke.Error{Kind: invoke.KindFunction, Type: typ, Message: message}
	}
	if strings.Contains(msg, "function not found") {
		return &invoke.Error{Kind: invoke.KindFunction, Type: "FunctionNotFound", Message: msg}
	}
	if i.crashed() {
		return i.lost(st)
	}
	return &invoke.Error{Kind: invoke.KindFunction, Type: "FunctionError", Message: fmt.Sprintf("%s: %s", st.Code(), msg)}
}

// messageSizeRE matches gRPC's report of a message above a size limit, as
// grpc-go, grpc-python and grpc-node word it: "received message larger
// than max (5242935 vs. 4194304)".
var messageSizeRE = regexp.MustCompile(`(?i)message larger than max(?: \((\d+) vs\. (\d+)\))?`)

// tooLarge is the error of an invocation whose message is larger than the
// worker's gRPC receive limit (4 MiB unless the runtime raises it): the
// payload is too large for this worker, whatever http.max_body allows.
func tooLarge(req *invoke.Request, st *status.Status) *invoke.Error {
	if m := messageSizeRE.FindStringSubmatch(st.Message()); m != nil && m[1] != "" {
		return invoke.Errorf(invoke.KindTooLarge, "the worker of function %s accepts messages of at most %s bytes (its gRPC receive limit); this invocation's was %s bytes (a payload of %d): send less, or raise the runtime's limit",
			req.Function, m[2], m[1], len(req.Payload))
	}
	return invoke.Errorf(invoke.KindTooLarge, "the payload of %d bytes is larger than the worker of function %s accepts: %s", len(req.Payload), req.Function, st.Message())
}

func (i *Instance) lost(st *status.Status) error {
	if i.proc.OOMKilled(time.Second) {
		return &invoke.Error{Kind: invoke.KindWorkerCrashed, Type: invoke.TypeOutOfMemory,
			Message: fmt.Sprintf("instance %s lost while running the invocation: %s", i.opts.ID, i.proc.ExitStatus())}
	}
	if i.crashed() {
		return invoke.Errorf(invoke.KindWorkerCrashed, "instance %s exited while running the invocation: %v", i.opts.ID, i.proc.ExitError())
	}
	msg := fmt.Sprintf("instance %s lost while running the invocation: %s", i.opts.ID, st.Message())
	if note := i.proc.PidsLimitNote(); note != "" {
		msg += "; " + note
	}
	return invoke.Errorf(invoke.KindWorkerCrashed, "%s", msg)
}

// exitWait bounds how long a failed call waits for its worker's exit to be
// observed, to report how the worker ended.
const exitWait = 50 * time.Millisecond

// crashed waits briefly for the process to exit: a worker that died
// mid-call fails the call a moment before its exit is observed.
func (i *Instance) crashed() bool { return i.proc.ExitedWithin(exitWait) }

// RetireAfterTimeout is true: the call protocol cannot tell whether a worker
// stopped running an invocation whose call the host cancelled, so the pool
// replaces the instance once its other invocations have finished.
func (i *Instance) RetireAfterTimeout() bool { return true }
