package host_test

import (
	"bufio"
	"bytes"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/polyfn/polyfn/internal/hosttest"
)

// Keys of the auth tests, one per source.
const (
	fnKeyEnv    = "fn-key-from-env-5a1c"
	fnKeyFile   = "fn-key-from-file-9b2d"
	fnKeyDir    = "fn-key-from-dir-7e3f"
	adminKeyEnv = "admin-key-from-env-1c4a"
	adminKeyDir = "admin-key-from-dir-8d6b"
)

// writeLevelApp writes a function.json app whose one function declares
// authLevel level ("" for none) and is routed at /api/lvl/NAME.
func writeLevelApp(t *testing.T, name, level string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "HttpExample"), 0o755); err != nil {
		t.Fatal(err)
	}
	auth := ""
	if level != "" {
		auth = fmt.Sprintf(`"authLevel": %q, `, level)
	}
	files := map[string]string{
		"host.json":               `{"version": "2.0"}`,
		"HttpExample/__init__.py": "def main(req): ...\n",
		"HttpExample/function.json": `{"scriptFile": "__init__.py", "bindings": [
			{` + auth + `"type": "httpTrigger", "direction": "in", "name": "req", "methods": ["get"], "route": "lvl/` + name + `"},
			{"type": "http", "direction": "out", "name": "res"}]}`,
	}
	for n, text := range files {
		if err := os.WriteFile(filepath.Join(dir, n), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func writeKeyFile(t *testing.T, path, key string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(key+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
}

// The auth matrix of Azure Functions app functions: each authLevel (and
// none, which is function as in Azure Functions) against no key, a wrong
// key and a key of each source (environment, file, directory), sent in
// x-functions-key, x-polyfn-key or the code query parameter. A request
// without a key that opens the function is answered 401 and counted, and
// never reaches the worker (which fails any invocation that carries a key,
// so that the key is also shown removed from what the function sees).
func TestAppAuthMatrix(t *testing.T) {
	dir := t.TempDir()
	keys := t.TempDir()
	writeKeyFile(t, filepath.Join(keys, "team.key"), fnKeyFile)
	writeKeyFile(t, filepath.Join(keys, "fn.d", "dirkey"), fnKeyDir)
	writeKeyFile(t, filepath.Join(keys, "admin.d", "opskey"), adminKeyDir)
	// A mounted Kubernetes Secret's own entries are skipped.
	writeKeyFile(t, filepath.Join(keys, "fn.d", "..data", "dirkey"), "not-a-key")
	t.Setenv("POLYFN_TEST_FN_KEY", fnKeyEnv)
	t.Setenv("POLYFN_TEST_ADMIN_KEY", adminKeyEnv)
	cfg := `
runtimes:
  python-worker:
    protocol: stream
    command: ["{self}"]
    env: {POLYFN_FAKE_WORKER: azure-python}
auth:
  function_keys:
    - {name: ci, env: POLYFN_TEST_FN_KEY}
    - {file: "{keys}/team.key"}
    - {dir: "{keys}/fn.d"}
  admin_keys:
    - {name: ops, env: POLYFN_TEST_ADMIN_KEY}
    - {dir: "{keys}/admin.d"}
functions:
  - {name: anonapp, runtime: python-worker, codedir: "{anon}"}
  - {name: fnapp, runtime: python-worker, codedir: "{fn}"}
  - {name: adminapp, runtime: python-worker, codedir: "{admin}"}
  - {name: noneapp, runtime: python-worker, codedir: "{none}"}
`
	th := hosttest.Start(t, dir, cfg, "{self}", hosttest.Self(t), "{keys}", keys,
		"{anon}", writeLevelApp(t, "anonymous", "anonymous"), "{fn}", writeLevelApp(t, "function", "function"),
		"{admin}", writeLevelApp(t, "admin", "admin"), "{none}", writeLevelApp(t, "none", ""))

	type key struct{ name, value string }
	keyCases := []key{{"none", ""}, {"wrong", "not-a-key"}, {"a prefix of a key", fnKeyEnv[:8]},
		{"function key from env", fnKeyEnv}, {"function key from file", fnKeyFile}, {"function key from dir", fnKeyDir},
		{"admin key from env", adminKeyEnv}, {"admin key from dir", adminKeyDir}}
	levels := []struct{ route, app, level string }{
		{"anonymous", "anonapp", "anonymous"}, {"function", "fnapp", "function"},
		{"admin", "adminapp", "admin"}, {"none", "noneapp", "function"}}
	sends := []string{"x-functions-key", "x-polyfn-key", "code"}
	ok, denied := 0, map[string]int{}
	for _, l := range levels {
		for _, k := range keyCases {
			for _, via := range sends {
				path := "/api/lvl/" + l.route + "?name=bob"
				h := http.Header{"X-Test": {"python"}}
				if k.value != "" {
					if via == "code" {
						path += "&code=" + k.value
					} else {
						h.Set(via, k.value)
					}
				}
				isAdmin := strings.HasPrefix(k.name, "admin")
				isFn := strings.HasPrefix(k.name, "function")
				want := l.level == "anonymous" || l.level == "function" && (isFn || isAdmin) || l.level == "admin" && isAdmin
				r := th.Do(t, http.MethodGet, path, nil, h)
				switch {
				case want && (r.Status != 200 || string(r.Body) != "Hello, bob."):
					t.Errorf("%s level, %s in %s: got %d %q, want 200", l.route, k.name, via, r.Status, r.Body)
				case !want && (r.Status != http.StatusUnauthorized || r.Err.Error.Type != "Unauthorized"):
					t.Errorf("%s level, %s in %s: got %d %+v, want 401 Unauthorized", l.route, k.name, via, r.Status, r.Err)
				case want:
					ok++
				default:
					denied[l.app+"/HttpExample"]++
				}
			}
		}
	}

	// /metrics on the host's listener (loopback, but with admin keys set)
	// needs an admin key.
	get := func(key string) (*http.Response, []byte) {
		req, _ := http.NewRequest(http.MethodGet, th.URL+"/metrics", nil)
		if key != "" {
			req.Header.Set("X-Polyfn-Key", key)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var b bytes.Buffer
		_, _ = b.ReadFrom(resp.Body)
		return resp, b.Bytes()
	}
	if resp, _ := get(""); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("/metrics without a key: got %d, want 401", resp.StatusCode)
	}
	if resp, _ := get(fnKeyEnv); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("/metrics with a function key: got %d, want 401", resp.StatusCode)
	}
	resp, body := get(adminKeyEnv)
	if resp.StatusCode != 200 {
		t.Fatalf("/metrics with an admin key: got %d", resp.StatusCode)
	}
	series := metricValues(body)
	for fn, n := range denied {
		if got := series[`polyfn_http_unauthorized_total{function="`+fn+`"}`]; got != float64(n) {
			t.Errorf("polyfn_http_unauthorized_total for %s = %v, want %d", fn, got, n)
		}
	}
	// The two admin requests refused above count under admin.
	if got := series[`polyfn_http_unauthorized_total{function="admin"}`]; got != 2 {
		t.Errorf(`polyfn_http_unauthorized_total{function="admin"} = %v, want 2`, got)
	}
	invoked := 0.0
	for k, v := range series {
		if strings.HasPrefix(k, "polyfn_invocations_total{") {
			invoked += v
		}
	}
	if invoked != float64(ok) {
		t.Errorf("the workers ran %v invocations, want %d (only those with a key that opens the function)", invoked, ok)
	}
	if strings.Contains(th.Logs.String(), fnKeyEnv) || strings.Contains(th.Logs.String(), adminKeyDir) {
		t.Error("a key is in the host's log")
	}
}

// metricValues parses Prometheus text: series (name and labels, as
// written) to value.
func metricValues(text []byte) map[string]float64 {
	out := map[string]float64{}
	sc := bufio.NewScanner(bytes.NewReader(text))
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			out[line[:i]] = v
		}
	}
	return out
}
