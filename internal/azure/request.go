package azure

import (
	"bytes"
	"encoding/json"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"unicode/utf16"
	"unicode/utf8"

	rpc "github.com/polyfn/polyfn/api/azure"
	"github.com/polyfn/polyfn/internal/invoke"
)

// Capabilities a worker advertises in WorkerInitResponse.
type Capabilities map[string]string

// Has reports whether the capability is on: present with a non-empty value,
// as the official host decides.
func (c Capabilities) Has(name string) bool { return c[name] != "" }

// Capability names that change how HTTP invocations are encoded, and the
// others the official workers advertise.
const (
	CapRawHTTPBodyBytes                  = "RawHttpBodyBytes"
	CapRPCHTTPBodyOnly                   = "RpcHttpBodyOnly"
	CapRPCHTTPTriggerMetadataRemoved     = "RpcHttpTriggerMetadataRemoved"
	CapIgnoreEmptyValuedRPCHTTPHeaders   = "IgnoreEmptyValuedRpcHttpHeaders"
	CapUseNullableValueDictionaryForHTTP = "UseNullableValueDictionaryForHttp"
	CapTypedDataCollection               = "TypedDataCollection"
	CapWorkerStatus                      = "WorkerStatus"
	CapHandlesWorkerTerminateMessage     = "HandlesWorkerTerminateMessage"
	CapHandlesInvocationCancelMessage    = "HandlesInvocationCancelMessage"
	CapSharedMemoryDataTransfer          = "SharedMemoryDataTransfer"
)

// BuildHTTP encodes an HTTP request as the RpcHttp an HTTP-triggered
// function receives. body is the request's whole body (r.Body is not
// read); params are the route parameters from Router.Match. The rules,
// taken from the official host, are in the package documentation.
func BuildHTTP(r *http.Request, body []byte, params map[string]string, caps Capabilities) *rpc.RpcHttp {
	return EncodeHTTP(invoke.NewHTTPRequest(r, params), body, caps)
}

// EncodeHTTP encodes an invocation's HTTP request (invoke.NewHTTPRequest)
// and body as the RpcHttp an HTTP-triggered function receives, as
// BuildHTTP does.
func EncodeHTTP(r *invoke.HTTPRequest, body []byte, caps Capabilities) *rpc.RpcHttp {
	nullable := caps.Has(CapUseNullableValueDictionaryForHTTP)
	// Every string is made valid UTF-8 (invalid bytes become U+FFFD): the
	// server passes header values and the raw query through as they came,
	// and protobuf cannot encode a string that is not UTF-8, which would end
	// the stream to the worker and every invocation on it.
	rh := &rpc.RpcHttp{Method: toValidUTF8(r.Method), Url: toValidUTF8(requestURL(r))}

	// Headers.
	ignoreEmpty := caps.Has(CapIgnoreEmptyValuedRPCHTTPHeaders)
	addHeader := func(name, value string) {
		name, value = toValidUTF8(strings.ToLower(name)), toValidUTF8(value)
		if nullable {
			if rh.NullableHeaders == nil {
				rh.NullableHeaders = map[string]*rpc.NullableString{}
			}
			rh.NullableHeaders[name] = nullableString(value)
			return
		}
		if ignoreEmpty && value == "" {
			return
		}
		if rh.Headers == nil {
			rh.Headers = map[string]string{}
		}
		rh.Headers[name] = value
	}
	if _, ok := r.Header["Host"]; !ok && r.Host != "" {
		addHeader("host", r.Host)
	}
	for name, values := range r.Header {
		addHeader(name, joinNonEmpty(values, ", "))
	}

	// Query.
	for _, q := range parseQuery(r.RawQuery) {
		value := joinNonEmpty(q.values, ",")
		if nullable {
			if rh.NullableQuery == nil {
				rh.NullableQuery = map[string]*rpc.NullableString{}
			}
			rh.NullableQuery[q.key] = nullableString(value)
		} else if value != "" {
			if rh.Query == nil {
				rh.Query = map[string]string{}
			}
			rh.Query[q.key] = value
		}
	}

	// Route parameters.
	for k, v := range r.Params {
		if nullable {
			if rh.NullableParams == nil {
				rh.NullableParams = map[string]*rpc.NullableString{}
			}
			rh.NullableParams[k] = nullableString(v)
		} else {
			if rh.Params == nil {
				rh.Params = map[string]string{}
			}
			rh.Params[k] = v
		}
	}

	if len(body) > 0 {
		setBody(rh, r.Header.Get("Content-Type"), body, caps)
	}
	return rh
}

func nullableString(v string) *rpc.NullableString {
	return &rpc.NullableString{String_: &rpc.NullableString_Value{Value: v}}
}

// setBody fills body and rawBody; see the package documentation.
func setBody(rh *rpc.RpcHttp, contentType string, body []byte, caps Capabilities) {
	rawBytes := caps.Has(CapRawHTTPBodyBytes)
	mediaType, _, err := mime.ParseMediaType(contentType)
	if err != nil {
		mediaType = ""
	}
	mediaType = strings.ToLower(mediaType)
	octetOrMultipart := mediaType == "application/octet-stream" || strings.Contains(mediaType, "multipart/")

	if caps.Has(CapRPCHTTPBodyOnly) {
		if rawBytes || octetOrMultipart {
			rh.Body = bytesData(body)
		} else {
			rh.Body = stringData(decodeText(body))
		}
		return
	}

	var rawText string
	switch {
	case mediaType == "application/json":
		rawText = decodeText(body)
		rh.Body = jsonBody(rawText)
	case octetOrMultipart:
		rh.Body = bytesData(body)
		rawText = toValidUTF8(string(body))
	default:
		rawText = decodeText(body)
		rh.Body = stringData(rawText)
	}
	if rawBytes {
		rh.RawBody = bytesData(body)
	} else {
		rh.RawBody = stringData(rawText)
	}
}

// jsonBody converts a JSON request body as the official host does (it
// deserialises it with Json.NET and converts the result back to TypedData).
func jsonBody(text string) *rpc.TypedData {
	trimmed := strings.TrimSpace(text)
	if trimmed == "" {
		return &rpc.TypedData{} // Json.NET reads nothing: null
	}
	dec := json.NewDecoder(strings.NewReader(trimmed))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return stringData(text)
	}
	if _, err := dec.Token(); err != io.EOF {
		return stringData(text) // more than one value
	}
	switch x := v.(type) {
	case nil:
		return &rpc.TypedData{}
	case string:
		return stringData(x)
	case json.Number:
		if !strings.ContainsAny(string(x), ".eE") {
			return jsonData(string(x))
		}
		f, err := strconv.ParseFloat(string(x), 64)
		if err != nil {
			return jsonData(string(x))
		}
		return &rpc.TypedData{Data: &rpc.TypedData_Double{Double: f}}
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, []byte(trimmed)); err != nil {
		return jsonData(trimmed)
	}
	return jsonData(buf.String())
}

func stringData(s string) *rpc.TypedData {
	return &rpc.TypedData{Data: &rpc.TypedData_String_{String_: s}}
}

func jsonData(s string) *rpc.TypedData {
	return &rpc.TypedData{Data: &rpc.TypedData_Json{Json: s}}
}

func bytesData(b []byte) *rpc.TypedData {
	return &rpc.TypedData{Data: &rpc.TypedData_Bytes{Bytes: b}}
}

// decodeText decodes a body as text: a UTF-8 or UTF-16 byte-order mark
// selects the encoding and is dropped; otherwise UTF-8. Invalid sequences
// become U+FFFD, so the result is always valid UTF-8 (protobuf strings must
// be).
func decodeText(b []byte) string {
	switch {
	case bytes.HasPrefix(b, []byte{0xEF, 0xBB, 0xBF}):
		b = b[3:]
	case len(b) >= 2 && (b[0] == 0xFF && b[1] == 0xFE || b[0] == 0xFE && b[1] == 0xFF):
		le := b[0] == 0xFF
		b = b[2:]
		u := make([]uint16, 0, len(b)/2)
		for i := 0; i+1 < len(b); i += 2 {
			if le {
				u = append(u, uint16(b[i])|uint16(b[i+1])<<8)
			} else {
				u = append(u, uint16(b[i])<<8|uint16(b[i+1]))
			}
		}
		s := string(utf16.Decode(u))
		if len(b)%2 == 1 {
			s += "\uFFFD"
		}
		return s
	}
	return toValidUTF8(string(b))
}

// toValidUTF8 replaces each byte that is not part of a valid UTF-8
// sequence with U+FFFD, as .NET's UTF-8 decoder does (strings.ToValidUTF8
// would replace a whole run with one).
func toValidUTF8(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 8)
	for _, r := range s {
		b.WriteRune(r) // an invalid byte comes out of range as utf8.RuneError
	}
	return b.String()
}

// requestURL is scheme://host/path?query of r.
func requestURL(r *invoke.HTTPRequest) string {
	u := scheme(r) + "://" + r.Host + r.Path
	if r.RawQuery != "" {
		u += "?" + r.RawQuery
	}
	return u
}

func scheme(r *invoke.HTTPRequest) string {
	if r.TLS {
		return "https"
	}
	if p := r.Header.Get("X-Forwarded-Proto"); p != "" {
		if i := strings.IndexByte(p, ','); i >= 0 {
			p = p[:i]
		}
		p = strings.ToLower(strings.TrimSpace(p))
		if p == "https" || p == "http" {
			return p
		}
	}
	return "http"
}

// joinNonEmpty joins the non-empty values with sep.
func joinNonEmpty(values []string, sep string) string {
	if len(values) == 1 {
		return values[0]
	}
	var out []string
	for _, v := range values {
		if v != "" {
			out = append(out, v)
		}
	}
	return strings.Join(out, sep)
}

type queryItem struct {
	key    string
	values []string
}

// parseQuery parses a raw query in order, grouping keys without regard to
// case (the first spelling is kept). Empty keys are dropped.
func parseQuery(raw string) []queryItem {
	var items []queryItem
	index := map[string]int{}
	for part := range strings.SplitSeq(raw, "&") {
		if part == "" {
			continue
		}
		k, v, _ := strings.Cut(part, "=")
		k, v = unescapeQuery(k), unescapeQuery(v)
		if k == "" {
			continue
		}
		lk := strings.ToLower(k)
		if i, ok := index[lk]; ok {
			items[i].values = append(items[i].values, v)
			continue
		}
		index[lk] = len(items)
		items = append(items, queryItem{key: k, values: []string{v}})
	}
	return items
}

func unescapeQuery(s string) string {
	if d, err := url.QueryUnescape(s); err == nil {
		s = d
	}
	return toValidUTF8(s)
}

// InvocationInput returns the input_data and trigger_metadata of an
// InvocationRequest for an HTTP-triggered fn, given the request rh built by
// BuildHTTP and the worker's capabilities. input_data has one binding: the
// trigger binding's name with rh. trigger_metadata follows the official
// host's HTTP binding data; see the package documentation.
func InvocationInput(fn *Function, rh *rpc.RpcHttp, caps Capabilities) ([]*rpc.ParameterBinding, map[string]*rpc.TypedData) {
	name := "req"
	if fn != nil && fn.HTTP != nil && fn.HTTP.BindingName != "" {
		name = fn.HTTP.BindingName
	} else if fn != nil {
		if t := fn.Trigger(); t != nil {
			name = t.Name
		}
	}
	req := &rpc.TypedData{Data: &rpc.TypedData_Http{Http: rh}}
	input := []*rpc.ParameterBinding{{Name: name, RpcData: &rpc.ParameterBinding_Data{Data: req}}}

	md := &foldMap{}
	if !caps.Has(CapRPCHTTPTriggerMetadataRemoved) {
		md.set(name, req)
	}
	// Top-level scalar properties of a JSON-object body.
	if text, ok := bodyText(rh.GetBody()); ok {
		for _, kv := range topLevelScalars(text) {
			md.set(kv[0], stringData(kv[1]))
		}
	}
	// Query keys (except "code"), values joined.
	var rawQuery string
	if u, err := url.Parse(rh.GetUrl()); err == nil {
		rawQuery = u.RawQuery
	}
	query := parseQuery(rawQuery)
	for _, q := range query {
		if strings.EqualFold(q.key, "code") {
			continue
		}
		md.set(q.key, stringData(joinNonEmpty(q.values, ",")))
	}
	// Route parameters.
	for k, v := range rh.GetParams() {
		md.set(k, stringData(v))
	}
	for k, v := range rh.GetNullableParams() {
		if v.GetString_() != nil {
			md.set(k, stringData(v.GetValue()))
		}
	}
	// Query: the last value of each key.
	if !md.has("Query") {
		qm := map[string]string{}
		for _, q := range query {
			qm[q.key] = q.values[len(q.values)-1]
		}
		md.set("Query", jsonData(mustJSON(qm)))
	}
	if !md.has("Headers") {
		hm := map[string]string{}
		for k, v := range rh.GetHeaders() {
			hm[k] = v
		}
		for k, v := range rh.GetNullableHeaders() {
			if v.GetString_() != nil {
				hm[k] = v.GetValue()
			}
		}
		md.set("Headers", jsonData(mustJSON(hm)))
	}
	return input, md.m
}

// foldMap is a map with case-insensitive keys: setting a key again replaces
// the value and keeps the first spelling, like a .NET dictionary with
// StringComparer.OrdinalIgnoreCase.
type foldMap struct {
	m     map[string]*rpc.TypedData
	names map[string]string // lower-case → first spelling
}

func (f *foldMap) set(k string, v *rpc.TypedData) {
	if f.m == nil {
		f.m = map[string]*rpc.TypedData{}
		f.names = map[string]string{}
	}
	lk := strings.ToLower(k)
	if first, ok := f.names[lk]; ok {
		k = first
	} else {
		f.names[lk] = k
	}
	f.m[k] = v
}

func (f *foldMap) has(k string) bool {
	_, ok := f.names[strings.ToLower(k)]
	return ok
}

func mustJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return "{}"
	}
	return string(b)
}

// bodyText returns the request body as text.
func bodyText(td *rpc.TypedData) (string, bool) {
	switch d := td.GetData().(type) {
	case *rpc.TypedData_String_:
		return d.String_, true
	case *rpc.TypedData_Json:
		return d.Json, true
	case *rpc.TypedData_Bytes:
		return decodeText(d.Bytes), true
	}
	return "", false
}

// topLevelScalars returns the top-level string, number and boolean
// properties of a JSON object, in order, as strings (numbers as written,
// booleans as .NET writes them: "True", "False"). Null, object and array
// properties are skipped. Anything but a JSON object gives nothing.
func topLevelScalars(text string) [][2]string {
	t := strings.TrimSpace(text)
	if !strings.HasPrefix(t, "{") || !strings.HasSuffix(t, "}") {
		return nil
	}
	dec := json.NewDecoder(strings.NewReader(t))
	dec.UseNumber()
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil
	}
	var out [][2]string
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil
		}
		key, _ := tok.(string)
		var v any
		if err := dec.Decode(&v); err != nil {
			return nil
		}
		switch x := v.(type) {
		case string:
			out = append(out, [2]string{key, x})
		case json.Number:
			out = append(out, [2]string{key, string(x)})
		case bool:
			if x {
				out = append(out, [2]string{key, "True"})
			} else {
				out = append(out, [2]string{key, "False"})
			}
		}
	}
	if _, err := dec.Token(); err != nil {
		return nil
	}
	return out
}
