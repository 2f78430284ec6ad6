package host_test

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	rpc "github.com/polyfn/polyfn/api/azure"
)

// Capabilities the official workers advertise (DESIGN.md).
var (
	nodeCaps = map[string]string{
		"RawHttpBodyBytes": "true", "RpcHttpTriggerMetadataRemoved": "true", "RpcHttpBodyOnly": "true",
		"IgnoreEmptyValuedRpcHttpHeaders": "true", "UseNullableValueDictionaryForHttp": "true",
		"WorkerStatus": "true", "TypedDataCollection": "true", "HandlesWorkerTerminateMessage": "true",
	}
	pythonCaps = map[string]string{
		"RawHttpBodyBytes": "true", "TypedDataCollection": "true", "RpcHttpBodyOnly": "true",
		"WorkerStatus": "true", "RpcHttpTriggerMetadataRemoved": "true", "SharedMemoryDataTransfer": "1",
	}
)

// runFakeAzureWorker behaves on the wire as the official workers do:
//
//   - azure-node: the Node.js 3.x worker with a v4 app (worker indexing,
//     generated trigger binding name, nullable header maps, the response in
//     return_value as bytes);
//   - azure-python: the Python 4.x worker with a function.json app (host
//     indexing via use_default_metadata_indexing, plain maps, the response
//     in output_data under "res" as a string with no content type; it
//     ignores WorkerTerminate);
//   - azure-index-fail: a worker whose indexing fails.
func runFakeAzureWorker(mode string) {
	st, send, workerID := dialFakeStream()
	send(&rpc.StreamingMessage{Content: &rpc.StreamingMessage_StartStream{StartStream: &rpc.StartStream{WorkerId: workerID}}})
	success := &rpc.StatusResult{Status: rpc.StatusResult_Success}
	loaded := map[string]*rpc.RpcFunctionMetadata{}
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
			caps := nodeCaps
			if mode != "azure-node" {
				caps = pythonCaps
			}
			send(&rpc.StreamingMessage{RequestId: m.RequestId, Content: &rpc.StreamingMessage_WorkerInitResponse{WorkerInitResponse: &rpc.WorkerInitResponse{
				Result: success, Capabilities: caps, WorkerMetadata: &rpc.WorkerMetadata{RuntimeName: mode}}}})
		case *rpc.StreamingMessage_FunctionsMetadataRequest:
			r := &rpc.FunctionMetadataResponse{Result: success}
			switch mode {
			case "azure-node":
				r.FunctionMetadataResults = []*rpc.RpcFunctionMetadata{{
					Name: "hello", FunctionId: "node-fn-1", Directory: x.FunctionsMetadataRequest.FunctionAppDirectory,
					ScriptFile: "dist/src/functions/*.js", Language: "node",
					RawBindings: []string{
						`{"authLevel":"anonymous","methods":["GET","POST"],"route":"hello/{name?}","type":"httpTrigger","name":"httpTrigger624a61988c","direction":"in"}`,
						`{"type":"http","name":"$return","direction":"out"}`,
					},
					Properties: map[string]string{"worker.functionId": "node-fn-1"},
				}, {
					Name: "broken", FunctionId: "node-fn-2",
					Status: &rpc.StatusResult{Status: rpc.StatusResult_Failure, Exception: &rpc.RpcException{Message: "SyntaxError: Unexpected token"}},
				}}
			case "azure-python":
				r.UseDefaultMetadataIndexing = true
			case "azure-index-fail":
				r.Result = &rpc.StatusResult{Status: rpc.StatusResult_Failure, Exception: &rpc.RpcException{Message: "cannot import function_app: ModuleNotFoundError"}}
			}
			send(&rpc.StreamingMessage{RequestId: m.RequestId, Content: &rpc.StreamingMessage_FunctionMetadataResponse{FunctionMetadataResponse: r}})
		case *rpc.StreamingMessage_FunctionLoadRequest:
			req := x.FunctionLoadRequest
			r := &rpc.FunctionLoadResponse{FunctionId: req.FunctionId, Result: success}
			if problem := checkLoad(mode, req); problem != "" {
				r.Result = &rpc.StatusResult{Status: rpc.StatusResult_Failure, Exception: &rpc.RpcException{Message: problem}}
			} else {
				loaded[req.FunctionId] = req.Metadata
			}
			send(&rpc.StreamingMessage{RequestId: m.RequestId, Content: &rpc.StreamingMessage_FunctionLoadResponse{FunctionLoadResponse: r}})
		case *rpc.StreamingMessage_InvocationRequest:
			send(&rpc.StreamingMessage{RequestId: m.RequestId, Content: &rpc.StreamingMessage_InvocationResponse{
				InvocationResponse: fakeAzureInvoke(mode, loaded[x.InvocationRequest.FunctionId], x.InvocationRequest)}})
		case *rpc.StreamingMessage_WorkerTerminate:
			if mode == "azure-node" {
				os.Exit(0)
			}
		}
	}
}

// checkLoad verifies what the official workers rely on in a load request.
func checkLoad(mode string, req *rpc.FunctionLoadRequest) string {
	md := req.Metadata
	switch mode {
	case "azure-node":
		if md.Properties["worker.functionId"] != "node-fn-1" {
			return "the worker's properties were not echoed back"
		}
		if b := md.Bindings["httpTrigger624a61988c"]; b == nil || b.Type != "httpTrigger" || b.Direction != rpc.BindingInfo_in {
			return fmt.Sprintf("trigger binding missing from the bindings map: %v", md.Bindings)
		}
	case "azure-python":
		if root := os.Getenv("AzureWebJobsScriptRoot"); root == "" || !strings.HasPrefix(md.Directory, root) {
			return fmt.Sprintf("AzureWebJobsScriptRoot %q does not hold the function directory %q (the worker imports from it)", root, md.Directory)
		}
		if !strings.HasSuffix(md.ScriptFile, "/HttpExample/__init__.py") || !strings.HasPrefix(md.Directory, "/") {
			return fmt.Sprintf("want absolute directory and script_file, got %q %q", md.Directory, md.ScriptFile)
		}
		if b := md.Bindings["res"]; b == nil || b.Direction != rpc.BindingInfo_out {
			return fmt.Sprintf("output binding res missing: %v", md.Bindings)
		}
	}
	return ""
}

func fakeAzureInvoke(mode string, md *rpc.RpcFunctionMetadata, req *rpc.InvocationRequest) *rpc.InvocationResponse {
	resp := &rpc.InvocationResponse{InvocationId: req.InvocationId, Result: &rpc.StatusResult{Status: rpc.StatusResult_Success}}
	fail := func(msg string) *rpc.InvocationResponse {
		resp.Result = &rpc.StatusResult{Status: rpc.StatusResult_Failure, Exception: &rpc.RpcException{Message: msg}}
		return resp
	}
	if md == nil || len(req.InputData) != 1 {
		return fail("unknown function or no input")
	}
	h := req.InputData[0].GetData().GetHttp()
	if h == nil {
		return fail("no http input")
	}
	switch mode {
	case "azure-node":
		if req.InputData[0].Name != "httpTrigger624a61988c" {
			return fail("input bound under " + req.InputData[0].Name)
		}
		if len(h.Headers) != 0 || h.NullableHeaders["x-test"].GetValue() != "node" || h.RawBody != nil {
			return fail(fmt.Sprintf("want nullable headers only and no rawBody: %v / %v", h.Headers, h.NullableHeaders))
		}
		if sc := h.NullableQuery["status"].GetValue(); sc != "" {
			// An HTTP result the host cannot send when sc is not a status.
			resp.ReturnValue = &rpc.TypedData{Data: &rpc.TypedData_Http{Http: &rpc.RpcHttp{StatusCode: sc}}}
			return resp
		}
		name := h.NullableParams["name"].GetValue()
		body := fmt.Sprintf("hello %s via %s; q=%s; body=%s", name, h.Method, h.NullableQuery["q"].GetValue(), h.Body.GetBytes())
		resp.ReturnValue = &rpc.TypedData{Data: &rpc.TypedData_Http{Http: &rpc.RpcHttp{
			StatusCode: "201",
			Headers:    map[string]string{"content-type": "text/plain; charset=utf-8", "x-fake": "node"},
			Body:       &rpc.TypedData{Data: &rpc.TypedData_Bytes{Bytes: []byte(body)}},
		}}}
	case "azure-python":
		if req.InputData[0].Name != "req" || h.Headers["x-test"] != "python" || !strings.HasPrefix(h.Url, "http://") {
			return fail(fmt.Sprintf("unexpected request: binding %s headers %v url %q", req.InputData[0].Name, h.Headers, h.Url))
		}
		if h.Headers["x-functions-key"] != "" || h.Headers["x-polyfn-key"] != "" || h.Query["code"] != "" {
			return fail("a key reached the worker")
		}
		if d, err := time.ParseDuration(h.Query["sleep"]); err == nil {
			time.Sleep(d)
		}
		resp.OutputData = []*rpc.ParameterBinding{{Name: "res", RpcData: &rpc.ParameterBinding_Data{Data: &rpc.TypedData{Data: &rpc.TypedData_Http{Http: &rpc.RpcHttp{
			StatusCode: "200",
			Body:       &rpc.TypedData{Data: &rpc.TypedData_String_{String_: "Hello, " + h.Query["name"] + "."}},
		}}}}}}
	}
	return resp
}
