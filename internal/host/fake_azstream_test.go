package host_test

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync"

	rpc "github.com/polyfn/polyfn/api/azure"
)

// runFakeStreamingAzureWorker behaves as the Node.js worker with an app
// that called app.setup({enableHttpStream: true}): it serves HTTP itself on
// a loopback port it advertises in HttpUri ("http://localhost:PORT/", as the
// @azure/functions library does), pairs each forwarded request with its
// InvocationRequest by the x-ms-invocation-id header, answers the request
// itself and sends the InvocationResponse once the response body is
// written. Its one function "stream" (route stream/{mode}) does by mode:
//
//   - echo: streams the request body back as it reads it;
//   - sum: reads the whole body, then answers its length and SHA-256;
//   - fail: fails the invocation before it answers the request, and logs
//     "failed function's request closed" once the host closed it;
//   - hang: sends its header and a first chunk, then waits for its request
//     to be closed and logs "worker saw its request closed" (an RpcLog the
//     host logs).
//
// Mode azure-stream-remote advertises a URI that is not loopback.
func runFakeStreamingAzureWorker(mode string) {
	st, send, workerID := dialFakeStream()
	send(&rpc.StreamingMessage{Content: &rpc.StreamingMessage_StartStream{StartStream: &rpc.StartStream{WorkerId: workerID}}})
	success := &rpc.StatusResult{Status: rpc.StatusResult_Success}

	var mu sync.Mutex
	waiting := map[string]chan *proxied{}
	pair := func(id string) chan *proxied {
		mu.Lock()
		defer mu.Unlock()
		c, ok := waiting[id]
		if !ok {
			c = make(chan *proxied, 1)
			waiting[id] = c
		}
		return c
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		os.Exit(5)
	}
	go func() {
		_ = http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			p := &proxied{w: w, r: r, done: make(chan struct{})}
			pair(r.Header.Get("X-Ms-Invocation-Id")) <- p
			<-p.done
		}))
	}()
	uri := fmt.Sprintf("http://localhost:%d/", ln.Addr().(*net.TCPAddr).Port)
	switch mode {
	case "azure-stream-remote":
		uri = "http://192.0.2.1:8080/"
	case "azure-stream-elsewhere":
		uri = os.Getenv("ELSEWHERE") // a loopback server of another process
	}
	for {
		m, err := st.Recv()
		if err != nil {
			os.Exit(9)
		}
		switch x := m.Content.(type) {
		case *rpc.StreamingMessage_WorkerInitRequest:
			caps := map[string]string{"HttpUri": uri}
			for k, v := range nodeCaps {
				caps[k] = v
			}
			send(&rpc.StreamingMessage{RequestId: m.RequestId, Content: &rpc.StreamingMessage_WorkerInitResponse{WorkerInitResponse: &rpc.WorkerInitResponse{
				Result: success, Capabilities: caps, WorkerMetadata: &rpc.WorkerMetadata{RuntimeName: mode}}}})
		case *rpc.StreamingMessage_FunctionsMetadataRequest:
			r := &rpc.FunctionMetadataResponse{Result: success, FunctionMetadataResults: []*rpc.RpcFunctionMetadata{{
				Name: "stream", FunctionId: "stream-fn", Directory: x.FunctionsMetadataRequest.FunctionAppDirectory, Language: "node",
				RawBindings: []string{
					`{"authLevel":"anonymous","methods":["GET","POST"],"route":"stream/{mode}","type":"httpTrigger","name":"httpTrigger1","direction":"in"}`,
					`{"type":"http","name":"$return","direction":"out"}`,
				},
			}}}
			send(&rpc.StreamingMessage{RequestId: m.RequestId, Content: &rpc.StreamingMessage_FunctionMetadataResponse{FunctionMetadataResponse: r}})
		case *rpc.StreamingMessage_FunctionLoadRequest:
			send(&rpc.StreamingMessage{RequestId: m.RequestId, Content: &rpc.StreamingMessage_FunctionLoadResponse{FunctionLoadResponse: &rpc.FunctionLoadResponse{
				FunctionId: x.FunctionLoadRequest.FunctionId, Result: success}}})
		case *rpc.StreamingMessage_InvocationRequest:
			ir := x.InvocationRequest
			go func() {
				p := <-pair(ir.InvocationId)
				var once sync.Once
				respond := func(err error) {
					once.Do(func() {
						resp := &rpc.InvocationResponse{InvocationId: ir.InvocationId, Result: success}
						if err != nil {
							resp.Result = &rpc.StatusResult{Status: rpc.StatusResult_Failure, Exception: &rpc.RpcException{Message: err.Error()}}
						}
						send(&rpc.StreamingMessage{RequestId: m.RequestId, Content: &rpc.StreamingMessage_InvocationResponse{InvocationResponse: resp}})
					})
				}
				err := servePaired(ir, p, respond, func(msg string) {
					send(&rpc.StreamingMessage{Content: &rpc.StreamingMessage_RpcLog{RpcLog: &rpc.RpcLog{
						InvocationId: ir.InvocationId, Level: rpc.RpcLog_Warning, Message: msg}}})
				})
				close(p.done)
				respond(err)
			}()
		case *rpc.StreamingMessage_WorkerTerminate:
			os.Exit(0)
		}
	}
}

type proxied struct {
	w    http.ResponseWriter
	r    *http.Request
	done chan struct{}
}

// servePaired answers the forwarded request of invocation ir as the
// function does, after checking that the invocation is what the official
// host sends a streaming worker.
func servePaired(ir *rpc.InvocationRequest, p *proxied, respond func(error), log func(string)) error {
	w, r := p.w, p.r
	in := ir.InputData
	if len(in) != 1 || in[0].Name != "httpTrigger1" || in[0].GetData().GetHttp() == nil || in[0].GetData().GetHttp().GetMethod() != "" {
		http.Error(w, fmt.Sprintf("want one empty http input, got %v", in), http.StatusTeapot)
		return nil
	}
	mode := ir.TriggerMetadata["mode"].GetString_()
	if ir.TriggerMetadata["Headers"].GetJson() == "" || r.Header.Get("X-Forwarded-Host") == "" || r.Header.Get("X-Forwarded-Proto") != "http" {
		http.Error(w, "missing Headers metadata or X-Forwarded-Host/-Proto", http.StatusTeapot)
		return nil
	}
	rc := http.NewResponseController(w)
	switch mode {
	case "echo":
		_ = rc.EnableFullDuplex()
		w.Header().Set("Content-Type", "application/octet-stream")
		w.WriteHeader(http.StatusOK)
		buf := make([]byte, 64<<10)
		for {
			n, err := r.Body.Read(buf)
			if n > 0 {
				if _, werr := w.Write(buf[:n]); werr != nil {
					return werr
				}
				_ = rc.Flush()
			}
			if err == io.EOF {
				return nil
			}
			if err != nil {
				return err
			}
		}
	case "cors":
		// A function that sets CORS headers of its own.
		w.Header().Set("Access-Control-Allow-Origin", "*")
		w.Header().Set("Vary", "Accept-Encoding")
		_, _ = w.Write([]byte("ok"))
		return nil
	case "hang":
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write([]byte("first chunk\n"))
		_ = rc.Flush()
		<-r.Context().Done()
		log("worker saw its request closed")
		return fmt.Errorf("request closed")
	case "sum":
		// Reads the whole body before it answers.
		h := sha256.New()
		n, err := io.Copy(h, r.Body)
		if err != nil {
			log("worker's request body broke off")
			return err
		}
		fmt.Fprintf(w, "%d %x", n, h.Sum(nil))
		return nil
	case "fail":
		// The function fails before it answers: the host closes the request.
		respond(errors.New("the function failed"))
		_, _ = io.Copy(io.Discard, r.Body) // Go's server notices a closed connection once the body is read
		<-r.Context().Done()
		log("failed function's request closed")
		return nil
	}
	http.Error(w, "unknown mode "+mode, http.StatusNotFound)
	return nil
}
