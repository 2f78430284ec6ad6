package polyfn

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Handler is a polyfn function.
//
// It returns the invocation's result: nil is an empty payload, []byte goes
// out as is, a [Response] or *Response is an explicit HTTP response, and any
// other value is JSON-encoded (a string becomes a JSON string). A value that
// cannot be encoded fails the invocation with a UserCodeReturn error.
//
// A returned error fails the invocation: the host reports its type (see
// [ErrorTyper]) and message, and the worker keeps serving. A panic is
// recovered and reported as an error of type Panic, with the stack in the
// logs.
//
// ctx is cancelled when the invocation's deadline passes, when the host
// cancels the invocation, and when the grace period of a stopping worker
// runs out. [FromContext] returns the invocation's [Context].
//
// Invocations run concurrently: a Handler must be safe for concurrent use.
type Handler func(ctx context.Context, event Event) (any, error)

// Exit statuses of [Start].
const (
	exitOK     = 0
	exitFailed = 1
	exitUsage  = 2
)

// version is the SDK's version, reported to the host.
const version = "0.1.0"

// defaultGrace is how long in-flight invocations get when the worker stops
// on a signal, or on a WorkerTerminate without a grace period.
const defaultGrace = 30 * time.Second

// maxMessageSize is the largest gRPC message either side may send.
const maxMessageSize = 2147483647

// Start serves h in the protocol the process was launched for (see the
// package documentation) until it is stopped, then exits the process: 0
// after a clean stop (SIGTERM, SIGINT or the host's WorkerTerminate, with
// in-flight invocations drained within the grace period), 1 when the worker
// fails (a bad config file, a lost stream), 2 for bad arguments or no
// address to listen on. A second SIGTERM or SIGINT exits at once with 1.
// Start does not return.
func Start(h Handler) {
	ctx, cancel := context.WithCancel(context.Background())
	signals := make(chan os.Signal, 2)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		sig := <-signals
		runtimeLog(defaultSink(), slog.LevelInfo, "", "received %s: stopping", sig)
		cancel()
		sig = <-signals
		runtimeLog(defaultSink(), slog.LevelWarn, "", "received %s again: exiting without waiting for invocations in flight", sig)
		os.Exit(exitFailed)
	}()
	err := Serve(ctx, h, os.Args[1:])
	if err == nil {
		os.Exit(exitOK)
	}
	runtimeLog(defaultSink(), slog.LevelError, "", "%v", err)
	var usage *usageError
	if errors.As(err, &usage) {
		os.Exit(exitUsage)
	}
	os.Exit(exitFailed)
}

// Serve serves h until ctx is done or, in stream mode, the host sends
// WorkerTerminate; args are the process's arguments (os.Args[1:]), which
// choose the protocol as described in the package documentation. Unknown
// arguments are ignored with a warning.
//
// When ctx is done, Serve stops taking new invocations and gives those in
// flight a grace period (call mode: server.grace in the config file, default
// 30 s; stream mode: 30 s, or the WorkerTerminate's grace period); after it
// their ctx is cancelled and Serve returns without waiting for them. It
// returns nil after such a clean stop, and an error when serving failed: bad
// arguments, an unreadable config file, an address it cannot listen on, a
// stream to the host that cannot be opened or broke.
//
// Runtime messages and the records of [Logger] go to stderr as JSON lines
// (and in stream mode, while the stream is up, to the host).
func Serve(ctx context.Context, h Handler, args []string) error {
	return serve(ctx, h, args, defaultSink())
}

func serve(ctx context.Context, h Handler, args []string, sink logSink) error {
	if h == nil {
		return errors.New("polyfn: nil handler")
	}
	l, err := parseLaunch(args, os.Getenv(workerIDEnv))
	if err != nil {
		return err
	}
	// The function, and what it starts, need not see the worker id.
	os.Unsetenv(workerIDEnv)
	if len(l.unknown) > 0 {
		runtimeLog(sink, slog.LevelWarn, "", "ignoring unknown arguments: %s", strings.Join(l.unknown, " "))
	}
	if l.stream != nil {
		runtimeLog(sink, slog.LevelInfo, "", "polyfn go runtime %s starting in stream mode: host %s, worker %s (%s)",
			version, l.stream.target(), l.stream.workerID, runtime.Version())
		return serveStream(ctx, h, *l.stream, sink)
	}
	return serveCall(ctx, h, l.config, sink)
}

// usageError is a launch the worker cannot run with (exit status 2).
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// launch is what the arguments ask for.
type launch struct {
	config  string         // call mode's config file
	stream  *streamOptions // set for stream mode
	unknown []string
}

// streamOptions say where the host is and who this worker is.
type streamOptions struct {
	host       string
	port       int
	workerID   string
	requestID  string
	maxMessage int
}

// target is the host's address, host:port (IPv6 in brackets).
func (o streamOptions) target() string {
	return joinHostPort(o.host, o.port)
}

func joinHostPort(host string, port int) string {
	if strings.Contains(host, ":") && !strings.HasPrefix(host, "[") {
		host = "[" + host + "]"
	}
	return host + ":" + strconv.Itoa(port)
}

// defaultConfigPath is Baetyl's default config file, relative to the
// working directory.
const defaultConfigPath = "etc/baetyl/service.yml"

// workerIDEnv carries the worker id when polyfn's host starts the worker:
// the command line, which every local user can read (/proc/PID/cmdline),
// then holds no id.
const workerIDEnv = "POLYFN_WORKER_ID"

// launchFlags are the arguments that take a value, by name without dashes.
var launchFlags = map[string]bool{
	"c": true, "config": true,
	"host": true, "port": true, "workerId": true, "requestId": true, "grpcMaxMessageLength": true,
	"functions-uri": true, "functions-worker-id": true, "functions-request-id": true,
	"functions-grpc-max-message-length": true,
}

// parseLaunch reads the arguments: -c FILE (call mode), or the host's
// stream-mode arguments in either spelling (--host/--port/--workerId/
// --requestId/--grpcMaxMessageLength, or --functions-uri/
// --functions-worker-id/--functions-request-id/
// --functions-grpc-max-message-length). Flags take one or two dashes and
// "--flag value" or "--flag=value". envWorkerID is the worker id from the
// environment (workerIDEnv), used when no argument gives one.
func parseLaunch(args []string, envWorkerID string) (launch, error) {
	values := map[string]string{}
	var l launch
	for i := 0; i < len(args); i++ {
		arg := args[i]
		if !strings.HasPrefix(arg, "-") || arg == "-" || arg == "--" {
			l.unknown = append(l.unknown, arg)
			continue
		}
		name, value, hasValue := strings.Cut(strings.TrimLeft(arg, "-"), "=")
		if !launchFlags[name] {
			l.unknown = append(l.unknown, arg)
			continue
		}
		if !hasValue {
			if i+1 >= len(args) {
				return launch{}, usagef("argument %s needs a value", arg)
			}
			i++
			value = args[i]
		}
		if name == "c" {
			name = "config"
		}
		values[name] = value
	}
	l.config = defaultConfigPath
	if c, ok := values["config"]; ok {
		l.config = c
	}
	stream, err := streamLaunch(values, envWorkerID)
	if err != nil {
		return launch{}, err
	}
	l.stream = stream
	return l, nil
}

// streamLaunch combines the two spellings of the stream-mode arguments; nil
// when neither asks for stream mode. --host/--port win over --functions-uri.
func streamLaunch(v map[string]string, envWorkerID string) (*streamOptions, error) {
	host, hasHost := v["host"]
	portText, hasPort := v["port"]
	uri, hasURI := v["functions-uri"]
	if !hasHost && !hasPort && !hasURI {
		return nil, nil
	}
	var port int
	if hasHost && hasPort {
		p, err := strconv.Atoi(portText)
		if err != nil {
			return nil, usagef("--port %q is not a number", portText)
		}
		port = p
	} else {
		if !hasURI {
			return nil, usagef("--host and --port go together (or pass --functions-uri http://HOST:PORT/)")
		}
		h, p, err := splitURI(uri)
		if err != nil {
			return nil, err
		}
		host, port = h, p
	}
	if port <= 0 || port >= 65536 {
		return nil, usagef("port %d is out of range", port)
	}
	o := &streamOptions{host: host, port: port, maxMessage: maxMessageSize}
	o.workerID = firstNonEmpty(v["workerId"], v["functions-worker-id"], envWorkerID)
	if o.workerID == "" {
		return nil, usagef("stream mode needs a worker id: --workerId, --functions-worker-id or %s", workerIDEnv)
	}
	o.requestID = firstNonEmpty(v["requestId"], v["functions-request-id"])
	if text := firstNonEmpty(v["grpcMaxMessageLength"], v["functions-grpc-max-message-length"]); text != "" {
		n, err := strconv.ParseInt(text, 10, 64)
		if err != nil || n < 1 {
			return nil, usagef("max message length %q must be a positive number", text)
		}
		o.maxMessage = int(min(n, maxMessageSize))
	}
	return o, nil
}

func splitURI(uri string) (string, int, error) {
	raw := uri
	if !strings.Contains(raw, "//") {
		raw = "//" + raw
	}
	u, err := url.Parse(raw)
	if err != nil || u.Hostname() == "" || u.Port() == "" {
		return "", 0, usagef("--functions-uri %q: expected http://HOST:PORT/", uri)
	}
	port, err := strconv.Atoi(u.Port())
	if err != nil {
		return "", 0, usagef("--functions-uri %q: expected http://HOST:PORT/", uri)
	}
	return u.Hostname(), port, nil
}

func firstNonEmpty(values ...string) string {
	for _, v := range values {
		if v != "" {
			return v
		}
	}
	return ""
}
