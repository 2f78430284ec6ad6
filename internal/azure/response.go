package azure

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"

	rpc "github.com/polyfn/polyfn/api/azure"
)

// Default content types of a response body the function gave no
// Content-Type for.
const (
	ContentTypeText   = "text/plain; charset=utf-8"
	ContentTypeJSON   = "application/json"
	ContentTypeBinary = "application/octet-stream"
)

// Response is a decoded HTTP response, ready to write.
type Response struct {
	Status int
	// Header holds the function's headers, Content-Type and one Set-Cookie
	// line per cookie. Content-Length is set by Write.
	Header http.Header
	Body   []byte
}

// WriteResponse decodes the result of a successful invocation of the
// HTTP-triggered fn (see DecodeResponse) and writes it to w. When the
// result cannot be decoded (an invalid status code, header or cookie, a
// body type HTTP cannot carry), nothing is written and the error is
// returned: the caller answers 500.
//
// A failed or cancelled invocation (result.status Failure or Cancelled) is
// not handled here: the caller maps it to its own error response and does
// not call WriteResponse.
func WriteResponse(w http.ResponseWriter, fn *Function, resp *rpc.InvocationResponse) error {
	res, err := DecodeResponse(fn, resp)
	if err != nil {
		return err
	}
	return res.Write(w)
}

// DecodeResponse finds the HTTP result of an invocation of fn and decodes
// it.
//
// The result is return_value when the function's HTTP output binding is
// "$return", else the output_data entry named after the http output binding
// (e.g. "res"); when that is empty, return_value is used, and when there is
// no result at all the response is 200 with no body (as the official host).
//
// A TypedData http result gives: status_code (a string; empty means 200;
// anything but an integer from 200 to 999 is an error), headers (and
// nullable_headers), cookies (one Set-Cookie each, written as ASP.NET
// does: the value percent-encoded, path "/" unless given, then expires,
// max-age, domain, path, secure, samesite, httponly), and the body. Any
// other result (string, json, bytes, int, double) is the body of a 200
// response.
//
// Body: string, json, bytes and stream as they are; int and double as
// their decimal text; an http body is unwrapped to its own body. Other
// types (collections, model binding data) are an error. The function's
// Content-Type is kept; without one, a json body is application/json, a
// string, int or double body text/plain; charset=utf-8, and a bytes body
// application/octet-stream. Content-Length and Transfer-Encoding headers
// from the function are dropped: Write sets the length.
func DecodeResponse(fn *Function, resp *rpc.InvocationResponse) (*Response, error) {
	td, err := resultData(fn, resp)
	if err != nil {
		return nil, err
	}
	res := &Response{Status: http.StatusOK, Header: http.Header{}}
	if td.GetData() == nil {
		return res, nil
	}
	rh := td.GetHttp()
	if rh == nil {
		body, ct, err := bodyOf(td, 0)
		if err != nil {
			return nil, err
		}
		res.Body = body
		if ct != "" {
			res.Header.Set("Content-Type", ct)
		}
		return res, nil
	}

	if s := strings.TrimSpace(rh.StatusCode); s != "" {
		code, err := strconv.Atoi(s)
		if err != nil || code < 200 || code > 999 {
			return nil, fmt.Errorf("invalid HTTP status code %q", rh.StatusCode)
		}
		res.Status = code
	}

	contentType := ""
	addHeader := func(name, value string) error {
		if !validHeaderName(name) {
			return fmt.Errorf("invalid header name %q", name)
		}
		if strings.ContainsAny(value, "\r\n\x00") {
			return fmt.Errorf("header %q: value has a control character", name)
		}
		switch strings.ToLower(name) {
		case "content-type":
			contentType = value
		case "content-length", "transfer-encoding":
		default:
			res.Header.Add(name, value)
		}
		return nil
	}
	for _, k := range slices.Sorted(maps.Keys(rh.Headers)) {
		if err := addHeader(k, rh.Headers[k]); err != nil {
			return nil, err
		}
	}
	for _, k := range slices.Sorted(maps.Keys(rh.NullableHeaders)) {
		v := rh.NullableHeaders[k]
		if _, dup := rh.Headers[k]; dup || v.GetString_() == nil {
			continue
		}
		if err := addHeader(k, v.GetValue()); err != nil {
			return nil, err
		}
	}
	for _, c := range rh.Cookies {
		line, err := setCookie(c)
		if err != nil {
			return nil, err
		}
		res.Header.Add("Set-Cookie", line)
	}

	body, ct, err := bodyOf(rh.Body, 0)
	if err != nil {
		return nil, err
	}
	res.Body = body
	if contentType == "" {
		contentType = ct
	}
	if contentType != "" {
		res.Header.Set("Content-Type", contentType)
	}
	return res, nil
}

// Write writes the response: its headers (replacing any already in w),
// Content-Length, the status and the body. Statuses that cannot have a
// body (204, 304) are written without one.
func (res *Response) Write(w http.ResponseWriter) error {
	h := w.Header()
	for k, vs := range res.Header {
		h[k] = slices.Clone(vs)
	}
	noBody := res.Status == http.StatusNoContent || res.Status == http.StatusNotModified
	if noBody {
		h.Del("Content-Length")
	} else {
		h.Set("Content-Length", strconv.Itoa(len(res.Body)))
	}
	w.WriteHeader(res.Status)
	if noBody || len(res.Body) == 0 {
		return nil
	}
	_, err := w.Write(res.Body)
	return err
}

// resultData picks the TypedData holding fn's HTTP result; nil when there
// is none.
func resultData(fn *Function, resp *rpc.InvocationResponse) (*rpc.TypedData, error) {
	if resp == nil {
		return nil, errors.New("no invocation response")
	}
	out := ReturnBinding
	if fn != nil && fn.HTTP != nil && fn.HTTP.OutputBinding != "" {
		out = fn.HTTP.OutputBinding
	}
	if out == ReturnBinding && resp.ReturnValue.GetData() != nil {
		return resp.ReturnValue, nil
	}
	td, err := outputData(resp.OutputData, out)
	if err != nil || td != nil {
		return td, err
	}
	if resp.ReturnValue.GetData() != nil {
		return resp.ReturnValue, nil
	}
	return nil, nil
}

// outputData finds the output binding named name (exactly, else without
// regard to case).
func outputData(bindings []*rpc.ParameterBinding, name string) (*rpc.TypedData, error) {
	var found *rpc.ParameterBinding
	for _, b := range bindings {
		if b.GetName() == name {
			found = b
			break
		}
		if found == nil && strings.EqualFold(b.GetName(), name) {
			found = b
		}
	}
	if found == nil {
		return nil, nil
	}
	if found.GetRpcSharedMemory() != nil {
		return nil, fmt.Errorf("output %q came through shared memory, which polyfn does not support", found.GetName())
	}
	if found.GetData().GetData() == nil {
		return nil, nil
	}
	return found.GetData(), nil
}

// bodyOf returns the bytes of a body and the Content-Type it gets when the
// function gave none.
func bodyOf(td *rpc.TypedData, depth int) ([]byte, string, error) {
	switch d := td.GetData().(type) {
	case nil:
		return nil, "", nil
	case *rpc.TypedData_String_:
		return []byte(d.String_), ContentTypeText, nil
	case *rpc.TypedData_Json:
		return []byte(d.Json), ContentTypeJSON, nil
	case *rpc.TypedData_Bytes:
		return d.Bytes, ContentTypeBinary, nil
	case *rpc.TypedData_Stream:
		return d.Stream, ContentTypeBinary, nil
	case *rpc.TypedData_Int:
		return []byte(strconv.FormatInt(d.Int, 10)), ContentTypeText, nil
	case *rpc.TypedData_Double:
		return []byte(formatDouble(d.Double)), ContentTypeText, nil
	case *rpc.TypedData_Http:
		if depth >= 8 {
			return nil, "", errors.New("response body: http bodies nested too deep")
		}
		return bodyOf(d.Http.GetBody(), depth+1)
	}
	return nil, "", fmt.Errorf("response body of type %T cannot be sent over HTTP", td.GetData())
}

// formatDouble writes a double as .NET does: plain digits up to 1e15,
// exponent form beyond.
func formatDouble(f float64) string {
	switch {
	case math.IsNaN(f):
		return "NaN"
	case math.IsInf(f, 1):
		return "Infinity"
	case math.IsInf(f, -1):
		return "-Infinity"
	}
	if a := math.Abs(f); a == 0 || (a >= 1e-5 && a < 1e15) {
		return strconv.FormatFloat(f, 'f', -1, 64)
	}
	return strings.ToUpper(strconv.FormatFloat(f, 'g', -1, 64))
}

// setCookie formats a cookie as ASP.NET Core's ResponseCookies.Append.
func setCookie(c *rpc.RpcHttpCookie) (string, error) {
	if !validHeaderName(c.GetName()) {
		return "", fmt.Errorf("invalid cookie name %q", c.GetName())
	}
	var b strings.Builder
	b.WriteString(c.GetName())
	b.WriteByte('=')
	b.WriteString(escapeDataString(c.GetValue()))
	if ts := c.GetExpires().GetValue(); ts != nil {
		b.WriteString("; expires=")
		b.WriteString(ts.AsTime().UTC().Format(http.TimeFormat))
	}
	if m := c.GetMaxAge(); m.GetDouble() != nil {
		secs := int64(m.GetValue())
		if secs < 0 || math.IsNaN(m.GetValue()) {
			secs = 0
		}
		b.WriteString("; max-age=")
		b.WriteString(strconv.FormatInt(secs, 10))
	}
	if d := c.GetDomain(); d.GetString_() != nil && d.GetValue() != "" {
		if strings.ContainsAny(d.GetValue(), ";\r\n") {
			return "", fmt.Errorf("cookie %q: invalid domain %q", c.GetName(), d.GetValue())
		}
		b.WriteString("; domain=")
		b.WriteString(d.GetValue())
	}
	path := "/"
	if p := c.GetPath(); p.GetString_() != nil && p.GetValue() != "" {
		if strings.ContainsAny(p.GetValue(), ";\r\n") {
			return "", fmt.Errorf("cookie %q: invalid path %q", c.GetName(), p.GetValue())
		}
		path = p.GetValue()
	}
	b.WriteString("; path=")
	b.WriteString(path)
	if c.GetSecure().GetValue() {
		b.WriteString("; secure")
	}
	switch c.GetSameSite() {
	case rpc.RpcHttpCookie_Lax:
		b.WriteString("; samesite=lax")
	case rpc.RpcHttpCookie_Strict:
		b.WriteString("; samesite=strict")
	case rpc.RpcHttpCookie_ExplicitNone:
		b.WriteString("; samesite=none")
	}
	if c.GetHttpOnly().GetValue() {
		b.WriteString("; httponly")
	}
	return b.String(), nil
}

// escapeDataString percent-encodes every byte but the unreserved
// characters A-Z a-z 0-9 - _ . ~, as .NET's Uri.EscapeDataString.
func escapeDataString(s string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.' || c == '~' {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&15])
	}
	return b.String()
}

// validHeaderName reports whether s is an HTTP token.
func validHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' {
			continue
		}
		if !strings.ContainsRune("!#$%&'*+-.^_`|~", rune(c)) {
			return false
		}
	}
	return true
}
