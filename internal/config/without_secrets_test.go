package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Without secrets, a config whose variables are unset and whose secret
// files are missing loads (as an image build needs it), the values are
// empty and defaults still apply; the same config loaded normally fails on
// each of them.
func TestLoadWithoutSecrets(t *testing.T) {
	const unset = "POLYFN_TEST_UNSET_VARIABLE"
	os.Unsetenv(unset)
	file := writeConfig(t, `mqtt:
  broker: tcp://broker.example:1883
  password: ${`+unset+`}
auth:
  function_keys: [{file: secrets/key}]
  admin_keys: [{env: `+unset+`}]
http:
  listen: 0.0.0.0:8080
  tls: {cert: secrets/tls.crt, key: secrets/tls.key}
functions:
  - name: fn
    runtime: python3
    handler: main.handler
    codedir: fn
    env:
      TOKEN: ${file:secrets/token}
      REGION: ${`+unset+`:-eu-west-1}
    env_from: [secrets/db.env]
`)
	_, err := Load(file)
	if err == nil {
		t.Fatal("the config loaded with its secrets missing")
	}
	for _, want := range []string{"mqtt.password", "auth.function_keys[0].file", "auth.admin_keys[0].env", "http.tls.cert", "functions[0].env.TOKEN", "functions[0].env_from[0]"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the error lacks %s:\n%v", want, err)
		}
	}
	cfg, err := LoadWith(file, LoadOptions{WithoutSecrets: true})
	if err != nil {
		t.Fatalf("without secrets: %v", err)
	}
	f := cfg.Functions[0]
	if f.Env["TOKEN"] != "" || f.Env["REGION"] != "eu-west-1" || cfg.MQTT.Password != "" {
		t.Errorf("env %v, mqtt.password %q: want TOKEN empty, REGION its default, no password", f.Env, cfg.MQTT.Password)
	}
	if f.Codedir != filepath.Join(cfg.Dir, "fn") {
		t.Errorf("codedir %s", f.Codedir)
	}
	// A mistake that is not a missing secret is still one.
	bad := writeConfig(t, "functions:\n  - name: fn\n    runtime: python3\n    handler: main.handler\n    codedir: fn\n    timeout: ${"+unset+"}x\n")
	if _, err := LoadWith(bad, LoadOptions{WithoutSecrets: true}); err == nil || !strings.Contains(err.Error(), "functions[0].timeout") {
		t.Errorf("a malformed timeout without secrets: %v", err)
	}
}
