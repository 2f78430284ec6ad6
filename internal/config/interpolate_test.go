package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const secretValue = "s3cr3t-Value-42"

func TestInterpolation(t *testing.T) {
	t.Setenv("PF_TOKEN", secretValue)
	t.Setenv("PF_CONC", "3")
	t.Setenv("PF_EMPTY", "")
	path := writeConfig(t, `http:
  listen: ${PF_LISTEN:-127.0.0.1:9090}
functions:
  - name: a
    handler: a.h
    codedir: fn
    concurrency: ${PF_CONC}
    timeout: ${PF_TIMEOUT:-7s}
    env:
      TOKEN: ${PF_TOKEN}
      FROM_FILE: ${file:token.txt}
      MIXED: "x-${PF_TOKEN}-y"
      LITERAL: "$${PF_TOKEN}"
      EMPTY_DEFAULTED: ${PF_EMPTY:-dflt}
      EMPTY: "${PF_EMPTY}"
`)
	if err := os.WriteFile(filepath.Join(filepath.Dir(path), "token.txt"), []byte("file-secret-99\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	f := c.Functions[0]
	if c.HTTP.Listen != "127.0.0.1:9090" {
		t.Errorf("listen = %q, want the default", c.HTTP.Listen)
	}
	if f.Concurrency != 3 {
		t.Errorf("concurrency = %d, want 3 from the environment", f.Concurrency)
	}
	if f.Timeout.String() != "7s" {
		t.Errorf("timeout = %s, want 7s", f.Timeout)
	}
	want := map[string]string{"TOKEN": secretValue, "FROM_FILE": "file-secret-99", "MIXED": "x-" + secretValue + "-y",
		"LITERAL": "${PF_TOKEN}", "EMPTY_DEFAULTED": "dflt", "EMPTY": ""}
	for k, v := range want {
		if f.Env[k] != v {
			t.Errorf("env %s = %q, want %q", k, f.Env[k], v)
		}
	}
	// Values from the environment and files are secret; defaults are not.
	for _, v := range []string{secretValue, "file-secret-99", "3"} {
		if got := c.Secrets.Redact("<" + v + ">"); strings.Contains(got, v) && len(v) >= 4 {
			t.Errorf("secret %q not masked: %q", v, got)
		}
	}
	if c.Secrets.Redact("3") != "[redacted]" {
		t.Errorf("a short secret printed whole is not masked")
	}
	if got := c.Secrets.Redact("7s dflt 127.0.0.1:9090"); got != "7s dflt 127.0.0.1:9090" {
		t.Errorf("defaults were masked: %q", got)
	}
}

func TestInterpolationErrors(t *testing.T) {
	t.Setenv("PF_TIMEOUT_SECRET", secretValue)
	os.Unsetenv("PF_UNSET_VAR")
	cases := []struct{ name, text, want string }{
		{"unset", "functions:\n  - name: a\n    handler: a.h\n    codedir: fn\n    env:\n      K: ${PF_UNSET_VAR}\n",
			"polyfn.yaml:6:10: functions[0].env.K: environment variable PF_UNSET_VAR is not set"},
		{"unset in list", "runtimes:\n  r:\n    protocol: call\n    command: [x, \"${PF_UNSET_VAR}\"]\n",
			"polyfn.yaml:4:18: runtimes.r.command[1]: environment variable PF_UNSET_VAR is not set"},
		{"unclosed", "http:\n  listen: \"${PF_X\"\n", "polyfn.yaml:2:11: http.listen: unclosed ${"},
		{"bad name", "http:\n  listen: \"${1X}\"\n", `polyfn.yaml:2:11: http.listen: invalid variable name "1X"`},
		{"missing file", "http:\n  listen: ${file:nothere}\n", "polyfn.yaml:2:11: http.listen: ${file:nothere}: open "},
		// The value is an invalid duration; the error must not print it.
		{"secret in error", "functions:\n  - name: a\n    handler: a.h\n    codedir: fn\n    timeout: ${PF_TIMEOUT_SECRET}\n",
			`polyfn.yaml:5:14: functions[0].timeout: invalid duration "[redacted]"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Load(writeConfig(t, tc.text))
			var es Errors
			if !errors.As(err, &es) {
				t.Fatalf("err = %v, want Errors", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v\nwant it to contain %q", err, tc.want)
			}
			if strings.Contains(err.Error(), secretValue) {
				t.Errorf("the error prints the secret: %v", err)
			}
		})
	}
}

func TestEnvFrom(t *testing.T) {
	path := writeConfig(t, `functions:
  - name: a
    handler: a.h
    codedir: fn
    env_from: [vars.env, mounted]
    env:
      OVERRIDE: from-env
`)
	dir := filepath.Dir(path)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.WriteFile(filepath.Join(dir, "vars.env"), []byte("# comment\n\nDB_URL=postgres://u:pw-file-secret@db/x\nexport QUOTED=\"q v\"\nOVERRIDE=from-file\n"), 0o600))
	// A mounted Kubernetes Secret: the files are links into ..data.
	data := filepath.Join(dir, "mounted", "..2026_12_03_12_00_00.000")
	must(os.MkdirAll(data, 0o755))
	must(os.WriteFile(filepath.Join(data, "API_KEY"), []byte("dir-secret-77\n"), 0o600))
	must(os.Symlink(filepath.Base(data), filepath.Join(dir, "mounted", "..data")))
	must(os.Symlink(filepath.Join("..data", "API_KEY"), filepath.Join(dir, "mounted", "API_KEY")))
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	env := c.Functions[0].Env
	want := map[string]string{"DB_URL": "postgres://u:pw-file-secret@db/x", "QUOTED": "q v", "OVERRIDE": "from-env", "API_KEY": "dir-secret-77"}
	for k, v := range want {
		if env[k] != v {
			t.Errorf("env %s = %q, want %q", k, env[k], v)
		}
	}
	if len(env) != len(want) {
		t.Errorf("env = %v, want exactly %v (no ..data entries)", env, want)
	}
	if got := c.Secrets.Redact("key dir-secret-77 url postgres://u:pw-file-secret@db/x"); strings.Contains(got, "secret") {
		t.Errorf("env_from values not masked: %q", got)
	}

	// A missing source and a bad line are errors at the env_from entry.
	must(os.WriteFile(filepath.Join(dir, "vars.env"), []byte("OK=1\nnot a pair\n"), 0o600))
	must(os.WriteFile(path, []byte("functions:\n  - name: a\n    handler: a.h\n    codedir: fn\n    env_from: [vars.env, gone]\n"), 0o644))
	_, err = Load(path)
	for _, w := range []string{"polyfn.yaml:5:16: functions[0].env_from[0]: ", "vars.env:2: want KEY=VALUE",
		"polyfn.yaml:5:26: functions[0].env_from[1]: stat "} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("err = %v\nwant it to contain %q", err, w)
		}
	}
}

func TestLeaderElectionConfig(t *testing.T) {
	c, err := Load(writeConfig(t, "functions: []\n"))
	if err != nil {
		t.Fatal(err)
	}
	if le := c.LeaderElection; le.Mode != LeaderAuto || le.Lease != DefaultLeaseName || le.LeaseDuration.D() != DefaultLeaseDuration {
		t.Errorf("defaults = %+v", le)
	}
	_, err = Load(writeConfig(t, "leader_election:\n  mode: sometimes\n  lease_duration: 5s\n  renew_deadline: 5s\n  retry_period: 4.5s\n"))
	for _, w := range []string{`2:9: leader_election.mode: unknown mode "sometimes"`, "4:19: leader_election.renew_deadline: 5s is not below lease_duration",
		"5:17: leader_election.retry_period: 4.5s is too long"} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("err = %v\nwant it to contain %q", err, w)
		}
	}
	_, err = Load(writeConfig(t, "leader_election:\n  lease_duration: 1500ms\n  renew_deadline: 1s\n  retry_period: 100ms\n"))
	for _, w := range []string{"2:19: leader_election.lease_duration: 1.5s is not a whole number of seconds"} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("err = %v\nwant it to contain %q", err, w)
		}
	}
}
