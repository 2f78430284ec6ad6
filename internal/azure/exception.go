package azure

import (
	"regexp"
	"strings"

	rpc "github.com/polyfn/polyfn/api/azure"
)

// typeName is an exception class name as the official workers print it
// ("ValueError", "TypeError", "azure.functions.FunctionLoadError").
var typeName = regexp.MustCompile(`^[A-Za-z_$][A-Za-z0-9_$]*(?:\.[A-Za-z_$][A-Za-z0-9_$]*)*$`)

// ExceptionType returns the type and message of a function's exception.
// The official workers leave RpcException.type empty: the Python worker
// writes "<Type>: <message>" as the message, the Node.js worker the bare
// message and "<Type>: <message>" as the first line of the stack trace.
// When type is empty, it is taken from there (and removed from the
// message); otherwise, and when neither form is there, ex's own type
// (possibly "") and message are returned.
func ExceptionType(ex *rpc.RpcException) (typ, msg string) {
	typ, msg = ex.GetType(), ex.GetMessage()
	if typ != "" {
		return typ, msg
	}
	first, _, _ := strings.Cut(ex.GetStackTrace(), "\n")
	if t, m, ok := strings.Cut(first, ": "); ok && typeName.MatchString(t) && m == msg {
		return t, msg // Node.js: "TypeError: <message>"
	}
	if t, m, ok := strings.Cut(msg, ": "); ok && typeName.MatchString(t) && ex.GetStackTrace() != "" {
		return t, m // Python: the message is "<Type>: <message>"
	}
	return "", msg
}
