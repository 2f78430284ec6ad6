package stream

import (
	"context"
	"net"
	"net/http"
	"strings"
	"testing"
)

func TestHTTPURIMustBeLoopback(t *testing.T) {
	for _, uri := range []string{"http://localhost:55000/", "http://127.0.0.1:8080", "http://[::1]:9000/", "http://127.1.2.3:80/base/"} {
		if _, err := newHTTPProxy(uri, 0); err != nil {
			t.Errorf("%s: %v", uri, err)
		}
	}
	for uri, want := range map[string]string{
		"http://192.0.2.1:8080/":     "not a loopback address",
		"http://example.com:80/":     "not a loopback address",
		"http://localhost.evil:80/":  "not a loopback address",
		"http://0.0.0.0:80/":         "not a loopback address",
		"https://localhost:443/":     `scheme "https"`,
		"http://user:pw@localhost:1": "user information",
		"http://localhost/":          "no port",
		"unix:///tmp/sock":           `scheme "unix"`,
	} {
		_, err := newHTTPProxy(uri, 0)
		if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "HttpUri capability") {
			t.Errorf("%s: got %v, want an error with %q", uri, err, want)
		}
	}
}

// Whatever a name resolves to, the proxy dials loopback addresses only.
func TestProxyDialsLoopbackOnly(t *testing.T) {
	p, err := newHTTPProxy("http://localhost:1/", 0)
	if err != nil {
		t.Fatal(err)
	}
	_, err = p.transport.DialContext(context.Background(), "tcp", "192.0.2.1:80")
	if err == nil || !strings.Contains(err.Error(), "must be on a loopback address") {
		t.Fatalf("dial of a non-loopback address: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := p.transport.DialContext(context.Background(), "tcp", ln.Addr().String())
	if err != nil {
		t.Fatalf("dial of a loopback address: %v", err)
	}
	c.Close()
	if p.transport.Proxy != nil {
		t.Error("the transport takes a proxy from the environment")
	}
}

func TestRemoveHopHeaders(t *testing.T) {
	h := http.Header{"Connection": {"X-Secret, keep-alive"}, "X-Secret": {"1"}, "Keep-Alive": {"5"}, "Transfer-Encoding": {"chunked"},
		"Upgrade": {"h2c"}, "Content-Type": {"text/plain"}, "Expect": {"100-continue"}}
	removeHopHeaders(h)
	if len(h) != 1 || h.Get("Content-Type") != "text/plain" {
		t.Fatalf("left %v", h)
	}
}
