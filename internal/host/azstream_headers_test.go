package host_test

import (
	"net/http"
	"os"
	"path/filepath"
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
