package http

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/polyfn/polyfn/internal/config"
	"github.com/polyfn/polyfn/internal/invoke"
	"github.com/polyfn/polyfn/internal/testlog"
)

// The tests in this file run the trigger's real server on a loopback port
// behind an Invoker of their own: what is under test is the HTTP layer
// (timeouts, bounds, error mapping), not a worker.

// invokerFunc is an Invoker made of a function.
type invokerFunc func(ctx context.Context, req *invoke.Request) (*invoke.Result, error)

func (f invokerFunc) Invoke(ctx context.Context, req *invoke.Request) (*invoke.Result, error) {
	return f(ctx, req)
}

func echo(_ context.Context, req *invoke.Request) (*invoke.Result, error) {
	return &invoke.Result{Payload: req.Payload}, nil
}

type testServer struct {
	*Server
	addr string
	logs *testlog.Buffer
}

// serve starts the trigger's server for the http section httpYAML (a YAML
// flow mapping) in front of inv.
func serve(t *testing.T, httpYAML string, inv Invoker) *testServer {
	t.Helper()
	cfg, err := config.Parse(t.TempDir()+"/polyfn.yaml", []byte("mqtt: {embedded: false}\nhttp: "+httpYAML+"\n"))
	if err != nil {
		t.Fatal(err)
	}
	return startServer(t, cfg, func(s *Server, log *slog.Logger) http.Handler {
		return NewHandler(inv, s, int64(cfg.HTTP.MaxBody), log)
	})
}

// startServer serves the handler that handler makes for cfg's http
// section on a loopback port, until the test ends (its log is shown if the
// test failed).
func startServer(t *testing.T, cfg *config.Config, handler func(*Server, *slog.Logger) http.Handler) *testServer {
	t.Helper()
	logs := &testlog.Buffer{}
	log := slog.New(slog.NewTextHandler(logs, nil))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := NewServer(cfg.HTTP, log)
	h := handler(s, log)
	done := make(chan struct{})
	go func() { defer close(done); _ = s.Serve(ln, h) }()
	t.Cleanup(func() {
		_ = s.Close()
		<-done
		if t.Failed() {
			t.Logf("server log:\n%s", logs)
		}
	})
	return &testServer{Server: s, addr: ln.Addr().String(), logs: logs}
}

// dial opens a raw connection to the server, closed with the test.
func (s *testServer) dial(t *testing.T) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func write(t *testing.T, c net.Conn, s string) {
	t.Helper()
	if _, err := io.WriteString(c, s); err != nil {
		t.Fatal(err)
	}
}

// waitFor polls cond until it holds, failing the test after timeout.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// closedResponse reads what the server sends on c until it closes the
// connection (within limit): the response, if any, and whether it closed.
func closedResponse(c net.Conn, limit time.Duration) (resp *http.Response, body []byte, closed bool) {
	_ = c.SetReadDeadline(time.Now().Add(limit))
	all, err := io.ReadAll(c)
	closed = !errors.Is(err, os.ErrDeadlineExceeded)
	if len(all) > 0 {
		if r, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(all)), nil); err == nil {
			body, _ = io.ReadAll(r.Body)
			resp = r
		}
	}
	return resp, body, closed
}

// errorType decodes the JSON error document of an error response.
func errorType(t *testing.T, resp *http.Response, body []byte) string {
	t.Helper()
	var eb ErrorBody
	if err := json.Unmarshal(body, &eb); err != nil || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("%d response is not the JSON error document: %q", resp.StatusCode, body)
	}
	return eb.Error.Type
}

// A body's buffer grows with the bytes that arrived, never with the
// declared Content-Length: a client that declares max_body and sends one
// kilobyte holds one first chunk of the body budget, not max_body.
func TestBodyBufferFollowsWhatArrived(t *testing.T) {
	s := serve(t, "{max_body: 6Mi}", invokerFunc(echo))
	c := s.dial(t)
	const declared = 6 << 20
	write(t, c, fmt.Sprintf("POST /function/f HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", declared))
	write(t, c, strings.Repeat("a", 1024))
	waitFor(t, 5*time.Second, "the body to be read", func() bool { return s.buffered.Load() > 0 })
	if got := s.buffered.Load(); got != firstChunk {
		t.Fatalf("a body that declared %d bytes and sent 1024 holds %d bytes, want %d (one first chunk)", declared, got, firstChunk)
	}
	// The rest arrives: the buffer grows to the whole body, and the budget
	// is whole again once the request is done.
	write(t, c, strings.Repeat("b", declared-1024))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || len(body) != declared || body[0] != 'a' || body[declared-1] != 'b' {
		t.Fatalf("got %d with %d bytes, want 200 echoing the %d bytes", resp.StatusCode, len(body), declared)
	}
	waitFor(t, 5*time.Second, "the budget to be given back", func() bool { return s.buffered.Load() == 0 })
}

// Past http.max_body_total a request gets 503 HostBusy with Retry-After
// and a JSON error, instead of memory; the others are served.
func TestBodyBudget(t *testing.T) {
	s := serve(t, "{max_body: 64Ki, max_body_total: 64Ki}", invokerFunc(echo))
	a := s.dial(t)
	write(t, a, "POST /function/f HTTP/1.1\r\nHost: x\r\nContent-Length: 65536\r\n\r\n"+strings.Repeat("a", 40<<10))
	waitFor(t, 5*time.Second, "the first body to hold the whole budget", func() bool { return s.buffered.Load() == 64<<10 })

	resp, err := http.Post("http://"+s.addr+"/function/f", "text/plain", strings.NewReader("small"))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" || errorType(t, resp, body) != "HostBusy" ||
		!strings.Contains(string(body), "http.max_body_total") {
		t.Fatalf("past the body budget: got %d %q (Retry-After %q), want 503 HostBusy naming http.max_body_total", resp.StatusCode, body, resp.Header.Get("Retry-After"))
	}

	write(t, a, strings.Repeat("a", 24<<10))
	ra, err := http.ReadResponse(bufio.NewReader(a), nil)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := io.ReadAll(ra.Body); ra.StatusCode != 200 || len(b) != 64<<10 {
		t.Fatalf("the request holding the budget: got %d with %d bytes, want 200 with 65536", ra.StatusCode, len(b))
	}
	waitFor(t, 5*time.Second, "the budget to be given back", func() bool { return s.buffered.Load() == 0 })
	resp, err = http.Post("http://"+s.addr+"/function/f", "text/plain", strings.NewReader("small"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("after the budget was given back: got %d, want 200", resp.StatusCode)
	}
	if m := scrape(t, s); !strings.Contains(m, `polyfn_http_rejected_total{reason="max_body_total"} 1`) {
		t.Errorf("metrics do not count the rejection:\n%s", m)
	}
}

// scrape returns the listener's metrics in the text format.
func scrape(t *testing.T, s *testServer) string {
	t.Helper()
	mfs, err := s.Metrics().Gather()
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			fmt.Fprintf(&b, "%s", mf.GetName())
			if len(m.GetLabel()) > 0 {
				var ls []string
				for _, l := range m.GetLabel() {
					ls = append(ls, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
				}
				fmt.Fprintf(&b, "{%s}", strings.Join(ls, ","))
			}
			v := m.GetCounter().GetValue() + m.GetGauge().GetValue()
			fmt.Fprintf(&b, " %g\n", v)
		}
	}
	return b.String()
}

// A client that stalls is cut off at the timeout of what it stalls in: a
// body that does not arrive (or arrives too slowly: the body timeout is
// overall, not per read) gets a JSON 408 and the connection is closed; a
// header that does not arrive and an idle keep-alive connection are
// closed without a response; a declared body above max_body gets 413 at
// once.
func TestStalledClientsAreClosed(t *testing.T) {
	s := serve(t, "{max_body: 1Mi, read_header_timeout: 300ms, body_timeout: 300ms, idle_timeout: 300ms}", invokerFunc(echo))
	tests := []struct {
		name string
		send func(t *testing.T, c net.Conn)
		// status is the response expected before the close; 0: none.
		status int
		typ    string
	}{
		{"headers then one byte", func(t *testing.T, c net.Conn) {
			write(t, c, "POST /function/f HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\nx")
		}, http.StatusRequestTimeout, "RequestTimeout"},
		{"body dribbled a byte at a time", func(t *testing.T, c net.Conn) {
			write(t, c, "POST /function/f HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n")
			go func() {
				for {
					time.Sleep(20 * time.Millisecond)
					if _, err := c.Write([]byte("x")); err != nil {
						return
					}
				}
			}()
		}, http.StatusRequestTimeout, "RequestTimeout"},
		{"chunked body that stalls", func(t *testing.T, c net.Conn) {
			write(t, c, "POST /function/f HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
		}, http.StatusRequestTimeout, "RequestTimeout"},
		{"huge declared length, tiny body", func(t *testing.T, c net.Conn) {
			write(t, c, "POST /function/f HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000000\r\n\r\nx")
		}, http.StatusRequestEntityTooLarge, "PayloadTooLarge"},
		{"header that never ends", func(t *testing.T, c net.Conn) {
			write(t, c, "POST /function/f HTTP/1.1\r\nHost: x\r\nX-Slow: ")
		}, 0, ""},
		{"nothing at all", func(t *testing.T, c net.Conn) {}, 0, ""},
		{"idle keep-alive", func(t *testing.T, c net.Conn) {
			write(t, c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil || resp.StatusCode != 200 {
				t.Fatalf("healthz: %v %v", resp, err)
			}
			// bufio may hold nothing more: the response is complete.
		}, 0, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := s.dial(t)
			tt.send(t, c)
			if tt.name == "idle keep-alive" {
				_, _, closed := closedResponse(c, 10*time.Second)
				if !closed {
					t.Fatal("the idle connection is still open after 10s (idle_timeout 300ms)")
				}
				return
			}
			resp, body, closed := closedResponse(c, 10*time.Second)
			if !closed {
				t.Fatal("the connection is still open after 10s (timeouts 300ms)")
			}
			switch {
			case tt.status == 0 && resp != nil:
				t.Fatalf("got a %d response, want the connection closed without one", resp.StatusCode)
			case tt.status != 0 && resp == nil:
				t.Fatalf("got no response before the close, want %d", tt.status)
			case tt.status != 0 && (resp.StatusCode != tt.status || errorType(t, resp, body) != tt.typ):
				t.Fatalf("got %d %q, want %d %s", resp.StatusCode, body, tt.status, tt.typ)
			}
		})
	}
	if m := scrape(t, s); !strings.Contains(m, `polyfn_http_rejected_total{reason="body_timeout"} 3`) ||
		!strings.Contains(m, `polyfn_http_rejected_total{reason="max_body"} 1`) {
		t.Errorf("metrics do not count the rejections:\n%s", m)
	}
	waitFor(t, 5*time.Second, "every connection to be closed", func() bool { return s.open.Load() == 0 })
}

// Past http.max_connections a new connection gets 503 HostBusy and is
// closed at once; when a connection closes, a new one is served.
func TestConnectionLimit(t *testing.T) {
	s := serve(t, "{max_connections: 3}", invokerFunc(echo))
	var held []net.Conn
	for range 3 {
		c := s.dial(t)
		write(t, c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
		if resp, err := http.ReadResponse(bufio.NewReader(c), nil); err != nil || resp.StatusCode != 200 {
			t.Fatalf("healthz: %v %v", resp, err)
		}
		held = append(held, c)
	}
	c := s.dial(t)
	write(t, c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, body, closed := closedResponse(c, 10*time.Second)
	if resp == nil || !closed || resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" ||
		errorType(t, resp, body) != "HostBusy" || !strings.Contains(string(body), "http.max_connections") {
		t.Fatalf("connection past the limit: got %v %q (closed: %v), want 503 HostBusy naming http.max_connections, then closed", resp, body, closed)
	}
	held[0].Close()
	waitFor(t, 5*time.Second, "a connection to be served again", func() bool {
		resp, err := http.Get("http://" + s.addr + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	if m := scrape(t, s); !strings.Contains(m, `polyfn_http_rejected_total{reason="max_connections"}`) ||
		strings.Contains(m, `polyfn_http_rejected_total{reason="max_connections"} 0`) {
		t.Errorf("metrics do not count the refused connection:\n%s", m)
	}
	if !strings.Contains(s.logs.String(), "http.max_connections") {
		t.Errorf("no warning names the bound:\n%s", s.logs)
	}
}

// The body and write timeouts bound the client, not the function: an
// invocation that runs past both still answers.
func TestLongFunctionOutlivesBodyAndWriteTimeouts(t *testing.T) {
	s := serve(t, "{body_timeout: 100ms, write_timeout: 100ms}", invokerFunc(func(ctx context.Context, req *invoke.Request) (*invoke.Result, error) {
		select {
		case <-time.After(500 * time.Millisecond):
			return &invoke.Result{Payload: req.Payload}, nil
		case <-ctx.Done():
			return nil, invoke.Errorf(invoke.KindUnavailable, "cancelled: %v", context.Cause(ctx))
		}
	}))
	resp, err := http.Post("http://"+s.addr+"/function/f", "text/plain", strings.NewReader("slow"))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "slow" {
		t.Fatalf("got %d %q, want 200 \"slow\"", resp.StatusCode, body)
	}
}

// A client that does not read its response is cut off after write_timeout.
func TestStalledReaderIsClosed(t *testing.T) {
	big := bytes.Repeat([]byte("r"), 64<<20)
	s := serve(t, "{write_timeout: 200ms}", invokerFunc(func(context.Context, *invoke.Request) (*invoke.Result, error) {
		return &invoke.Result{Payload: big}, nil
	}))
	c := s.dial(t)
	_ = c.(*net.TCPConn).SetReadBuffer(4096)
	write(t, c, "GET /function/f HTTP/1.1\r\nHost: x\r\n\r\n")
	waitFor(t, 10*time.Second, "the server to close the connection of a client that does not read", func() bool { return s.open.Load() == 0 })
}

// An error that is not an invocation error has no known origin: the host
// answers 500 InternalError and logs it as its own bug, never as the
// function's error.
func TestUnknownErrorIsInternal(t *testing.T) {
	s := serve(t, "{}", invokerFunc(func(context.Context, *invoke.Request) (*invoke.Result, error) {
		return nil, fmt.Errorf("encode invocation: %w", errors.New("secret detail"))
	}))
	resp, err := http.Post("http://"+s.addr+"/function/f", "text/plain", strings.NewReader("x"))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	id := resp.Header.Get(InvocationIDHeader)
	if resp.StatusCode != http.StatusInternalServerError || errorType(t, resp, body) != "InternalError" ||
		strings.Contains(string(body), "secret detail") || !strings.Contains(string(body), id) {
		t.Fatalf("got %d %q, want 500 InternalError naming the invocation %s and not the cause", resp.StatusCode, body, id)
	}
	if l := s.logs.String(); !strings.Contains(l, "level=ERROR") || !strings.Contains(l, "secret detail") || !strings.Contains(l, id) {
		t.Fatalf("the cause is not logged as an error with the invocation id:\n%s", l)
	}
}
