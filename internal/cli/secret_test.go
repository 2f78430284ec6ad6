package cli

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/polyfn/polyfn/internal/config"
)

// validate prints no secret value, in its errors or its success line.
func TestValidateRedactsSecrets(t *testing.T) {
	const pw = "validate-secret-31337"
	t.Setenv("PF_VALIDATE_SECRET", pw)
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "fn"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "key"), []byte(pw+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "polyfn.yaml")
	for _, tc := range []struct{ text, want string }{
		{"isolation: {user: host}\nfunctions:\n  - name: a\n    handler: a.h\n    codedir: fn\n    timeout: ${PF_VALIDATE_SECRET}\n    env: {K: '${file:key}'}\n",
			`polyfn.yaml:6:14: functions[0].timeout: invalid duration "[redacted]"`},
		{"isolation: {user: host}\nfunctions:\n  - name: a\n    handler: a.h\n    codedir: fn\n    concurrency: ${file:key}\n",
			`functions[0].concurrency: want int, got "[redacted]"`},
		{"isolation: {user: host}\nfunctions:\n  - name: a\n    handler: a.h\n    codedir: fn\n    env: {K: '${PF_VALIDATE_SECRET}'}\n", "ok, 1 function"},
	} {
		if err := os.WriteFile(file, []byte(tc.text), 0o644); err != nil {
			t.Fatal(err)
		}
		var out, errOut bytes.Buffer
		Main([]string{"validate", "--load=false", "-c", file}, &out, &errOut)
		all := out.String() + errOut.String()
		if strings.Contains(all, pw) {
			t.Errorf("validate prints the secret:\n%s", all)
		}
		if !strings.Contains(all, tc.want) {
			t.Errorf("validate output:\n%s\nwant it to contain %q", all, tc.want)
		}
	}
}

// The host's log masks every secret value of the configs this process
// loaded, in both log formats.
func TestLogRedactsSecrets(t *testing.T) {
	const pw = "log-secret-8675309"
	t.Setenv("PF_LOG_SECRET", pw)
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "fn"), 0o755); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "polyfn.yaml")
	text := "isolation: {user: host}\nfunctions:\n  - {name: a, handler: a.h, codedir: fn, env: {K: '${PF_LOG_SECRET}'}}\n"
	if err := os.WriteFile(file, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := config.Load(file); err != nil {
		t.Fatal(err)
	}
	for _, format := range []string{"text", "json"} {
		var buf bytes.Buffer
		log, err := newLogger(&buf, format, "debug")
		if err != nil {
			t.Fatal(err)
		}
		log.Error("worker exited: KeyError "+pw, "stderr", "token="+pw, "error", errors.New(pw))
		if strings.Contains(buf.String(), pw) || !strings.Contains(buf.String(), "[redacted]") {
			t.Errorf("%s log:\n%s", format, buf.String())
		}
	}
}
