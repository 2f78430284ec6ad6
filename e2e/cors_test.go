package e2e

import (
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/polyfn/polyfn/internal/hosttest"
)

const corsE2EConfig = `mqtt: {embedded: false}
http:
  cors:
    allow_origins: [%s]
auth:
  function_keys: [{name: ci, env: POLYFN_E2E_CORS_KEY}]
functions:
  - {name: f, handler: calls.handler, codedir: fn, auth: function, env: {CALLS: "%calls"}}
`

// CORS with the real binary and a real Python worker that writes down
// every invocation: preflights answered without a key and never reaching
// the worker; the origins changed by SIGHUP; a reload with an origin that
// is not a URL refused with its position, the running origins kept; and
// validate reporting the same error.
func TestCORSReload(t *testing.T) {
	requirePython(t)
	const key = "e2e-cors-key-2b7e"
	t.Setenv("POLYFN_E2E_CORS_KEY", key)
	dir := tempDir(t)
	if err := os.Mkdir(filepath.Join(dir, "out"), 0o755); err != nil {
		t.Fatal(err)
	}
	calls := filepath.Join(hosttest.Writable(t, filepath.Join(dir, "out")), "calls")
	// Each worker may run as a user of its own: every one may append.
	writeFile(t, calls, "")
	if err := os.Chmod(calls, 0o666); err != nil {
		t.Fatal(err)
	}
	writeFileAll(t, filepath.Join(dir, "fn", "calls.py"),
		"import os\n\ndef handler(event, context):\n    with open(os.environ['CALLS'], 'a') as f:\n        f.write('call\\n')\n    return 'ok'\n")
	cfg := filepath.Join(dir, "polyfn.yaml")
	config := func(origins string) string {
		return strings.NewReplacer("%s", origins, "%calls", calls).Replace(corsE2EConfig)
	}
	writeFile(t, cfg, config(`"https://one.example.com"`))
	s := serve(t, cfg)
	url := s.base + "/function/f"

	preflight := func(origin string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodOptions, url, nil)
		req.Header.Set("Origin", origin)
		req.Header.Set("Access-Control-Request-Method", "POST")
		req.Header.Set("Access-Control-Request-Headers", "x-polyfn-key")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode, resp.Header.Get("Access-Control-Allow-Origin")
	}
	actual := func(origin string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, url, nil)
		req.Header.Set("Origin", origin)
		req.Header.Set("X-Polyfn-Key", key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode, resp.Header.Get("Access-Control-Allow-Origin")
	}
	invoked := func() int {
		b, err := os.ReadFile(calls)
		if os.IsNotExist(err) {
			return 0
		}
		if err != nil {
			t.Fatal(err)
		}
		return strings.Count(string(b), "call\n")
	}

	if status, acao := actual("https://one.example.com"); status != 200 || acao != "https://one.example.com" {
		t.Fatalf("actual request from the allowed origin: got %d, Access-Control-Allow-Origin %q", status, acao)
	}
	for range 5 {
		if status, acao := preflight("https://one.example.com"); status != 204 || acao != "https://one.example.com" {
			t.Fatalf("preflight from the allowed origin: got %d, Access-Control-Allow-Origin %q; want 204", status, acao)
		}
		if status, acao := preflight("https://two.example.com"); status != 403 || acao != "" {
			t.Fatalf("preflight from another origin: got %d, Access-Control-Allow-Origin %q; want 403 without it", status, acao)
		}
	}
	if n := invoked(); n != 1 {
		t.Fatalf("the worker ran %d invocations, want 1: the preflights reached it", n)
	}

	t.Run("origins changed by SIGHUP", func(t *testing.T) {
		writeFile(t, cfg, config(`"https://two.example.com"`))
		_ = s.cmd.Process.Signal(syscall.SIGHUP)
		hosttest.WaitFor(t, 15*time.Second, "the new origin to be allowed", func() bool {
			status, _ := preflight("https://two.example.com")
			return status == 204
		})
		if strings.Contains(s.logs.String(), "take effect on restart") {
			t.Error("a reload changing http.cors warned that it takes effect on restart")
		}
		if status, _ := preflight("https://one.example.com"); status != 403 {
			t.Errorf("the old origin after the reload: got %d, want 403", status)
		}
		if status, acao := actual("https://one.example.com"); status != 200 || acao != "" {
			t.Errorf("actual request from the old origin: got %d, Access-Control-Allow-Origin %q; want 200 without it", status, acao)
		}
	})

	t.Run("a reload with an origin that is not a URL keeps the running origins", func(t *testing.T) {
		writeFile(t, cfg, config(`"https://two.example.com", "three.example.com"`))
		_ = s.cmd.Process.Signal(syscall.SIGHUP)
		errLine := regexp.MustCompile(`polyfn\.yaml:4:48: http\.cors\.allow_origins\[1\]: \\?"three\.example\.com\\?" is not an origin`)
		hosttest.WaitFor(t, 15*time.Second, "the reload error in the log", func() bool {
			return errLine.MatchString(s.logs.String())
		})
		if status, acao := preflight("https://two.example.com"); status != 204 || acao != "https://two.example.com" {
			t.Errorf("after the failed reload: got %d %q, want the running origin allowed", status, acao)
		}
		code, out, errOut := runCLI("validate", "-c", cfg, "--load=false")
		if code == 0 || !errLine.MatchString(out+errOut) {
			t.Errorf("validate: exit %d, output %s%s; want the error with its position", code, out, errOut)
		}
	})
	if n := invoked(); n != 2 {
		t.Errorf("the worker ran %d invocations, want 2 (the actual requests)", n)
	}
}
