package azure

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/json"
	"maps"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	rpc "github.com/polyfn/polyfn/api/azure"
	"google.golang.org/protobuf/proto"
)

// Capabilities the official workers advertise.
var (
	nodeCaps = Capabilities{
		"RawHttpBodyBytes": "true", "RpcHttpTriggerMetadataRemoved": "true", "RpcHttpBodyOnly": "true",
		"IgnoreEmptyValuedRpcHttpHeaders": "true", "UseNullableValueDictionaryForHttp": "true",
		"WorkerStatus": "true", "TypedDataCollection": "true", "HandlesWorkerTerminateMessage": "true",
	}
	pythonCaps = Capabilities{
		"RawHttpBodyBytes": "true", "TypedDataCollection": "true", "RpcHttpBodyOnly": "true",
		"WorkerStatus": "true", "RpcHttpTriggerMetadataRemoved": "true", "SharedMemoryDataTransfer": "true",
	}
)

func TestCapabilitiesHas(t *testing.T) {
	c := Capabilities{"A": "true", "B": "", "C": "false"}
	if !c.Has("A") || c.Has("B") || !c.Has("C") || c.Has("D") || Capabilities(nil).Has("A") {
		t.Error("Has is wrong")
	}
}

const sampleJSON = `{ "user": "bob", "n": 3, "ok": true, "nested": {"x": 1} }`

// sampleRequest is a POST with a JSON body, repeated and empty headers,
// repeated and empty query values, behind a TLS-terminating proxy.
func sampleRequest() (*http.Request, []byte) {
	body := []byte(sampleJSON)
	r := httptest.NewRequest("POST", "http://example.com/api/hello/Ann?name=Ann&empty=&multi=1&MULTI=2&code=secret", bytes.NewReader(body))
	r.Header.Set("Content-Type", "application/json")
	r.Header["X-Empty"] = []string{""}
	r.Header["Accept"] = []string{"text/html", "application/json"}
	r.Header.Set("X-Forwarded-Proto", "https")
	return r, body
}

func ns(v string) *rpc.NullableString { return nullableString(v) }

func TestBuildHTTPCapabilities(t *testing.T) {
	const url = "https://example.com/api/hello/Ann?name=Ann&empty=&multi=1&MULTI=2&code=secret"
	params := map[string]string{"who": "Ann"}
	plainHeaders := map[string]string{
		"host": "example.com", "content-type": "application/json", "x-empty": "",
		"accept": "text/html, application/json", "x-forwarded-proto": "https",
	}
	nullableHeaders := map[string]*rpc.NullableString{}
	for k, v := range plainHeaders {
		nullableHeaders[k] = ns(v)
	}
	plainQuery := map[string]string{"name": "Ann", "multi": "1,2", "code": "secret"} // "empty" dropped
	nullableQuery := map[string]*rpc.NullableString{"name": ns("Ann"), "empty": ns(""), "multi": ns("1,2"), "code": ns("secret")}
	compactJSON := `{"user":"bob","n":3,"ok":true,"nested":{"x":1}}`

	tests := []struct {
		name string
		caps Capabilities
		want *rpc.RpcHttp
	}{
		{
			name: "node 3.x worker",
			caps: nodeCaps,
			want: &rpc.RpcHttp{Method: "POST", Url: url, NullableHeaders: nullableHeaders, NullableQuery: nullableQuery,
				NullableParams: map[string]*rpc.NullableString{"who": ns("Ann")}, Body: bytesData([]byte(sampleJSON))},
		},
		{
			name: "python 4.x worker",
			caps: pythonCaps,
			want: &rpc.RpcHttp{Method: "POST", Url: url, Headers: plainHeaders, Query: plainQuery, Params: params,
				Body: bytesData([]byte(sampleJSON))},
		},
		{
			name: "no capabilities",
			caps: nil,
			want: &rpc.RpcHttp{Method: "POST", Url: url, Headers: plainHeaders, Query: plainQuery, Params: params,
				Body: jsonData(compactJSON), RawBody: stringData(sampleJSON)},
		},
		{
			name: "capabilities present but empty are off",
			caps: Capabilities{"RpcHttpBodyOnly": "", "RawHttpBodyBytes": "", "UseNullableValueDictionaryForHttp": ""},
			want: &rpc.RpcHttp{Method: "POST", Url: url, Headers: plainHeaders, Query: plainQuery, Params: params,
				Body: jsonData(compactJSON), RawBody: stringData(sampleJSON)},
		},
		{
			name: "IgnoreEmptyValuedRpcHttpHeaders alone",
			caps: Capabilities{"IgnoreEmptyValuedRpcHttpHeaders": "true"},
			want: &rpc.RpcHttp{Method: "POST", Url: url, Headers: without(plainHeaders, "x-empty"), Query: plainQuery, Params: params,
				Body: jsonData(compactJSON), RawBody: stringData(sampleJSON)},
		},
		{
			name: "RawHttpBodyBytes alone",
			caps: Capabilities{"RawHttpBodyBytes": "true"},
			want: &rpc.RpcHttp{Method: "POST", Url: url, Headers: plainHeaders, Query: plainQuery, Params: params,
				Body: jsonData(compactJSON), RawBody: bytesData([]byte(sampleJSON))},
		},
		{
			name: "RpcHttpBodyOnly alone",
			caps: Capabilities{"RpcHttpBodyOnly": "true"},
			want: &rpc.RpcHttp{Method: "POST", Url: url, Headers: plainHeaders, Query: plainQuery, Params: params,
				Body: stringData(sampleJSON)},
		},
		{
			name: "UseNullableValueDictionaryForHttp alone",
			caps: Capabilities{"UseNullableValueDictionaryForHttp": "true"},
			want: &rpc.RpcHttp{Method: "POST", Url: url, NullableHeaders: nullableHeaders, NullableQuery: nullableQuery,
				NullableParams: map[string]*rpc.NullableString{"who": ns("Ann")},
				Body:           jsonData(compactJSON), RawBody: stringData(sampleJSON)},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, body := sampleRequest()
			got := BuildHTTP(r, body, params, tt.caps)
			if !proto.Equal(got, tt.want) {
				t.Errorf("BuildHTTP =\n%v\nwant\n%v", got, tt.want)
			}
			if _, err := proto.Marshal(got); err != nil {
				t.Errorf("marshal: %v", err)
			}
		})
	}
}

func without(m map[string]string, key string) map[string]string {
	c := maps.Clone(m)
	delete(c, key)
	return c
}

func TestBuildHTTPBody(t *testing.T) {
	bin := []byte{0x00, 0xff, 0xfe, 'x'}
	tests := []struct {
		name        string
		contentType string
		body        []byte
		caps        Capabilities
		wantBody    *rpc.TypedData
		wantRaw     *rpc.TypedData
	}{
		{"text", "text/plain", []byte("hello"), nil, stringData("hello"), stringData("hello")},
		{"no content type", "", []byte("hello"), nil, stringData("hello"), stringData("hello")},
		{"unparsable content type", "%%%", []byte("hello"), nil, stringData("hello"), stringData("hello")},
		{"octet-stream", "application/octet-stream", bin, nil, bytesData(bin), stringData("\x00\uFFFD\uFFFDx")},
		{"octet-stream, raw bytes", "Application/Octet-Stream", bin, Capabilities{"RawHttpBodyBytes": "1"}, bytesData(bin), bytesData(bin)},
		{"multipart", "multipart/form-data; boundary=xyz", []byte("--xyz--"), nil, bytesData([]byte("--xyz--")), stringData("--xyz--")},
		{"json object", "application/json; charset=utf-8", []byte(`{"a": [1, 2]}`), nil, jsonData(`{"a":[1,2]}`), stringData(`{"a": [1, 2]}`)},
		{"json array", "application/json", []byte(` [1, 2] `), nil, jsonData(`[1,2]`), stringData(` [1, 2] `)},
		{"json string", "application/json", []byte(`"hi"`), nil, stringData("hi"), stringData(`"hi"`)},
		{"json integer", "application/json", []byte(`42`), nil, jsonData("42"), stringData("42")},
		{"json float", "application/json", []byte(`4.5`), nil, &rpc.TypedData{Data: &rpc.TypedData_Double{Double: 4.5}}, stringData("4.5")},
		{"json bool", "application/json", []byte(`true`), nil, jsonData("true"), stringData("true")},
		{"json null", "application/json", []byte(`null`), nil, &rpc.TypedData{}, stringData("null")},
		{"json whitespace", "application/json", []byte(`  `), nil, &rpc.TypedData{}, stringData("  ")},
		{"invalid json", "application/json", []byte(`{oops`), nil, stringData("{oops"), stringData("{oops")},
		{"json with trailing text", "application/json", []byte(`{} x`), nil, stringData("{} x"), stringData("{} x")},
		{"utf-8 BOM", "text/plain", []byte("\xef\xbb\xbfhé"), nil, stringData("hé"), stringData("hé")},
		{"utf-16 LE BOM", "text/plain", []byte{0xff, 0xfe, 'h', 0, 0xe9, 0}, nil, stringData("hé"), stringData("hé")},
		{"invalid utf-8", "text/plain", []byte("a\xffb"), nil, stringData("a\uFFFDb"), stringData("a\uFFFDb")},
		{"body only: text", "text/plain", []byte("hi"), Capabilities{"RpcHttpBodyOnly": "1"}, stringData("hi"), nil},
		{"body only: json stays text", "application/json", []byte(`{"a":1}`), Capabilities{"RpcHttpBodyOnly": "1"}, stringData(`{"a":1}`), nil},
		{"body only: octet-stream", "application/octet-stream", bin, Capabilities{"RpcHttpBodyOnly": "1"}, bytesData(bin), nil},
		{"body only, raw bytes: text", "text/plain", []byte("hi"), pythonCaps, bytesData([]byte("hi")), nil},
		{"empty body", "text/plain", nil, nil, nil, nil},
		{"empty body, node", "application/json", []byte{}, nodeCaps, nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest("PUT", "/api/x", bytes.NewReader(tt.body))
			if tt.contentType != "" {
				r.Header.Set("Content-Type", tt.contentType)
			}
			got := BuildHTTP(r, tt.body, nil, tt.caps)
			if !proto.Equal(got.Body, tt.wantBody) {
				t.Errorf("body = %v, want %v", got.Body, tt.wantBody)
			}
			if !proto.Equal(got.RawBody, tt.wantRaw) {
				t.Errorf("rawBody = %v, want %v", got.RawBody, tt.wantRaw)
			}
			if _, err := proto.Marshal(got); err != nil {
				t.Errorf("marshal: %v", err)
			}
		})
	}
}

func TestBuildHTTPURL(t *testing.T) {
	tests := []struct {
		name  string
		setup func(r *http.Request)
		want  string
	}{
		{"plain", nil, "http://example.com/api/a%20b?x=1%202"},
		{"tls", func(r *http.Request) { r.TLS = &tls.ConnectionState{} }, "https://example.com/api/a%20b?x=1%202"},
		{"forwarded https", func(r *http.Request) { r.Header.Set("X-Forwarded-Proto", "HTTPS, http") }, "https://example.com/api/a%20b?x=1%202"},
		{"forwarded junk", func(r *http.Request) { r.Header.Set("X-Forwarded-Proto", "gopher") }, "http://example.com/api/a%20b?x=1%202"},
		{"host with port", func(r *http.Request) { r.Host = "localhost:7071" }, "http://localhost:7071/api/a%20b?x=1%202"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "http://example.com/api/a%20b?x=1%202", nil)
			if tt.setup != nil {
				tt.setup(r)
			}
			got := BuildHTTP(r, nil, nil, nil)
			if got.Url != tt.want {
				t.Errorf("url = %q, want %q", got.Url, tt.want)
			}
			if got.Query["x"] != "1 2" {
				t.Errorf("query = %v", got.Query)
			}
			if got.Headers["host"] != r.Host {
				t.Errorf("host header = %q", got.Headers["host"])
			}
		})
	}
}

// Go's server passes header values, the raw query and percent-encoded
// path bytes through as they came; what is not UTF-8 reaches the worker as
// U+FFFD, or protobuf could not encode the invocation (and the stream to
// the worker would end with every invocation on it).
func TestBuildHTTPInvalidUTF8(t *testing.T) {
	r, err := http.ReadRequest(bufio.NewReader(strings.NewReader("GET /api/items/%FF%C3?q=\xff HTTP/1.1\r\nHost: h\r\nX-Bin: \xc3(\r\n\r\n")))
	if err != nil {
		t.Fatal(err)
	}
	router, err := NewRouter([]*Function{httpFn("item", "items/{id}")}, DefaultRoutePrefix)
	if err != nil {
		t.Fatal(err)
	}
	fn, params, status := router.Match(r.Method, r.URL.EscapedPath())
	if status != http.StatusOK {
		t.Fatalf("status %d", status)
	}
	if params["id"] != "\ufffd\ufffd" {
		t.Errorf("route parameter %q, want two U+FFFD", params["id"])
	}
	for _, caps := range []Capabilities{nil, nodeCaps} {
		rh := BuildHTTP(r, []byte("x"), params, caps)
		if v := rh.Headers["x-bin"] + rh.NullableHeaders["x-bin"].GetValue(); v != "\ufffd(" {
			t.Errorf("header %q, want %q", v, "\ufffd(")
		}
		input, md := InvocationInput(fn, rh, caps)
		if _, err := proto.Marshal(&rpc.InvocationRequest{InvocationId: "i", InputData: input, TriggerMetadata: md}); err != nil {
			t.Errorf("the invocation cannot be encoded: %v", err)
		}
	}
}

func TestInvocationInput(t *testing.T) {
	node, err := FromWorkerMetadata(&rpc.RpcFunctionMetadata{Name: "hello", FunctionId: "n", RawBindings: nodeV4Raw})
	if err != nil {
		t.Fatal(err)
	}
	py, err := FromWorkerMetadata(&rpc.RpcFunctionMetadata{Name: "hello", FunctionId: "p", RawBindings: pythonV2Raw})
	if err != nil {
		t.Fatal(err)
	}
	headersJSON := mustJSON(map[string]string{
		"host": "example.com", "content-type": "application/json", "x-empty": "",
		"accept": "text/html, application/json", "x-forwarded-proto": "https",
	})
	common := map[string]*rpc.TypedData{
		"user": stringData("bob"), "n": stringData("3"), "ok": stringData("True"), // body properties
		"name": stringData("Ann"), "empty": stringData(""), "multi": stringData("1,2"), // query, "code" left out
		"who":     stringData("Ann"), // route parameter
		"Query":   jsonData(`{"code":"secret","empty":"","multi":"2","name":"Ann"}`),
		"Headers": jsonData(headersJSON),
	}
	tests := []struct {
		name       string
		fn         *Function
		caps       Capabilities
		wantInput  string
		wantExtras map[string]bool // trigger_metadata keys holding the request itself
	}{
		{"node 3.x, v4 app", node, nodeCaps, "httpTrigger624a61988c", nil},
		{"python 4.x, v2 app", py, pythonCaps, "req", nil},
		{"no capabilities", py, nil, "req", map[string]bool{"req": true}},
		{"no capabilities, v4 app", node, Capabilities{}, "httpTrigger624a61988c", map[string]bool{"httpTrigger624a61988c": true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, body := sampleRequest()
			rh := BuildHTTP(r, body, map[string]string{"who": "Ann"}, tt.caps)
			input, md := InvocationInput(tt.fn, rh, tt.caps)
			if len(input) != 1 || input[0].Name != tt.wantInput || input[0].GetData().GetHttp() != rh {
				t.Fatalf("input_data = %v", input)
			}
			want := maps.Clone(common)
			for k := range tt.wantExtras {
				want[k] = &rpc.TypedData{Data: &rpc.TypedData_Http{Http: rh}}
			}
			if len(md) != len(want) {
				t.Errorf("trigger_metadata keys = %v, want %v", keys(md), keys(want))
			}
			for k, w := range want {
				if !proto.Equal(md[k], w) {
					t.Errorf("trigger_metadata[%q] = %v, want %v", k, md[k], w)
				}
			}
			req := &rpc.InvocationRequest{InvocationId: "i", FunctionId: tt.fn.ID, InputData: input, TriggerMetadata: md}
			if _, err := proto.Marshal(req); err != nil {
				t.Errorf("marshal: %v", err)
			}
		})
	}
}

func keys(m map[string]*rpc.TypedData) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func TestInvocationInputKeysAreCaseInsensitive(t *testing.T) {
	fn := httpFn("f", "f/{Id}")
	r := httptest.NewRequest("GET", "http://h/api/f/7?query=q&ID=fromquery&Headers=h", nil)
	rh := BuildHTTP(r, nil, map[string]string{"Id": "7"}, nil)
	_, md := InvocationInput(fn, rh, Capabilities{"RpcHttpTriggerMetadataRemoved": "1"})
	// "query" and "Headers" from the query string take the places of the
	// Query and Headers dictionaries; the route parameter replaces the
	// query value of "ID" and keeps the first spelling.
	want := map[string]*rpc.TypedData{
		"query":   stringData("q"),
		"ID":      stringData("7"),
		"Headers": stringData("h"),
	}
	if len(md) != len(want) {
		t.Fatalf("trigger_metadata = %v", md)
	}
	for k, w := range want {
		if !proto.Equal(md[k], w) {
			t.Errorf("trigger_metadata[%q] = %v, want %v", k, md[k], w)
		}
	}
}

func TestInvocationInputNonObjectBody(t *testing.T) {
	for _, body := range []string{`[1,2]`, `"x"`, `not json`, `{"a":`} {
		r := httptest.NewRequest("POST", "http://h/api/f", strings.NewReader(body))
		r.Header.Set("Content-Type", "application/json")
		rh := BuildHTTP(r, []byte(body), nil, pythonCaps)
		_, md := InvocationInput(httpFn("f", ""), rh, pythonCaps)
		if len(md) != 2 || md["Query"].GetJson() != "{}" || md["Headers"] == nil {
			t.Errorf("body %s: trigger_metadata = %v", body, md)
		}
		var h map[string]string
		if err := json.Unmarshal([]byte(md["Headers"].GetJson()), &h); err != nil || h["content-type"] != "application/json" {
			t.Errorf("Headers = %v (%v)", h, err)
		}
	}
}
