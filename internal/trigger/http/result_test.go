package http

import (
	"context"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/polyfn/polyfn/internal/invoke"
)

// fakeApps routes every path under /api/ to function f of app a, and
// answers with what the test sets.
type fakeApps struct {
	got    chan *invoke.Request
	result *invoke.Result
}

func (f *fakeApps) HasApps() bool { return true }
func (f *fakeApps) RouteApp(_ context.Context, req *invoke.Request) error {
	if !strings.HasPrefix(req.HTTPRequest.Path, "/api/") {
		return invoke.Errorf(invoke.KindNotFound, "no function serves %s", req.HTTPRequest.Path)
	}
	req.App, req.Function, req.HTTPRequest.Params = "a", "f", map[string]string{"rest": strings.TrimPrefix(req.HTTPRequest.Path, "/api/")}
	return nil
}
func (f *fakeApps) Invoke(_ context.Context, req *invoke.Request) (*invoke.Result, error) {
	f.got <- req
	return f.result, nil
}

var (
	_ Invoker   = (*fakeApps)(nil)
	_ AppRouter = (*fakeApps)(nil)
)

// The trigger hands an app function the request as it came, routed, and
// writes the result the protocol adapter decoded: its status, every value
// of every header, its body with its length.
func TestAppRequestAndResultPassThrough(t *testing.T) {
	apps := &fakeApps{got: make(chan *invoke.Request, 1), result: &invoke.Result{
		Payload: []byte(strings.Repeat("x", 3000)),
		HTTP: &invoke.HTTPResponse{Status: 201, Header: http.Header{
			"Content-Type": {"text/plain"}, "Set-Cookie": {"a=1; path=/", "b=2; path=/"}, "Content-Length": {"7"}}},
	}}
	s := serve(t, "{}", apps)
	req, err := http.NewRequest(http.MethodPut, "http://"+s.addr+"/api/items/a%2Fb?q=1&q=2", strings.NewReader("body"))
	if err != nil {
		t.Fatal(err)
	}
	req.Header["X-Multi"] = []string{"one", "two"}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()

	got := <-apps.got
	hr := got.HTTPRequest
	if got.App != "a" || got.Function != "f" || string(got.Payload) != "body" || got.ID != resp.Header.Get(InvocationIDHeader) {
		t.Errorf("request: app %q function %q payload %q id %q", got.App, got.Function, got.Payload, got.ID)
	}
	if hr.Method != http.MethodPut || hr.Path != "/api/items/a%2Fb" || hr.RawQuery != "q=1&q=2" || hr.Host != s.addr ||
		strings.Join(hr.Header["X-Multi"], "|") != "one|two" || hr.Params["rest"] != "items/a%2Fb" {
		t.Errorf("HTTP request as handed over: %+v", hr)
	}
	if resp.StatusCode != 201 || len(body) != 3000 || resp.Header.Get("Content-Length") != strconv.Itoa(3000) ||
		strings.Join(resp.Header["Set-Cookie"], "|") != "a=1; path=/|b=2; path=/" || resp.Header.Get("Content-Type") != "text/plain" {
		t.Fatalf("response: %d, %d bytes, header %v", resp.StatusCode, len(body), resp.Header)
	}
}

// A 204 result is written without a body.
func TestNoContentResultHasNoBody(t *testing.T) {
	s := serve(t, "{}", invokerFunc(func(context.Context, *invoke.Request) (*invoke.Result, error) {
		return &invoke.Result{Payload: []byte(`{"ignored":true}`), HTTP: &invoke.HTTPResponse{Status: 204}}, nil
	}))
	resp, err := http.Post("http://"+s.addr+"/function/f", "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 204 || len(body) != 0 {
		t.Fatalf("got %d %q, want 204 without a body", resp.StatusCode, body)
	}
}
