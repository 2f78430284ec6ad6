// Package polyfn is the Go SDK for polyfn functions.
//
// A Go function is a main package that hands one [Handler] to [Start]:
//
//	func main() {
//		polyfn.Start(func(ctx context.Context, event polyfn.Event) (any, error) {
//			var in struct{ Name string }
//			if err := event.Decode(&in); err != nil {
//				return nil, err
//			}
//			polyfn.Logger(ctx).Info("greeting", "name", in.Name)
//			return map[string]string{"greeting": "hi " + in.Name}, nil
//		})
//	}
//
// The built binary is a polyfn worker. The host starts one worker process
// per function and talks to it in one of its two protocols, chosen by how
// the process is launched (docs/protocols.md):
//
//   - stream (Azure Functions language-worker contract), when the arguments
//     name the host: --host H --port P --workerId W (or --functions-uri
//     http://H:P/ --functions-worker-id W; polyfn's host passes W in the
//     environment variable POLYFN_WORKER_ID instead). The worker dials the host and
//     serves every function the host loads on the stream, all with the same
//     handler; [Context.FunctionName] says which one an invocation is for.
//   - call (Baetyl function runtime), otherwise: the worker listens on
//     BAETYL_SERVICE_INSTANCE_ADDRESS (127.0.0.1:PORT or unix:/path) and
//     serves baetyl.Function/Call for the functions listed in the config
//     file given with -c FILE (default etc/baetyl/service.yml).
//
// The programming model is the same in both:
//
//   - the [Event] is the payload: JSON-decoded when it parses, else raw
//     bytes; an empty payload is {} ([Event.Decode] into a struct or map
//     works, [Event.Raw] is the original bytes);
//   - the return value nil is an empty result, []byte goes out as is, a
//     [Response] (or *Response) is an explicit HTTP response, anything else
//     is JSON-encoded (so a string becomes a JSON string);
//   - a returned error fails the invocation with the error's type and
//     message (see [Handler]); a panic is recovered, reported with type
//     Panic and its stack, and the worker keeps serving;
//   - the invocation's [Context] (function, invocation id, trigger, message
//     fields, deadline, HTTP request) comes from [FromContext], and its
//     deadline is the ctx deadline; [Logger] writes records tagged with the
//     function and invocation id.
//
// Invocations run concurrently, each in its own goroutine. SIGTERM or
// SIGINT (or, in stream mode, the host's WorkerTerminate) stops the worker:
// no new invocations, those in flight get a grace period, then the process
// exits 0.
package polyfn
