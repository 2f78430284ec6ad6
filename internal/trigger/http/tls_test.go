package http

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// testCA issues certificates for the TLS tests.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "polyfn test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue returns a PEM certificate and key with serial for 127.0.0.1, for a
// server or a client.
func (ca *testCA) issue(t *testing.T, serial int64, client bool) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	usage := x509.ExtKeyUsageServerAuth
	if client {
		usage = x509.ExtKeyUsageClientAuth
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "polyfn test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
}

func writeTLSFile(t *testing.T, path string, data []byte) {
	t.Helper()
	// Written aside and renamed, as a certificate manager does, so that a
	// handshake never reads half a file.
	if err := os.WriteFile(path+".tmp", data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".tmp", path); err != nil {
		t.Fatal(err)
	}
}

func tlsClient(ca *testCA, cert *tls.Certificate) *http.Client {
	pool := x509.NewCertPool()
	pool.AddCert(ca.cert)
	conf := &tls.Config{RootCAs: pool}
	if cert != nil {
		conf.Certificates = []tls.Certificate{*cert}
	}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: conf, ForceAttemptHTTP2: true, DisableKeepAlives: true}}
}

// HTTPS with a certificate generated here: HTTP/2 is negotiated, and a
// certificate renewed on disk is served without a restart.
func TestTLSServesHTTP2AndRotates(t *testing.T) {
	ca := newTestCA(t)
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	c, k := ca.issue(t, 100, false)
	writeTLSFile(t, certFile, c)
	writeTLSFile(t, keyFile, k)
	s := serve(t, "{tls: {cert: "+certFile+", key: "+keyFile+"}}", echoInvoker{})
	client := tlsClient(ca, nil)
	serial := func() int64 {
		resp, err := client.Post("https://"+s.addr+"/function/echo", "text/plain", strings.NewReader("over tls"))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || string(b) != "over tls" || resp.ProtoMajor != 2 {
			t.Fatalf("got %d %q over %s, want 200 over HTTP/2", resp.StatusCode, b, resp.Proto)
		}
		return resp.TLS.PeerCertificates[0].SerialNumber.Int64()
	}
	if got := serial(); got != 100 {
		t.Fatalf("served certificate %d, want 100", got)
	}
	c, k = ca.issue(t, 200, false)
	writeTLSFile(t, keyFile, k)
	writeTLSFile(t, certFile, c)
	waitFor(t, 4*certCheckInterval, "the renewed certificate to be served", func() bool { return serial() == 200 })

	// Plain HTTP on the TLS port gets 400 with a JSON error saying so,
	// and the listener goes on serving HTTPS.
	resp, err := http.Post("http://"+s.addr+"/function/echo", "text/plain", strings.NewReader("plain"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 400 || resp.Header.Get("Content-Type") != "application/json" || !strings.Contains(string(b), `"type":"PlainHTTP"`) {
		t.Errorf("plain HTTP on the TLS listener: %d %q %s, want 400 with a PlainHTTP JSON error", resp.StatusCode, resp.Header.Get("Content-Type"), b)
	}
	if got := serial(); got != 200 {
		t.Errorf("after a plain request, served certificate %d, want 200", got)
	}
}

// With a client CA, a client must present a certificate that CA issued.
func TestMutualTLS(t *testing.T) {
	ca, other := newTestCA(t), newTestCA(t)
	dir := t.TempDir()
	c, k := ca.issue(t, 1, false)
	writeTLSFile(t, filepath.Join(dir, "tls.crt"), c)
	writeTLSFile(t, filepath.Join(dir, "tls.key"), k)
	writeTLSFile(t, filepath.Join(dir, "ca.crt"), ca.pem)
	s := serve(t, "{tls: {cert: "+dir+"/tls.crt, key: "+dir+"/tls.key, client_ca: "+dir+"/ca.crt}}", echoInvoker{})
	pair := func(ca *testCA) *tls.Certificate {
		c, k := ca.issue(t, 7, true)
		p, err := tls.X509KeyPair(c, k)
		if err != nil {
			t.Fatal(err)
		}
		return &p
	}
	get := func(cert *tls.Certificate) (int, error) {
		resp, err := tlsClient(ca, cert).Get("https://" + s.addr + "/healthz")
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	if _, err := get(nil); err == nil {
		t.Error("a client without a certificate was served")
	}
	if _, err := get(pair(other)); err == nil {
		t.Error("a client with a certificate of another CA was served")
	}
	if status, err := get(pair(ca)); err != nil || status != 200 {
		t.Errorf("a client with a certificate of the client CA: %d %v", status, err)
	}
}
