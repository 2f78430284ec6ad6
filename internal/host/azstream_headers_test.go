package host_test

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/polyfn/polyfn/internal/hosttest"
)

// docs/azure.md: extensions.http.customHeaders are "added to every response
// of the app's functions that does not set the header itself"; a streamed
// response (HttpUri) is one of them.
func TestAzureHTTPStreamingCustomHeaders(t *testing.T) {
	app := t.TempDir()
	if err := os.WriteFile(filepath.Join(app, "host.json"), []byte(`{"version": "2.0", "extensions": {"http": {"customHeaders": {"X-Content-Type-Options": "nosniff"}}}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	th := hosttest.Start(t, t.TempDir(), azureStreamConfig, "{self}", hosttest.Self(t), "{app}", app)
	r := th.Do(t, http.MethodPost, "/api/stream/sum", []byte("x"), nil)
	if r.Status != 200 {
		t.Fatalf("got %d %s", r.Status, r.Body)
	}
	if got := r.Header.Get("X-Content-Type-Options"); got != "nosniff" {
		t.Fatalf("streamed response lacks host.json's custom header: X-Content-Type-Options %q", got)
	}
}

// Under a CORS policy the function's own Access-Control-* headers are
// dropped and its Vary adds to the policy's (http.go writeResult); a
// streamed response must not bypass the policy either.
func TestAzureHTTPStreamingCORSPolicy(t *testing.T) {
	cfg := strings.Replace(azureStreamConfig, "http: {max_body: 1Mi, max_stream_body: 16Mi}",
		`http: {max_body: 1Mi, max_stream_body: 16Mi, cors: {allow_origins: ["https://spa.example.com"]}}`, 1)
	th := hosttest.Start(t, t.TempDir(), cfg, "{self}", hosttest.Self(t), "{app}", t.TempDir())
	r := th.Do(t, http.MethodGet, "/api/stream/cors", nil, http.Header{"Origin": {"https://evil.example.net"}})
	if r.Status != 200 || string(r.Body) != "ok" {
		t.Fatalf("got %d %s", r.Status, r.Body)
	}
	if got := r.Header.Get("Access-Control-Allow-Origin"); got != "" {
		t.Errorf("an origin outside the policy got Access-Control-Allow-Origin %q from the worker", got)
	}
	if vary := strings.Join(r.Header.Values("Vary"), ", "); !strings.Contains(vary, "Origin") {
		t.Errorf("Vary %q lacks the policy's Origin", vary)
	}
}

// An Access-Control-* header of host.json's customHeaders is dropped under
// a CORS policy on a streamed response too (docs/azure.md, "CORS"); the
// app's other custom headers stay.
func TestAzureHTTPStreamingCustomHeadersUnderCORS(t *testing.T) {
	app := t.TempDir()
	if err := os.WriteFile(filepath.Join(app, "host.json"), []byte(`{"version": "2.0", "extensions": {"http": {"customHeaders": {"Access-Control-Allow-Origin": "*", "X-Content-Type-Options": "nosniff"}}}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := strings.Replace(azureStreamConfig, "http: {max_body: 1Mi, max_stream_body: 16Mi}",
		`http: {max_body: 1Mi, max_stream_body: 16Mi, cors: {allow_origins: ["https://spa.example.com"]}}`, 1)
	th := hosttest.Start(t, t.TempDir(), cfg, "{self}", hosttest.Self(t), "{app}", app)
	r := th.Do(t, http.MethodPost, "/api/stream/sum", []byte("x"), http.Header{"Origin": {"https://evil.example.net"}})
	if r.Status != 200 {
		t.Fatalf("got %d %s", r.Status, r.Body)
	}
	if got := r.Header.Get("Access-Control-Allow-Origin"); got != "" {
		t.Errorf("an origin outside the policy got Access-Control-Allow-Origin %q from customHeaders", got)
	}
	if got := r.Header.Get("X-Content-Type-Options"); got != "nosniff" {
		t.Errorf("X-Content-Type-Options %q, want host.json's nosniff", got)
	}
}
