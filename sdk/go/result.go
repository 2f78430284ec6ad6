package polyfn

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"runtime/debug"
	"strings"
)

// Response is an explicit HTTP response: a handler returns a Response or a
// *Response to set the status code and headers. For triggers other than
// HTTP only the body is used.
type Response struct {
	// Status is the HTTP status code, 100–599; 0 means 200.
	Status int
	// Header holds response headers. Without a content-type header the host
	// sets application/json when the body is valid JSON, else
	// application/octet-stream.
	Header map[string]string
	// Body follows the rules of a handler's return value: nil is an empty
	// body, []byte goes out as is, anything else is JSON-encoded.
	Body any
}

// Failure kinds, the prefix of a call-mode error and the exception source in
// stream mode.
const (
	kindInvoke = "UserCodeInvoke" // the handler returned an error or panicked
	kindReturn = "UserCodeReturn" // its return value could not be encoded
)

// panicType is the error type reported for a handler that panicked.
const panicType = "Panic"

// result is an encoded return value.
type result struct {
	payload []byte
	// http is set for an explicit HTTP response; payload is then its body.
	http *httpMeta
}

// httpMeta is the status and headers of an explicit HTTP response, in the
// JSON form of call mode's polyfn-response-bin metadata.
type httpMeta struct {
	Status  int               `json:"status"`
	Headers map[string]string `json:"headers"`
}

// failure is an invocation that produced no result.
type failure struct {
	kind  string
	typ   string
	msg   string
	stack string
}

// details is the failure as call mode reports it:
// "[UserCodeInvoke] Type: message".
func (f *failure) details() string {
	return "[" + f.kind + "] " + f.typ + ": " + f.msg
}

// logText is the failure as it is logged.
func (f *failure) logText() string {
	text := f.typ + ": " + f.msg
	if f.kind == kindReturn {
		text = "cannot encode the return value: " + f.details()
	}
	if f.stack != "" {
		text += "\n" + f.stack
	}
	return text
}

// outcome is what one invocation produced: a result or a failure.
type outcome struct {
	result
	fail *failure
}

// invoke runs the handler and encodes what it returned. A panic is
// recovered and becomes a failure of type Panic with the stack, also when it
// comes from the returned error's methods or the value's MarshalJSON.
func invoke(ctx context.Context, h Handler, ev Event) (o outcome) {
	v, err, p := callHandler(ctx, h, ev)
	if p != nil {
		return outcome{fail: &failure{kind: kindInvoke, typ: panicType, msg: p.message(), stack: p.stack}}
	}
	defer func() {
		if r := recover(); r != nil {
			kind := kindReturn
			if err != nil {
				kind = kindInvoke
			}
			p := &recovered{value: r, stack: panicStack(debug.Stack())}
			o = outcome{fail: &failure{kind: kind, typ: panicType, msg: p.message(), stack: p.stack}}
		}
	}()
	if err != nil {
		// fmt turns a panic in Error (a nil receiver, say) into text.
		return outcome{fail: &failure{kind: kindInvoke, typ: errorType(err), msg: fmt.Sprint(err)}}
	}
	r, err := encodeResult(v)
	if err != nil {
		return outcome{fail: &failure{kind: kindReturn, typ: errorType(err), msg: err.Error()}}
	}
	return outcome{result: r}
}

// recovered is a panic caught in a handler.
type recovered struct {
	value any
	stack string
}

// message is the panic value as text; fmt guards against panicking Error
// and String methods.
func (p *recovered) message() string { return fmt.Sprint(p.value) }

func callHandler(ctx context.Context, h Handler, ev Event) (v any, err error, p *recovered) {
	defer func() {
		if r := recover(); r != nil {
			p = &recovered{value: r, stack: panicStack(debug.Stack())}
		}
	}()
	v, err = h(ctx, ev)
	return v, err, nil
}

// panicStack cuts the recovering frames (debug.Stack, the deferred
// function, panic) off a stack taken in a deferred recover.
func panicStack(stack []byte) string {
	s := string(stack)
	i := strings.Index(s, "\npanic(")
	if i < 0 {
		return strings.TrimSpace(s)
	}
	rest := s[i+1:]
	// Skip the panic( line and its file:line line.
	for range 2 {
		j := strings.IndexByte(rest, '\n')
		if j < 0 {
			return strings.TrimSpace(s)
		}
		rest = rest[j+1:]
	}
	header, _, _ := strings.Cut(s, "\n")
	return header + "\n" + strings.TrimRight(rest, "\n")
}

// ErrorTyper is implemented by errors that name their own type. A handler
// error's type, as the host reports it, is the ErrorType of the first error
// in its chain (see [errors.As]) that implements ErrorTyper; else the name of
// the error's dynamic type without package or pointer (errorString for
// errors.New, PathError for *fs.PathError), looking through fmt.Errorf's
// single %w wrapping.
type ErrorTyper interface {
	ErrorType() string
}

// errorType names err's type as the host reports it.
func errorType(err error) string {
	var typer ErrorTyper
	if errors.As(err, &typer) {
		if t := typer.ErrorType(); t != "" {
			return t
		}
	}
	for {
		t := reflect.TypeOf(err)
		for t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
		if t.PkgPath() == "fmt" && t.Name() == "wrapError" {
			if inner := errors.Unwrap(err); inner != nil {
				err = inner
				continue
			}
		}
		name := t.Name()
		if i := strings.IndexByte(name, '['); i >= 0 {
			name = name[:i] // a generic type's arguments
		}
		if name == "" {
			return "error"
		}
		return name
	}
}

// invalidResponseError is a Response that cannot be sent.
type invalidResponseError struct{ msg string }

func (e *invalidResponseError) Error() string     { return e.msg }
func (e *invalidResponseError) ErrorType() string { return "InvalidResponse" }

// encodeResult turns a handler's return value into a result: nil → empty,
// []byte → as is, Response/*Response → an HTTP response, anything else →
// JSON.
func encodeResult(v any) (result, error) {
	switch r := v.(type) {
	case *Response:
		if r == nil {
			return result{}, nil
		}
		return encodeResponse(r)
	case Response:
		return encodeResponse(&r)
	}
	b, err := encodeBody(v)
	return result{payload: b}, err
}

func encodeResponse(r *Response) (result, error) {
	status := r.Status
	if status == 0 {
		status = 200
	}
	if status < 100 || status > 599 {
		return result{}, &invalidResponseError{fmt.Sprintf("response status %d is outside 100-599", r.Status)}
	}
	body, err := encodeBody(r.Body)
	if err != nil {
		return result{}, err
	}
	headers := r.Header
	if headers == nil {
		headers = map[string]string{}
	}
	return result{payload: body, http: &httpMeta{Status: status, Headers: headers}}, nil
}

// encodeBody applies the payload rules to a value.
func encodeBody(v any) ([]byte, error) {
	switch b := v.(type) {
	case nil:
		return nil, nil
	case []byte:
		return b, nil
	case Event:
		if b.IsJSON() {
			return b.json(), nil
		}
		return b.raw, nil
	case *Response, Response:
		return nil, &invalidResponseError{"a response body cannot be a Response"}
	}
	return json.Marshal(v)
}
