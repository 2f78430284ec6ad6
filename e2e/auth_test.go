package e2e

import (
	"encoding/json"
	"io"
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

// adminAddr finds the admin listener's address in the "polyfn serving" log
// record.
var adminAddr = regexp.MustCompile(`msg="polyfn serving" .*?admin=(\S+)`)

func adminBase(t *testing.T, s *served) string {
	t.Helper()
	m := adminAddr.FindStringSubmatch(s.logs.String())
	if m == nil || m[1] == "off" {
		t.Fatalf("no admin listener in the log:\n%s", s.logs.String())
	}
	return "http://" + m[1]
}

// send makes one request with key in the header named header, or in the
// code query parameter when header is "code" (none when key is "").
func send(t *testing.T, method, url, header, key string) (int, string) {
	t.Helper()
	if key != "" && header == "code" {
		sep := "?"
		if strings.Contains(url, "?") {
			sep = "&"
		}
		url += sep + "code=" + key
	}
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if key != "" && header != "code" {
		req.Header.Set(header, key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(b))
}

const authConfig = `mqtt: {embedded: false}
auth:%s
  function_keys:
    - {name: ci, env: POLYFN_E2E_FN_KEY}
    - {file: keys/team.key}
    - {dir: keys/fn.d}
  admin_keys:
    - {name: ops, file: keys/admin.key}
functions:
  - {name: open, handler: v.handler, codedir: fn, auth: anonymous}
  - {name: fn, handler: v.handler, codedir: fn, auth: function}
  - {name: adm, handler: v.handler, codedir: fn, auth: admin}
  - {name: dflt, handler: v.handler, codedir: fn}
`

// Function keys with the real binary: the levels against keys from the
// environment, a file and a directory, sent in x-polyfn-key or code; the
// default level on a loopback listener and the host-wide override; keys
// rotated by SIGHUP; a reload with an empty key file refused, the running
// keys kept; /admin refused on the public listener without the admin key
// and served by the admin listener; and no key in the log, in validate's
// output or in status's.
func TestFunctionKeys(t *testing.T) {
	requirePython(t)
	dir := tempDir(t)
	writeFileAll(t, filepath.Join(dir, "fn", "v.py"), "def handler(event, context):\n    return 'ok'\n")
	const (
		envKey   = "e2e-env-key-31a7"
		fileKey  = "e2e-file-key-62c9"
		dirKey   = "e2e-dir-key-08f4"
		adminKey = "e2e-admin-key-5d2e"
		rotated  = "e2e-rotated-key-44b1"
		added    = "e2e-added-key-93e0"
	)
	secrets := []string{envKey, fileKey, dirKey, adminKey, rotated, added}
	t.Setenv("POLYFN_E2E_FN_KEY", envKey)
	writeFileAll(t, filepath.Join(dir, "keys", "team.key"), fileKey+"\n")
	writeFileAll(t, filepath.Join(dir, "keys", "fn.d", "deploy"), dirKey)
	writeFileAll(t, filepath.Join(dir, "keys", "admin.key"), adminKey)
	cfg := filepath.Join(dir, "polyfn.yaml")
	writeFile(t, cfg, strings.Replace(authConfig, "%s", "", 1))

	s := serve(t, cfg)
	admin := adminBase(t, s)

	type keyCase struct{ name, value string }
	keys := []keyCase{{"no key", ""}, {"a wrong key", "wrong"}, {"the env key", envKey}, {"the file key", fileKey},
		{"the dir key", dirKey}, {"the admin key", adminKey}}
	check := func(fn, level string) {
		t.Helper()
		for _, k := range keys {
			for _, via := range []string{"x-polyfn-key", "code"} {
				isAdmin := k.value == adminKey
				isFn := k.value == envKey || k.value == fileKey || k.value == dirKey
				want := level == "anonymous" || level == "function" && (isFn || isAdmin) || level == "admin" && isAdmin
				status, body := send(t, http.MethodPost, s.base+"/function/"+fn, via, k.value)
				switch {
				case want && (status != 200 || body != `"ok"`):
					t.Errorf("%s (%s) with %s in %s: got %d %s, want 200", fn, level, k.name, via, status, body)
				case !want && (status != 401 || !strings.Contains(body, `"type":"Unauthorized"`)):
					t.Errorf("%s (%s) with %s in %s: got %d %s, want 401 Unauthorized", fn, level, k.name, via, status, body)
				}
			}
		}
	}
	check("open", "anonymous")
	check("fn", "function")
	check("adm", "admin")
	check("dflt", "anonymous") // the default on a loopback listener

	t.Run("admin endpoints", func(t *testing.T) {
		for _, path := range []string{"/admin/functions", "/metrics"} {
			if status, _ := send(t, http.MethodGet, s.base+path, "", ""); status != 401 {
				t.Errorf("public %s without a key: got %d, want 401", path, status)
			}
			if status, _ := send(t, http.MethodGet, s.base+path, "x-polyfn-key", envKey); status != 401 {
				t.Errorf("public %s with a function key: got %d, want 401", path, status)
			}
			if status, _ := send(t, http.MethodGet, s.base+path, "x-polyfn-key", adminKey); status != 200 {
				t.Errorf("public %s with the admin key: got %d, want 200", path, status)
			}
			if status, _ := send(t, http.MethodGet, admin+path, "", ""); status != 200 {
				t.Errorf("admin listener %s without a key: got %d, want 200", path, status)
			}
		}
		if status, _ := send(t, http.MethodPost, admin+"/function/open", "", ""); status != 404 {
			t.Errorf("the admin listener served /function/open: got %d, want 404", status)
		}
		_, metrics := send(t, http.MethodGet, admin+"/metrics", "", "")
		if !regexp.MustCompile(`polyfn_http_unauthorized_total\{function="adm"\} [1-9]`).MatchString(metrics) {
			t.Errorf("no 401 counted for adm in:\n%s", grepLines(metrics, "unauthorized"))
		}
		for _, path := range []string{"/healthz", "/healthz/live", "/healthz/ready"} {
			for _, base := range []string{s.base, admin} {
				if status, body := send(t, http.MethodGet, base+path, "", ""); status != 200 {
					t.Errorf("%s%s: got %d %s, want 200", base, path, status, body)
				}
			}
		}
	})

	t.Run("rotation on SIGHUP", func(t *testing.T) {
		writeFileAll(t, filepath.Join(dir, "keys", "team.key"), rotated)
		writeFileAll(t, filepath.Join(dir, "keys", "fn.d", "added"), added)
		// The host-wide override makes dflt need a key too.
		writeFile(t, cfg, strings.Replace(authConfig, "%s", "\n  level: function", 1))
		_ = s.cmd.Process.Signal(syscall.SIGHUP)
		hosttest.WaitFor(t, 15*time.Second, "the rotated key to open fn", func() bool {
			status, _ := send(t, http.MethodPost, s.base+"/function/fn", "x-polyfn-key", rotated)
			return status == 200
		})
		for _, c := range []struct {
			fn, key string
			want    int
		}{{"fn", fileKey, 401}, {"fn", added, 200}, {"fn", dirKey, 200}, {"dflt", "", 401}, {"dflt", envKey, 200},
			{"open", "", 401}, {"adm", rotated, 200}, {"adm", adminKey, 200}} { // auth.level wins over each function's own
			if status, body := send(t, http.MethodPost, s.base+"/function/"+c.fn, "x-polyfn-key", c.key); status != c.want {
				t.Errorf("after the reload, %s with key %q: got %d %s, want %d", c.fn, c.key, status, body, c.want)
			}
		}
	})

	t.Run("a reload with an empty key file keeps the running keys", func(t *testing.T) {
		writeFileAll(t, filepath.Join(dir, "keys", "team.key"), "\n")
		_ = s.cmd.Process.Signal(syscall.SIGHUP)
		hosttest.WaitFor(t, 15*time.Second, "the reload error in the log", func() bool {
			return regexp.MustCompile(`polyfn\.yaml:6:14: auth\.function_keys\[1\]\.file: key file \S+team\.key is empty`).MatchString(s.logs.String())
		})
		if status, _ := send(t, http.MethodPost, s.base+"/function/fn", "code", rotated); status != 200 {
			t.Errorf("after the failed reload the running key got %d, want 200", status)
		}
		writeFileAll(t, filepath.Join(dir, "keys", "team.key"), rotated)
	})

	t.Run("no key in any output", func(t *testing.T) {
		_, outV, errV := runCLI("validate", "-c", cfg, "--load=false")
		_, outS, errS := runCLI("status", "--url", admin)
		_, outJ, _ := runCLI("status", "--url", admin, "--json")
		_, adminDoc := send(t, http.MethodGet, admin+"/admin/functions", "", "")
		// The client commands send --key, else $POLYFN_KEY.
		code, outI, errI := runCLI("invoke", "fn", "--url", s.base)
		if code == 0 || !strings.Contains(errI, "Unauthorized") {
			t.Errorf("invoke without a key: exit %d, %s%s; want Unauthorized", code, outI, errI)
		}
		t.Setenv("POLYFN_KEY", rotated)
		if code, out, errOut := runCLI("invoke", "fn", "--url", s.base); code != 0 || !strings.Contains(out, "ok") {
			t.Errorf("invoke with $POLYFN_KEY: exit %d, %s%s", code, out, errOut)
		}
		if code, _, errOut := runCLI("status", "--url", s.base); code == 0 || !strings.Contains(errOut, "401") {
			t.Errorf("status on the public listener with a function key: exit %d, %s; want 401", code, errOut)
		}
		code, outK, errK := runCLI("status", "--url", s.base, "--key", adminKey)
		if code != 0 {
			t.Errorf("status on the public listener with --key: exit %d, %s", code, errK)
		}
		for what, text := range map[string]string{"the log": s.logs.String(), "validate": outV + errV,
			"status": outS + errS + outJ + outK + errK, "/admin/functions": adminDoc, "invoke": outI + errI} {
			for _, k := range secrets {
				if strings.Contains(text, k) {
					t.Errorf("%s holds the key %s:\n%s", what, k, text)
				}
			}
		}
		if !strings.Contains(outS, "fn") {
			t.Errorf("status through the admin listener did not list the functions:\n%s%s", outS, errS)
		}
	})
}

func grepLines(text, word string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, word) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// A key file that is missing, or a variable that is unset, is a config
// error naming file:line:column and key.
func TestKeySourceErrors(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "fn"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFileAll(t, filepath.Join(dir, "keys", "empty.d", "blank"), " \n")
	cfg := filepath.Join(dir, "polyfn.yaml")
	writeFile(t, cfg, `auth:
  function_keys:
    - {file: keys/missing.key}
    - {env: POLYFN_E2E_UNSET_KEY}
    - {dir: keys/empty.d}
    - {file: a, env: B}
functions:
  - {name: f, handler: v.handler, codedir: fn, auth: secret}
`)
	code, out, errOut := runCLI("validate", "-c", cfg, "--load=false")
	if code == 0 {
		t.Fatalf("validate accepted the config:\n%s", out)
	}
	for _, want := range []string{
		`polyfn.yaml:3:14: auth.function_keys[0].file: key file ` + filepath.Join(dir, "keys", "missing.key") + ` does not exist`,
		`polyfn.yaml:4:13: auth.function_keys[1].env: environment variable POLYFN_E2E_UNSET_KEY is unset or empty`,
		`polyfn.yaml:5:13: auth.function_keys[2].dir: key file ` + filepath.Join(dir, "keys", "empty.d", "blank") + ` is empty`,
		`polyfn.yaml:6:7: auth.function_keys[3]: set exactly one of env, file and dir`,
		`polyfn.yaml:8:54: functions[0].auth: unknown level "secret" (known: anonymous, function, admin)`,
	} {
		if !strings.Contains(errOut, want) {
			t.Errorf("validate output lacks %q:\n%s", want, errOut)
		}
	}
}

// Readiness goes false while polyfn drains on SIGTERM, on the admin
// listener, which stays up until the drain is over; liveness stays true.
func TestReadinessFalseOnDrain(t *testing.T) {
	s := serveForShutdown(t)
	admin := adminBase(t, s)
	if status, body := send(t, http.MethodGet, admin+"/healthz/ready", "", ""); status != 200 || body != `{"status":"ready"}` {
		t.Fatalf("ready before the drain: %d %s", status, body)
	}
	res := make(chan reply, 1)
	go func() {
		status, b, err := post(s.base, "nap", "3")
		res <- reply{status, b, err}
	}()
	waitInFlight(t, admin, "nap", 1)
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	var body struct{ Status string }
	hosttest.WaitFor(t, 10*time.Second, "readiness to read draining", func() bool {
		resp, err := http.Get(admin + "/healthz/ready")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		return resp.StatusCode == 503 && json.NewDecoder(resp.Body).Decode(&body) == nil && body.Status == "draining"
	})
	if status, _ := send(t, http.MethodGet, admin+"/healthz/live", "", ""); status != 200 {
		t.Errorf("live while draining: got %d, want 200", status)
	}
	if r := <-res; r.err != nil || r.status != 200 {
		t.Errorf("the invocation in flight: %d %v, want 200", r.status, r.err)
	}
}
