package host_test

import (
	"fmt"
	"io"
	"os"
	"strconv"
	"sync/atomic"
	"time"

	rpc "github.com/polyfn/polyfn/api/azure"
)

// runFakeAzureApp behaves on the wire as the official Node.js worker does
// with a v4 app (worker indexing), for what an app declares beyond HTTP:
//
//   - azapp-mixed: the app has HTTP functions (hello, fails, slow), a
//     timer function (tick) and a queue-triggered one (orders) that the host
//     must not load. hello logs at every level, as the function (User) and
//     as the worker (System); fails throws with a stack trace; slow sleeps
//     ?ms= milliseconds. Outside invocations the worker logs at Debug and
//     Warning.
//   - azapp-says: the app's entry point does not load: the worker logs why
//     (an Error RpcLog, as the Node.js worker does) and lists no function.
//   - azapp-stderr: the same, but the worker only prints why on stderr,
//     with a stack trace longer than the lines polyfn quotes.
func runFakeAzureApp(mode string) {
	if mode == "azapp-stderr" {
		if leak := os.Getenv("LEAK"); leak != "" {
			// A worker that prints its environment.
			fmt.Fprintln(os.Stderr, "Error: LEAK="+leak)
		}
		fmt.Fprintln(os.Stderr, "Error: Cannot find module 'left-pad' from /app/dist/index.js")
		fmt.Fprintln(os.Stderr, "Require stack:")
		fmt.Fprintln(os.Stderr, "- /app/dist/index.js")
		for i := 0; i < 8; i++ {
			fmt.Fprintf(os.Stderr, "    at Module._load (node:internal/modules/cjs/loader:%d:27)\n", 1000+i)
		}
	}
	st, send, workerID := dialFakeStream()
	send(&rpc.StreamingMessage{Content: &rpc.StreamingMessage_StartStream{StartStream: &rpc.StartStream{WorkerId: workerID}}})
	success := &rpc.StatusResult{Status: rpc.StatusResult_Success}
	log := func(invocation string, cat rpc.RpcLog_RpcLogCategory, lvl rpc.RpcLog_Level, msg string) {
		send(&rpc.StreamingMessage{Content: &rpc.StreamingMessage_RpcLog{RpcLog: &rpc.RpcLog{
			InvocationId: invocation, LogCategory: cat, Level: lvl, Message: msg}}})
	}
	names := map[string]string{} // function id → name
	for {
		m, err := st.Recv()
		if err != nil {
			if err != io.EOF {
				fmt.Fprintln(os.Stderr, "stream ended:", err)
			}
			os.Exit(9)
		}
		switch x := m.Content.(type) {
		case *rpc.StreamingMessage_WorkerInitRequest:
			send(&rpc.StreamingMessage{RequestId: m.RequestId, Content: &rpc.StreamingMessage_WorkerInitResponse{WorkerInitResponse: &rpc.WorkerInitResponse{
				Result: success, Capabilities: nodeCaps}}})
		case *rpc.StreamingMessage_FunctionsMetadataRequest:
			r := &rpc.FunctionMetadataResponse{Result: success}
			switch mode {
			case "azapp-mixed":
				log("", rpc.RpcLog_System, rpc.RpcLog_Debug, "worker-debug-at-start")
				log("", rpc.RpcLog_System, rpc.RpcLog_Warning, "worker-warning-at-start")
				httpFn := func(name, route string) *rpc.RpcFunctionMetadata {
					return &rpc.RpcFunctionMetadata{Name: name, FunctionId: "id-" + name, Language: "node", RawBindings: []string{
						`{"authLevel":"anonymous","methods":["GET","POST"],"route":"` + route + `","type":"httpTrigger","name":"req","direction":"in"}`,
						`{"type":"http","name":"$return","direction":"out"}`,
					}}
				}
				r.FunctionMetadataResults = []*rpc.RpcFunctionMetadata{
					httpFn("hello", "hello/{name?}"), httpFn("fails", "fails"), httpFn("slow", "slow"),
					{Name: "orders", FunctionId: "id-orders", Language: "node", RawBindings: []string{
						`{"type":"queueTrigger","name":"queueItem","direction":"in","queueName":"orders","connection":"AzureWebJobsStorage"}`}},
					{Name: "tick", FunctionId: "id-tick", Language: "node", RawBindings: []string{
						`{"type":"timerTrigger","name":"myTimer","direction":"in","schedule":"0 */5 * * * *"}`}},
				}
			case "azapp-says":
				log("", rpc.RpcLog_System, rpc.RpcLog_Error, `Worker was unable to load entry point "dist/index.js": Cannot find module 'express'`)
				r.UseDefaultMetadataIndexing = true
			case "azapp-stderr":
				r.UseDefaultMetadataIndexing = true
			}
			send(&rpc.StreamingMessage{RequestId: m.RequestId, Content: &rpc.StreamingMessage_FunctionMetadataResponse{FunctionMetadataResponse: r}})
		case *rpc.StreamingMessage_FunctionLoadRequest:
			req := x.FunctionLoadRequest
			r := &rpc.FunctionLoadResponse{FunctionId: req.FunctionId, Result: success}
			if req.Metadata.GetName() == "orders" {
				r.Result = &rpc.StatusResult{Status: rpc.StatusResult_Failure, Exception: &rpc.RpcException{
					Message: "the host loaded a queue-triggered function it cannot serve"}}
			}
			names[req.FunctionId] = req.Metadata.GetName()
			send(&rpc.StreamingMessage{RequestId: m.RequestId, Content: &rpc.StreamingMessage_FunctionLoadResponse{FunctionLoadResponse: r}})
		case *rpc.StreamingMessage_InvocationRequest:
			go func(req *rpc.InvocationRequest) {
				send(&rpc.StreamingMessage{RequestId: m.RequestId, Content: &rpc.StreamingMessage_InvocationResponse{
					InvocationResponse: fakeAzureAppInvoke(names[req.FunctionId], req, log)}})
			}(x.InvocationRequest)
		case *rpc.StreamingMessage_WorkerTerminate:
			os.Exit(0)
		}
	}
}

// slowRunning counts the invocations of slow the worker runs.
var slowRunning atomic.Int32

func fakeAzureAppInvoke(name string, req *rpc.InvocationRequest, log func(string, rpc.RpcLog_RpcLogCategory, rpc.RpcLog_Level, string)) *rpc.InvocationResponse {
	id := req.InvocationId
	resp := &rpc.InvocationResponse{InvocationId: id, Result: &rpc.StatusResult{Status: rpc.StatusResult_Success}}
	ok := func(body string) *rpc.InvocationResponse {
		resp.ReturnValue = &rpc.TypedData{Data: &rpc.TypedData_Http{Http: &rpc.RpcHttp{
			StatusCode: "200", Headers: map[string]string{"content-type": "text/plain"},
			Body: &rpc.TypedData{Data: &rpc.TypedData_String_{String_: body}}}}}
		return resp
	}
	switch name {
	case "hello":
		for lvl := rpc.RpcLog_Trace; lvl <= rpc.RpcLog_Critical; lvl++ {
			log(id, rpc.RpcLog_User, lvl, "user-"+lvl.String()+"-"+id)
			log(id, rpc.RpcLog_System, lvl, "system-"+lvl.String()+"-"+id)
		}
		return ok("hello")
	case "fails":
		// As the Node.js worker sends it: no type, the class in the stack.
		resp.Result = &rpc.StatusResult{Status: rpc.StatusResult_Failure, Exception: &rpc.RpcException{
			Message:    "Cannot read properties of undefined (reading 'id')",
			StackTrace: "TypeError: Cannot read properties of undefined (reading 'id')\n    at fails (/app/dist/index.js:7:21)"}}
		return resp
	case "slow":
		n := slowRunning.Add(1)
		defer slowRunning.Add(-1)
		ms, _ := strconv.Atoi(req.InputData[0].GetData().GetHttp().GetNullableQuery()["ms"].GetValue())
		time.Sleep(time.Duration(ms) * time.Millisecond)
		return ok(fmt.Sprintf("slow running=%d", n))
	}
	resp.Result = &rpc.StatusResult{Status: rpc.StatusResult_Failure, Exception: &rpc.RpcException{Message: "unknown function " + name}}
	return resp
}
