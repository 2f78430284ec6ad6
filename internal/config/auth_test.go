package config

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

// A key read from each source, printed every way the host prints values,
// shows as [redacted], never as itself.
func TestKeysAreReadAndRedacted(t *testing.T) {
	const envKey, fileKey, dirKey = "k-env-0b1f", "k-file-6a2c", "k-dir-93d4"
	t.Setenv("POLYFN_CONFIG_TEST_KEY", envKey)
	path := writeConfig(t, `auth:
  function_keys:
    - {env: POLYFN_CONFIG_TEST_KEY}
    - {name: team, file: team.key}
  admin_keys:
    - {dir: keys.d}
functions:
  - {name: f, handler: m.h, codedir: fn, auth: admin}
`)
	dir := filepath.Dir(path)
	for name, text := range map[string]string{"team.key": "  " + fileKey + "\n", "keys.d/ops": dirKey, "keys.d/..data/ops": "skipped"} {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, name)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, s := range append(append([]KeySource{}, c.Auth.FunctionKeys...), c.Auth.AdminKeys...) {
		for _, k := range s.Keys {
			got[k.Name] = k.Value.Reveal()
		}
	}
	want := map[string]string{"POLYFN_CONFIG_TEST_KEY": envKey, "team": fileKey, "ops": dirKey}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("keys read: %v, want %v", got, want)
	}
	if c.AuthLevel(c.Functions[0].Auth) != LevelAdmin || c.AuthLevel("") != LevelAnonymous {
		t.Errorf("levels: own admin -> %s, none on loopback -> %s", c.AuthLevel(c.Functions[0].Auth), c.AuthLevel(""))
	}
	var out bytes.Buffer
	fmt.Fprintf(&out, "%v %+v %#v %s %q\n", c, c, c.Auth, c.Auth, c.Auth.AdminKeys[0].Keys[0].Value)
	j, _ := json.Marshal(c)
	y, _ := yaml.Marshal(c.Auth.FunctionKeys[0].Keys)
	out.Write(j)
	out.Write(y)
	slog.New(slog.NewTextHandler(&out, nil)).Info("config", "auth", c.Auth, "key", c.Auth.AdminKeys[0].Keys[0].Value)
	slog.New(slog.NewJSONHandler(&out, nil)).Info("config", "auth", c.Auth, "key", c.Auth.AdminKeys[0].Keys[0].Value)
	for _, k := range []string{envKey, fileKey, dirKey} {
		if strings.Contains(out.String(), k) {
			t.Errorf("a key is printed:\n%s", out.String())
		}
	}
	if !strings.Contains(out.String(), "[redacted]") {
		t.Errorf("no [redacted] in:\n%s", out.String())
	}
}

func TestDefaultLevelFollowsTheListener(t *testing.T) {
	for addr, want := range map[string]string{"127.0.0.1:8080": LevelAnonymous, "[::1]:80": LevelAnonymous, "localhost:1": LevelAnonymous,
		"0.0.0.0:8080": LevelFunction, ":8080": LevelFunction, "10.1.2.3:80": LevelFunction} {
		c := &Config{HTTP: HTTP{Listen: addr}}
		if got := c.AuthLevel(""); got != want {
			t.Errorf("listen %s: default level %s, want %s", addr, got, want)
		}
		c.Auth.Level = LevelAdmin
		if got := c.AuthLevel(LevelAnonymous); got != LevelAdmin {
			t.Errorf("listen %s: auth.level admin over anonymous gave %s", addr, got)
		}
	}
}

// A certificate that does not match its key, and a client CA that holds no
// certificate, are config errors with their position.
func TestServerTLSErrors(t *testing.T) {
	path := writeConfig(t, `http:
  tls: {cert: a.crt, key: b.key, client_ca: ca.pem}
admin:
  tls: {key: b.key}
`)
	dir := filepath.Dir(path)
	// The certificate of one pair and the key of another.
	cert, _ := selfSigned(t)
	_, key := selfSigned(t)
	for name, text := range map[string]string{"a.crt": string(cert), "b.key": string(key), "ca.pem": "nothing"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	_, err := Load(path)
	if err == nil {
		t.Fatal("Load accepted the files")
	}
	for _, want := range []string{
		"polyfn.yaml:2:15: http.tls.cert: load certificate " + filepath.Join(dir, "a.crt") + " and key " + filepath.Join(dir, "b.key") + ": tls: private key does not match public key",
		"polyfn.yaml:2:45: http.tls.client_ca: client CA " + filepath.Join(dir, "ca.pem") + " holds no PEM certificate",
		"polyfn.yaml:4:8: admin.tls.cert: missing: set the certificate file with the key file",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("errors lack %q:\n%v", want, err)
		}
	}
}

// selfSigned returns a PEM certificate and its key.
func selfSigned(t *testing.T) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
}
