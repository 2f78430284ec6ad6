package azure

import (
	"testing"

	rpc "github.com/polyfn/polyfn/api/azure"
)

// The exceptions below are as the official workers send them (Python
// 4.34, Node.js 3.9 with @azure/functions 4).
func TestExceptionType(t *testing.T) {
	for _, c := range []struct {
		name             string
		ex               *rpc.RpcException
		wantTyp, wantMsg string
	}{
		{"python", &rpc.RpcException{Message: "ValueError: no such order", StackTrace: "  File \"/app/function_app.py\", line 19, in fails\n    raise ValueError(\"no such order\")\n"},
			"ValueError", "no such order"},
		{"node", &rpc.RpcException{Message: "Cannot read properties of undefined (reading 'id')",
			StackTrace: "TypeError: Cannot read properties of undefined (reading 'id')\n    at handler (/app/src/index.js:17:66)"},
			"TypeError", "Cannot read properties of undefined (reading 'id')"},
		{"typed", &rpc.RpcException{Type: "MyError", Message: "ValueError: kept"}, "MyError", "ValueError: kept"},
		{"no stack", &rpc.RpcException{Message: "Note: not a type"}, "", "Note: not a type"},
		{"not a name", &rpc.RpcException{Message: "bad input: x", StackTrace: "at f"}, "", "bad input: x"},
		{"node, other first line", &rpc.RpcException{Message: "boom", StackTrace: "Error: something else\n    at f"}, "", "boom"},
	} {
		typ, msg := ExceptionType(c.ex)
		if typ != c.wantTyp || msg != c.wantMsg {
			t.Errorf("%s: got %q %q, want %q %q", c.name, typ, msg, c.wantTyp, c.wantMsg)
		}
	}
}
