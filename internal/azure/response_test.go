package azure

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	rpc "github.com/polyfn/polyfn/api/azure"
	"google.golang.org/protobuf/types/known/timestamppb"
)

func httpData(h *rpc.RpcHttp) *rpc.TypedData {
	return &rpc.TypedData{Data: &rpc.TypedData_Http{Http: h}}
}

func output(name string, td *rpc.TypedData) *rpc.ParameterBinding {
	return &rpc.ParameterBinding{Name: name, RpcData: &rpc.ParameterBinding_Data{Data: td}}
}

func success() *rpc.StatusResult { return &rpc.StatusResult{Status: rpc.StatusResult_Success} }

func TestWriteResponse(t *testing.T) {
	res := &Function{Name: "HttpNode", HTTP: &HTTPTrigger{BindingName: "req", OutputBinding: "res"}}
	ret := &Function{Name: "hello", HTTP: &HTTPTrigger{BindingName: "httpTrigger624a61988c", OutputBinding: "$return"}}
	expires := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

	tests := []struct {
		name       string
		fn         *Function
		resp       *rpc.InvocationResponse
		wantStatus int
		wantHeader map[string][]string // checked keys only; nil value = absent
		wantBody   string
	}{
		{
			name: "function.json app: string body in output_data res, no content type",
			fn:   res,
			resp: &rpc.InvocationResponse{InvocationId: "1", Result: success(), OutputData: []*rpc.ParameterBinding{
				output("res", httpData(&rpc.RpcHttp{Body: stringData("Hello, Ann. This HTTP triggered function executed successfully.")})),
			}},
			wantStatus: 200,
			wantHeader: map[string][]string{"Content-Type": {ContentTypeText}, "Content-Length": {"63"}},
			wantBody:   "Hello, Ann. This HTTP triggered function executed successfully.",
		},
		{
			name: "v4 app: bytes body in return_value with headers and status 201",
			fn:   ret,
			resp: &rpc.InvocationResponse{InvocationId: "2", Result: success(), ReturnValue: httpData(&rpc.RpcHttp{
				StatusCode: "201",
				Headers:    map[string]string{"content-type": "text/plain;charset=UTF-8", "x-request-id": "abc", "location": "/api/items/7"},
				Body:       bytesData([]byte("created")),
			})},
			wantStatus: 201,
			wantHeader: map[string][]string{"Content-Type": {"text/plain;charset=UTF-8"}, "X-Request-Id": {"abc"}, "Location": {"/api/items/7"}},
			wantBody:   "created",
		},
		{
			name: "python decorator app: bytes body, mimetype header",
			fn:   &Function{Name: "hello", HTTP: &HTTPTrigger{BindingName: "req", OutputBinding: "$return"}},
			resp: &rpc.InvocationResponse{Result: success(), ReturnValue: httpData(&rpc.RpcHttp{
				StatusCode: "200", Headers: map[string]string{"Content-Type": "application/json"},
				Body: bytesData([]byte(`{"hello":"Ann"}`)),
			})},
			wantStatus: 200,
			wantHeader: map[string][]string{"Content-Type": {"application/json"}},
			wantBody:   `{"hello":"Ann"}`,
		},
		{
			name:       "bytes body without content type",
			fn:         ret,
			resp:       &rpc.InvocationResponse{ReturnValue: httpData(&rpc.RpcHttp{Body: bytesData([]byte{1, 2, 3})})},
			wantStatus: 200, wantHeader: map[string][]string{"Content-Type": {ContentTypeBinary}}, wantBody: "\x01\x02\x03",
		},
		{
			name: "cookies",
			fn:   ret,
			resp: &rpc.InvocationResponse{ReturnValue: httpData(&rpc.RpcHttp{
				Body: stringData("ok"),
				Cookies: []*rpc.RpcHttpCookie{
					{
						Name: "session", Value: "a b;c",
						Domain:   &rpc.NullableString{String_: &rpc.NullableString_Value{Value: "example.com"}},
						Path:     &rpc.NullableString{String_: &rpc.NullableString_Value{Value: "/api"}},
						Expires:  &rpc.NullableTimestamp{Timestamp: &rpc.NullableTimestamp_Value{Value: timestamppb.New(expires)}},
						Secure:   &rpc.NullableBool{Bool: &rpc.NullableBool_Value{Value: true}},
						HttpOnly: &rpc.NullableBool{Bool: &rpc.NullableBool_Value{Value: true}},
						SameSite: rpc.RpcHttpCookie_Strict,
						MaxAge:   &rpc.NullableDouble{Double: &rpc.NullableDouble_Value{Value: 3600.9}},
					},
					{Name: "plain", Value: "v"},
					{Name: "lax", Value: "1", SameSite: rpc.RpcHttpCookie_Lax, Secure: &rpc.NullableBool{Bool: &rpc.NullableBool_Value{Value: false}}},
					{Name: "none", Value: "1", SameSite: rpc.RpcHttpCookie_ExplicitNone, MaxAge: &rpc.NullableDouble{Double: &rpc.NullableDouble_Value{Value: -5}}},
				},
			})},
			wantStatus: 200,
			wantHeader: map[string][]string{"Set-Cookie": {
				"session=a%20b%3Bc; expires=Wed, 02 Jan 2030 03:04:05 GMT; max-age=3600; domain=example.com; path=/api; secure; samesite=strict; httponly",
				"plain=v; path=/",
				"lax=1; path=/; samesite=lax",
				"none=1; max-age=0; path=/; samesite=none",
			}},
			wantBody: "ok",
		},
		{
			name: "json body gets application/json",
			fn:   res,
			resp: &rpc.InvocationResponse{OutputData: []*rpc.ParameterBinding{output("res", httpData(&rpc.RpcHttp{
				StatusCode: "202", Body: jsonData(`{"status":"queued"}`),
			}))}},
			wantStatus: 202, wantHeader: map[string][]string{"Content-Type": {ContentTypeJSON}}, wantBody: `{"status":"queued"}`,
		},
		{
			name: "json body keeps the function's content type",
			fn:   res,
			resp: &rpc.InvocationResponse{OutputData: []*rpc.ParameterBinding{output("res", httpData(&rpc.RpcHttp{
				Headers: map[string]string{"Content-Type": "application/problem+json"}, Body: jsonData(`{"title":"x"}`),
			}))}},
			wantStatus: 200, wantHeader: map[string][]string{"Content-Type": {"application/problem+json"}}, wantBody: `{"title":"x"}`,
		},
		{
			name:       "int and padded status",
			fn:         ret,
			resp:       &rpc.InvocationResponse{ReturnValue: httpData(&rpc.RpcHttp{StatusCode: " 404 ", Body: &rpc.TypedData{Data: &rpc.TypedData_Int{Int: -42}}})},
			wantStatus: 404, wantHeader: map[string][]string{"Content-Type": {ContentTypeText}}, wantBody: "-42",
		},
		{
			name:       "double body",
			fn:         ret,
			resp:       &rpc.InvocationResponse{ReturnValue: httpData(&rpc.RpcHttp{Body: &rpc.TypedData{Data: &rpc.TypedData_Double{Double: 2.5}}})},
			wantStatus: 200, wantHeader: map[string][]string{"Content-Type": {ContentTypeText}}, wantBody: "2.5",
		},
		{
			name: "nested http body is unwrapped",
			fn:   ret,
			resp: &rpc.InvocationResponse{ReturnValue: httpData(&rpc.RpcHttp{StatusCode: "203",
				Body: httpData(&rpc.RpcHttp{StatusCode: "500", Body: stringData("inner")})})},
			wantStatus: 203, wantHeader: map[string][]string{"Content-Type": {ContentTypeText}}, wantBody: "inner",
		},
		{
			name:       "plain string return value",
			fn:         ret,
			resp:       &rpc.InvocationResponse{ReturnValue: stringData("just text")},
			wantStatus: 200, wantHeader: map[string][]string{"Content-Type": {ContentTypeText}}, wantBody: "just text",
		},
		{
			name:       "plain json return value",
			fn:         ret,
			resp:       &rpc.InvocationResponse{ReturnValue: jsonData(`[1,2]`)},
			wantStatus: 200, wantHeader: map[string][]string{"Content-Type": {ContentTypeJSON}}, wantBody: `[1,2]`,
		},
		{
			name:       "plain bytes in output_data res",
			fn:         res,
			resp:       &rpc.InvocationResponse{OutputData: []*rpc.ParameterBinding{output("res", bytesData([]byte("raw")))}},
			wantStatus: 200, wantHeader: map[string][]string{"Content-Type": {ContentTypeBinary}}, wantBody: "raw",
		},
		{
			name:       "return_value accepted when output_data has nothing",
			fn:         res,
			resp:       &rpc.InvocationResponse{ReturnValue: httpData(&rpc.RpcHttp{StatusCode: "200", Body: stringData("from return")})},
			wantStatus: 200, wantBody: "from return",
		},
		{
			name: "output binding name matched without regard to case",
			fn:   res,
			resp: &rpc.InvocationResponse{OutputData: []*rpc.ParameterBinding{
				output("other", stringData("no")), output("Res", httpData(&rpc.RpcHttp{Body: stringData("yes")})),
			}},
			wantStatus: 200, wantBody: "yes",
		},
		{
			name:       "no result at all",
			fn:         res,
			resp:       &rpc.InvocationResponse{Result: success()},
			wantStatus: 200, wantHeader: map[string][]string{"Content-Type": nil, "Content-Length": {"0"}}, wantBody: "",
		},
		{
			name: "nullable headers and dropped length",
			fn:   ret,
			resp: &rpc.InvocationResponse{ReturnValue: httpData(&rpc.RpcHttp{
				Headers:         map[string]string{"Content-Length": "999", "Transfer-Encoding": "chunked", "X-A": "plain"},
				NullableHeaders: map[string]*rpc.NullableString{"X-A": nullableString("ignored"), "x-b": nullableString("nullable"), "x-c": {}},
				Body:            stringData("abc"),
			})},
			wantStatus: 200,
			wantHeader: map[string][]string{"Content-Length": {"3"}, "Transfer-Encoding": nil, "X-A": {"plain"}, "X-B": {"nullable"}, "X-C": nil},
			wantBody:   "abc",
		},
		{
			name:       "204 is written without a body",
			fn:         ret,
			resp:       &rpc.InvocationResponse{ReturnValue: httpData(&rpc.RpcHttp{StatusCode: "204", Body: stringData("ignored")})},
			wantStatus: 204, wantHeader: map[string][]string{"Content-Length": nil}, wantBody: "",
		},
		{
			name:       "no function: $return",
			fn:         nil,
			resp:       &rpc.InvocationResponse{ReturnValue: httpData(&rpc.RpcHttp{StatusCode: "418"})},
			wantStatus: 418, wantBody: "",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			if err := WriteResponse(rec, tt.fn, tt.resp); err != nil {
				t.Fatal(err)
			}
			if rec.Code != tt.wantStatus {
				t.Errorf("status = %d, want %d", rec.Code, tt.wantStatus)
			}
			for k, want := range tt.wantHeader {
				got := rec.Header().Values(k)
				if strings.Join(got, "\n") != strings.Join(want, "\n") {
					t.Errorf("header %s = %q, want %q", k, got, want)
				}
			}
			if rec.Body.String() != tt.wantBody {
				t.Errorf("body = %q, want %q", rec.Body.String(), tt.wantBody)
			}
		})
	}
}

func TestWriteResponseErrors(t *testing.T) {
	ret := &Function{Name: "hello", HTTP: &HTTPTrigger{BindingName: "req", OutputBinding: "$return"}}
	withHTTP := func(h *rpc.RpcHttp) *rpc.InvocationResponse { return &rpc.InvocationResponse{ReturnValue: httpData(h)} }
	tests := []struct {
		name string
		resp *rpc.InvocationResponse
		want string
	}{
		{"status not a number", withHTTP(&rpc.RpcHttp{StatusCode: "OK"}), `invalid HTTP status code "OK"`},
		{"status too small", withHTTP(&rpc.RpcHttp{StatusCode: "99"}), `invalid HTTP status code "99"`},
		{"informational status", withHTTP(&rpc.RpcHttp{StatusCode: "100"}), `invalid HTTP status code "100"`},
		{"status too big", withHTTP(&rpc.RpcHttp{StatusCode: "1000"}), `invalid HTTP status code "1000"`},
		{"bad header name", withHTTP(&rpc.RpcHttp{Headers: map[string]string{"bad header": "x"}}), `invalid header name "bad header"`},
		{"header injection", withHTTP(&rpc.RpcHttp{Headers: map[string]string{"x": "a\r\nSet-Cookie: y"}}), "control character"},
		{"bad cookie name", withHTTP(&rpc.RpcHttp{Cookies: []*rpc.RpcHttpCookie{{Name: "a b"}}}), `invalid cookie name "a b"`},
		{"collection body", withHTTP(&rpc.RpcHttp{Body: &rpc.TypedData{Data: &rpc.TypedData_CollectionString{CollectionString: &rpc.CollectionString{String_: []string{"a"}}}}}), "cannot be sent over HTTP"},
		{"collection result", &rpc.InvocationResponse{ReturnValue: &rpc.TypedData{Data: &rpc.TypedData_CollectionSint64{CollectionSint64: &rpc.CollectionSInt64{Sint64: []int64{1}}}}}, "cannot be sent over HTTP"},
		{"shared memory", &rpc.InvocationResponse{OutputData: []*rpc.ParameterBinding{{Name: "$return", RpcData: &rpc.ParameterBinding_RpcSharedMemory{RpcSharedMemory: &rpc.RpcSharedMemory{Name: "m"}}}}}, "shared memory"},
		{"nil response", nil, "no invocation response"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			err := WriteResponse(rec, ret, tt.resp)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error = %v, want %q", err, tt.want)
			}
			if rec.Body.Len() != 0 || len(rec.Header()) != 0 || rec.Flushed {
				t.Errorf("something was written: %d %v %q", rec.Code, rec.Header(), rec.Body.String())
			}
		})
	}
}

func TestDecodeResponse(t *testing.T) {
	res, err := DecodeResponse(nil, &rpc.InvocationResponse{ReturnValue: httpData(&rpc.RpcHttp{
		StatusCode: "201", Headers: map[string]string{"x-one": "1"}, Body: stringData("b"),
	})})
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != 201 || string(res.Body) != "b" || res.Header.Get("X-One") != "1" || res.Header.Get("Content-Type") != ContentTypeText {
		t.Errorf("DecodeResponse = %+v", res)
	}
	// Write replaces headers already in the writer.
	rec := httptest.NewRecorder()
	rec.Header().Set("X-One", "old")
	if err := res.Write(rec); err != nil {
		t.Fatal(err)
	}
	if got := rec.Header().Values("X-One"); len(got) != 1 || got[0] != "1" {
		t.Errorf("X-One = %q", got)
	}
	if rec.Code != http.StatusCreated {
		t.Errorf("code = %d", rec.Code)
	}
}

func TestFormatDouble(t *testing.T) {
	for in, want := range map[float64]string{2.5: "2.5", 1e6: "1000000", -0.25: "-0.25", 1e21: "1E+21", 0: "0", 1e-7: "1E-07"} {
		if got := formatDouble(in); got != want {
			t.Errorf("formatDouble(%v) = %q, want %q", in, got, want)
		}
	}
}
