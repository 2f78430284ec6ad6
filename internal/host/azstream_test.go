package host_test

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/polyfn/polyfn/internal/hosttest"
)

const azureStreamConfig = `
http: {max_body: 1Mi, max_stream_body: 16Mi}
runtimes:
  stream-worker:
    protocol: stream
    command: ["{self}"]
    env: {POLYFN_FAKE_WORKER: azure-stream}
    cancel_grace: 30s
functions:
  - {name: streamapp, runtime: stream-worker, codedir: "{app}"}
`

// An app whose worker serves HTTP itself (HttpUri) streams request and
// response bodies larger than http.max_body both ways, and a client that
// goes away mid-stream closes the worker's request without hurting the
// host.
func TestAzureHTTPStreaming(t *testing.T) {
	th := hosttest.Start(t, t.TempDir(), azureStreamConfig, "{self}", hosttest.Self(t), "{app}", t.TempDir())

	t.Run("8 MiB both ways past max_body 1 MiB", func(t *testing.T) {
		body := make([]byte, 8<<20)
		rand.New(rand.NewSource(1)).Read(body)
		want := sha256.Sum256(body)
		for _, chunked := range []bool{false, true} {
			var rd io.Reader = bytes.NewReader(body)
			if chunked {
				rd = io.MultiReader(rd) // no length known: sent chunked
			}
			req, err := http.NewRequest(http.MethodPost, th.URL+"/api/stream/echo", rd)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			h := sha256.New()
			n, err := io.Copy(h, resp.Body)
			resp.Body.Close()
			if err != nil || resp.StatusCode != 200 || n != int64(len(body)) || !bytes.Equal(h.Sum(nil), want[:]) {
				t.Fatalf("chunked=%v: got %d, %d bytes, err %v, checksum match %v", chunked, resp.StatusCode, n, err, bytes.Equal(h.Sum(nil), want[:]))
			}
			if resp.Header.Get("X-Polyfn-Invocation-Id") == "" {
				t.Error("no invocation id header")
			}
		}
	})

	t.Run("declared body past max_stream_body is refused", func(t *testing.T) {
		c, err := net.Dial("tcp", strings.TrimPrefix(th.URL, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_, _ = io.WriteString(c, "POST /api/stream/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 17000000\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusRequestEntityTooLarge || !strings.Contains(string(b), "http.max_stream_body") {
			t.Fatalf("got %d %s", resp.StatusCode, b)
		}
	})

	t.Run("chunked body past max_stream_body", func(t *testing.T) {
		body := make([]byte, 17<<20)
		req, err := http.NewRequest(http.MethodPost, th.URL+"/api/stream/sum", io.MultiReader(bytes.NewReader(body)))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestEntityTooLarge || !strings.Contains(string(b), "http.max_stream_body") {
			t.Fatalf("got %d %s", resp.StatusCode, b)
		}
		hosttest.WaitFor(t, 10*time.Second, "the worker to see its request body break off", func() bool {
			return strings.Contains(th.Logs.String(), "worker's request body broke off")
		})
		// Within the limit the whole body arrives.
		r := th.Do(t, http.MethodPost, "/api/stream/sum", body[:3<<20], nil)
		want := sha256.Sum256(body[:3<<20])
		if r.Status != 200 || string(r.Body) != fmt.Sprintf("%d %x", 3<<20, want) {
			t.Fatalf("got %d %q", r.Status, r.Body)
		}
	})

	t.Run("function fails before it answers", func(t *testing.T) {
		r := th.Do(t, http.MethodPost, "/api/stream/fail", []byte("x"), nil)
		if r.Status != http.StatusInternalServerError || r.Err.Error.Message != "the function failed" {
			t.Fatalf("got %d %+v", r.Status, r.Err)
		}
		hosttest.WaitFor(t, 10*time.Second, "the worker to see its request closed", func() bool {
			return strings.Contains(th.Logs.String(), "failed function's request closed")
		})
	})

	t.Run("client gone mid-stream", func(t *testing.T) {
		resp, err := http.Get(th.URL + "/api/stream/hang")
		if err != nil {
			t.Fatal(err)
		}
		line, err := bufio.NewReader(resp.Body).ReadString('\n')
		if err != nil || line != "first chunk\n" {
			t.Fatalf("first chunk: %q %v", line, err)
		}
		resp.Body.Close() // the client goes away
		hosttest.WaitFor(t, 10*time.Second, "the worker to see its request closed", func() bool {
			return strings.Contains(th.Logs.String(), "worker saw its request closed")
		})
		hosttest.WaitFor(t, 10*time.Second, "no invocation left in flight", func() bool {
			for _, a := range th.AppStatus() {
				if a.Name == "streamapp" && a.InFlight == 0 {
					return true
				}
			}
			return false
		})
		// The host keeps serving, on the same instance; the invocation id the
		// worker pairs the request by is the host's, whatever the client sent.
		r := th.Do(t, http.MethodPost, "/api/stream/echo", []byte("again"), http.Header{"X-Ms-Invocation-Id": {"forged"}})
		if r.Status != 200 || string(r.Body) != "again" {
			t.Fatalf("after the client went away: %d %q", r.Status, r.Body)
		}
		if strings.Contains(th.Logs.String(), "replacing it") {
			t.Error("the instance was replaced")
		}
	})
}

// A worker that advertises an HttpUri that is not a loopback address is
// refused, and says why.
func TestAzureHTTPStreamingRefusesRemoteURI(t *testing.T) {
	cfg := strings.Replace(azureStreamConfig, "azure-stream}", "azure-stream-remote}", 1)
	th := hosttest.Start(t, t.TempDir(), cfg, "{self}", hosttest.Self(t), "{app}", t.TempDir())
	r := th.Do(t, http.MethodGet, "/api/stream/echo", nil, nil)
	if r.Status != http.StatusBadGateway || !strings.Contains(r.Err.Error.Message, `HttpUri capability "http://192.0.2.1:8080/" is refused`) ||
		!strings.Contains(r.Err.Error.Message, "not a loopback address") {
		t.Fatalf("got %d %+v", r.Status, r.Err)
	}
}

// A worker that advertises a loopback HttpUri served by another process
// (here the test's own server, standing for the admin listener or another
// function's worker) gets no request forwarded there: the connection's
// server end is not in the worker's process tree.
func TestAzureHTTPStreamingRefusesAServerNotTheWorkers(t *testing.T) {
	var reached atomic.Int32
	elsewhere := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		reached.Add(1)
		_, _ = io.WriteString(w, "elsewhere")
	}))
	defer elsewhere.Close()
	cfg := strings.Replace(azureStreamConfig, "azure-stream}", "azure-stream-elsewhere, ELSEWHERE: \""+elsewhere.URL+"/\"}", 1)
	th := hosttest.Start(t, t.TempDir(), cfg, "{self}", hosttest.Self(t), "{app}", t.TempDir())
	r := th.Do(t, http.MethodGet, "/api/stream/echo", nil, nil)
	if r.Status == http.StatusOK || strings.Contains(string(r.Body), "elsewhere") {
		t.Fatalf("got %d %s, want the forward refused", r.Status, r.Body)
	}
	if n := reached.Load(); n != 0 {
		t.Errorf("the other process's server got %d requests, want none", n)
	}
}

// The function's timeout bounds the whole exchange, the relay of the
// response body included: a response still streaming when it passes is cut
// off (the client sees the body break off, not end), and the worker's
// request is closed.
func TestAzureHTTPStreamingTimeout(t *testing.T) {
	cfg := strings.Replace(azureStreamConfig, `codedir: "{app}"}`, `codedir: "{app}", timeout: 2s}`, 1)
	th := hosttest.Start(t, t.TempDir(), cfg, "{self}", hosttest.Self(t), "{app}", t.TempDir())
	resp, err := http.Get(th.URL + "/api/stream/hang")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || string(b) != "first chunk\n" || err == nil {
		t.Fatalf("got %d %q, err %v; want the first chunk then a broken body", resp.StatusCode, b, err)
	}
	hosttest.WaitFor(t, 10*time.Second, "the worker to see its request closed and the timeout logged", func() bool {
		l := th.Logs.String()
		return strings.Contains(l, "worker saw its request closed") && strings.Contains(l, "Timeout")
	})
}
