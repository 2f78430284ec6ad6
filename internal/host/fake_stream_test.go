package host_test

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	rpc "github.com/polyfn/polyfn/api/azure"
)

// dialFakeStream parses the launch arguments and opens the worker's stream.
// Like the official Node.js worker it insists on the --functions-* arguments.
func dialFakeStream() (rpc.FunctionRpc_EventStreamClient, func(*rpc.StreamingMessage), string) {
	fs := flag.NewFlagSet("worker", flag.ContinueOnError)
	uri := fs.String("functions-uri", "", "")
	workerID := fs.String("functions-worker-id", "", "")
	fs.String("functions-request-id", "", "")
	fs.String("functions-grpc-max-message-length", "", "")
	fs.String("host", "", "")
	fs.String("port", "", "")
	fs.String("workerId", "", "")
	fs.String("requestId", "", "")
	fs.String("grpcMaxMessageLength", "", "")
	if err := fs.Parse(os.Args[1:]); err != nil || *uri == "" || *workerID == "" {
		fmt.Fprintln(os.Stderr, "missing --functions-uri / --functions-worker-id:", err)
		os.Exit(2)
	}
	waitGate(*workerID)
	addr := strings.TrimSuffix(strings.TrimPrefix(*uri, "http://"), "/")
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		os.Exit(3)
	}
	st, err := rpc.NewFunctionRpcClient(conn).EventStream(context.Background())
	if err != nil {
		fmt.Fprintln(os.Stderr, "open stream:", err)
		os.Exit(4)
	}
	var wmu sync.Mutex
	send := func(m *rpc.StreamingMessage) {
		wmu.Lock()
		defer wmu.Unlock()
		if m == nil {
			_ = st.CloseSend()
			return
		}
		_ = st.Send(m)
	}
	return st, send, *workerID
}

// runFakeStreamWorker is a stream-protocol worker serving polyfn functions,
// with a behaviour chosen by mode.
func runFakeStreamWorker(mode string) {
	st, send, workerID := dialFakeStream()
	switch mode {
	case "stream-wrong-first":
		send(&rpc.StreamingMessage{Content: &rpc.StreamingMessage_WorkerHeartbeat{WorkerHeartbeat: &rpc.WorkerHeartbeat{}}})
	case "stream-unknown-id":
		send(&rpc.StreamingMessage{Content: &rpc.StreamingMessage_StartStream{StartStream: &rpc.StartStream{WorkerId: "not-issued"}}})
	default:
		send(&rpc.StreamingMessage{Content: &rpc.StreamingMessage_StartStream{StartStream: &rpc.StartStream{WorkerId: workerID}}})
	}
	success := &rpc.StatusResult{Status: rpc.StatusResult_Success}
	for {
		m, err := st.Recv()
		if err != nil {
			if err != io.EOF {
				fmt.Fprintln(os.Stderr, "stream ended:", err)
			}
			if mode == "stream-close-idle" {
				select {} // linger until killed
			}
			os.Exit(9)
		}
		switch x := m.Content.(type) {
		case *rpc.StreamingMessage_WorkerInitRequest:
			r := &rpc.WorkerInitResponse{Result: success, Capabilities: map[string]string{
				"HandlesInvocationCancelMessage": "true", "HandlesWorkerTerminateMessage": "true"}}
			if mode == "stream-init-fail" {
				r.Result = &rpc.StatusResult{Status: rpc.StatusResult_Failure, Exception: &rpc.RpcException{Message: "cannot initialise: boom"}}
			}
			send(&rpc.StreamingMessage{RequestId: m.RequestId, Content: &rpc.StreamingMessage_WorkerInitResponse{WorkerInitResponse: r}})
		case *rpc.StreamingMessage_FunctionLoadRequest:
			r := &rpc.FunctionLoadResponse{FunctionId: x.FunctionLoadRequest.FunctionId, Result: success}
			if mode == "stream-load-fail" {
				r.Result = &rpc.StatusResult{Status: rpc.StatusResult_Failure, Exception: &rpc.RpcException{Type: "ImportError", Message: "no module named nope"}}
			}
			send(&rpc.StreamingMessage{RequestId: m.RequestId, Content: &rpc.StreamingMessage_FunctionLoadResponse{FunctionLoadResponse: r}})
		case *rpc.StreamingMessage_InvocationRequest:
			if string(x.InvocationRequest.InputData[0].GetData().GetBytes()) == "deaf" {
				select {} // stops reading the stream, as a worker whose event loop is stuck
			}
			go fakeInvoke(mode, x.InvocationRequest, send, st)
		case *rpc.StreamingMessage_InvocationCancel:
			send(&rpc.StreamingMessage{Content: &rpc.StreamingMessage_RpcLog{RpcLog: &rpc.RpcLog{
				Level: rpc.RpcLog_Warning, Message: "ignoring cancel of " + x.InvocationCancel.InvocationId}}})
		case *rpc.StreamingMessage_WorkerTerminate:
			os.Exit(0)
		}
	}
}

func fakeInvoke(mode string, req *rpc.InvocationRequest, send func(*rpc.StreamingMessage), st rpc.FunctionRpc_EventStreamClient) {
	payload := req.InputData[0].GetData().GetBytes()
	send(&rpc.StreamingMessage{Content: &rpc.StreamingMessage_RpcLog{RpcLog: &rpc.RpcLog{
		InvocationId: req.InvocationId, Level: rpc.RpcLog_Information, Message: "fake log line for " + string(payload)}}})
	switch p := string(payload); {
	case p == "crash":
		os.Exit(7)
	case p == "hang":
		return // never answers, ignores the cancel
	case p == "hog":
		payload = []byte(fakeHog())
	case p == "close":
		_ = st.CloseSend()
		select {}
	case strings.HasPrefix(p, "sleep:"):
		d, _ := time.ParseDuration(strings.TrimPrefix(p, "sleep:"))
		time.Sleep(d)
	case p == "trace":
		send(&rpc.StreamingMessage{Content: &rpc.StreamingMessage_InvocationResponse{InvocationResponse: &rpc.InvocationResponse{
			InvocationId: req.InvocationId,
			ReturnValue:  &rpc.TypedData{Data: &rpc.TypedData_String_{String_: req.GetTraceContext().GetTraceParent()}},
			Result:       &rpc.StatusResult{Status: rpc.StatusResult_Success}}}})
		return
	case p == "whoami":
		send(&rpc.StreamingMessage{Content: &rpc.StreamingMessage_InvocationResponse{InvocationResponse: &rpc.InvocationResponse{
			InvocationId: req.InvocationId,
			ReturnValue:  &rpc.TypedData{Data: &rpc.TypedData_String_{String_: req.FunctionId}},
			Result:       &rpc.StatusResult{Status: rpc.StatusResult_Success}}}})
		return
	case p == "respond":
		send(&rpc.StreamingMessage{Content: &rpc.StreamingMessage_InvocationResponse{InvocationResponse: &rpc.InvocationResponse{
			InvocationId: req.InvocationId,
			ReturnValue: &rpc.TypedData{Data: &rpc.TypedData_Http{Http: &rpc.RpcHttp{StatusCode: "201", Headers: map[string]string{"x-a": "b"},
				Body: &rpc.TypedData{Data: &rpc.TypedData_Bytes{Bytes: []byte("created")}}}}},
			Result: &rpc.StatusResult{Status: rpc.StatusResult_Success}}}})
		return
	case p == "raise":
		send(&rpc.StreamingMessage{Content: &rpc.StreamingMessage_InvocationResponse{InvocationResponse: &rpc.InvocationResponse{
			InvocationId: req.InvocationId,
			Result: &rpc.StatusResult{Status: rpc.StatusResult_Failure, Exception: &rpc.RpcException{
				Type: "KeyError", Message: "'missing'", IsUserException: true}}}}})
		return
	}
	if mode == "stream-unknown-response" {
		send(&rpc.StreamingMessage{Content: &rpc.StreamingMessage_InvocationResponse{InvocationResponse: &rpc.InvocationResponse{
			InvocationId: "never-issued", Result: &rpc.StatusResult{Status: rpc.StatusResult_Success}}}})
	}
	send(&rpc.StreamingMessage{Content: &rpc.StreamingMessage_InvocationResponse{InvocationResponse: &rpc.InvocationResponse{
		InvocationId: req.InvocationId,
		ReturnValue:  &rpc.TypedData{Data: &rpc.TypedData_Bytes{Bytes: append([]byte("stream:"), payload...)}},
		Result:       &rpc.StatusResult{Status: rpc.StatusResult_Success}}}})
	if mode == "stream-close-idle" {
		// Drop the stream while idle and linger: the host sees the stream
		// gone before the process.
		signal.Ignore(syscall.SIGTERM)
		send(nil)
	}
}
