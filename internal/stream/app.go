package stream

import (
	rpc "github.com/polyfn/polyfn/api/azure"
	"github.com/polyfn/polyfn/internal/azure"
	"github.com/polyfn/polyfn/internal/invoke"
)

// This file holds the stream adapter's wire form of an invocation of an
// Azure Functions app's HTTP function: the trigger hands over the HTTP
// request as it came (invoke.HTTPRequest), the adapter encodes it as the
// worker's RpcHttp for the worker's capabilities and decodes the worker's
// response as the Azure Functions host would.

// appFunction returns the function of the app instance's index named name.
func (i *Instance) appFunction(name string) *azure.Function {
	for _, fn := range i.appFunctions {
		if fn.Name == name {
			return fn
		}
	}
	return nil
}

// appInput fills ir for an invocation of the app function req names.
func (i *Instance) appInput(ir *rpc.InvocationRequest, req *invoke.Request) (*azure.Function, error) {
	fn := i.appFunction(req.Function)
	if fn == nil {
		return nil, invoke.Errorf(invoke.KindNotFound, "app %s has no function %q", req.App, req.Function)
	}
	if appTimerInput(ir, fn, req) {
		return fn, nil
	}
	if req.HTTPRequest == nil {
		return nil, invoke.Errorf(invoke.KindBadRequest, "function %s of app %s is invoked over HTTP only", req.Function, req.App)
	}
	caps := azure.Capabilities(i.caps)
	ir.FunctionId = fn.ID
	ir.InputData, ir.TriggerMetadata = azure.InvocationInput(fn, azure.EncodeHTTP(req.HTTPRequest, req.Payload, caps), caps)
	return fn, nil
}

// appResult decodes the response of a successful invocation of fn.
func appResult(fn *azure.Function, out *rpc.InvocationResponse) (*invoke.Result, error) {
	if fn.HTTP == nil {
		// A timer function: its outputs have no binding polyfn serves.
		return &invoke.Result{}, nil
	}
	resp, err := azure.DecodeResponse(fn, out)
	if err != nil {
		return nil, invoke.Errorf(invoke.KindInvalidResponse, "function %s answered with an HTTP response the host cannot send: %v", fn.Name, err)
	}
	return &invoke.Result{Payload: resp.Body, HTTP: &invoke.HTTPResponse{Status: resp.Status, Header: resp.Header}}, nil
}
