package server

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// Both listeners serve HTTPS with http.tls and admin.tls: the functions'
// listener over HTTP/2, the admin listener its endpoints; neither answers
// plain HTTP.
func TestTLSOnBothListeners(t *testing.T) {
	dir := t.TempDir()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	files := map[string][]byte{
		"tls.crt": pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		"tls.key": pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}),
		"polyfn.yaml": []byte("mqtt: {embedded: false}\nisolation: {user: host}\nruntimes:\n  fake: {protocol: call, command: [/bin/false]}\n" +
			"http: {tls: {cert: tls.crt, key: tls.key}}\nadmin: {listen: 127.0.0.1:0, tls: {cert: tls.crt, key: tls.key}}\n" +
			"functions:\n  - {name: f, runtime: fake, handler: h, codedir: .}\n"),
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	o := Options{File: filepath.Join(dir, "polyfn.yaml"), Listen: "127.0.0.1:0", Log: slog.New(slog.DiscardHandler)}
	cfg, err := LoadConfig(o)
	if err != nil {
		t.Fatal(err)
	}
	s, err := Start(cfg, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		s.Shutdown(ctx)
	})
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(files["tls.crt"])
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true}}
	defer client.CloseIdleConnections()
	for _, u := range []string{"https://" + s.Addr().String() + "/healthz/live", "https://" + s.AdminAddr().String() + "/healthz/ready",
		"https://" + s.AdminAddr().String() + "/admin/functions"} {
		resp, err := client.Get(u)
		if err != nil {
			t.Fatalf("GET %s: %v", u, err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.ProtoMajor != 2 {
			t.Errorf("GET %s: %d over %s, want 200 over HTTP/2", u, resp.StatusCode, resp.Proto)
		}
	}
	for _, u := range []string{"http://" + s.Addr().String() + "/healthz", "http://" + s.AdminAddr().String() + "/healthz"} {
		if resp, err := http.Get(u); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				t.Errorf("plain GET %s was served", u)
			}
		}
	}
}
