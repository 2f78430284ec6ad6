package config

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"path/filepath"
)

// ServerTLS makes a listener serve HTTPS (HTTP/1.1 and HTTP/2). The files
// are read at start and at every reload, and again when they change while
// the host runs (a renewed certificate is taken without a restart).
// Relative paths are relative to the config file's directory.
type ServerTLS struct {
	// Cert and Key are PEM files: the certificate (chain) and its private
	// key. Both or neither.
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
	// ClientCA, when set, is a PEM file of the CAs whose client
	// certificates are accepted; a client without one is refused (mutual
	// TLS).
	ClientCA string `yaml:"client_ca"`
}

// Enabled reports whether the listener serves TLS.
func (t ServerTLS) Enabled() bool { return t.Cert != "" }

// LoadCertificate reads the certificate and key.
func (t ServerTLS) LoadCertificate() (*tls.Certificate, error) {
	c, err := tls.LoadX509KeyPair(t.Cert, t.Key)
	if err != nil {
		return nil, fmt.Errorf("load certificate %s and key %s: %w", t.Cert, t.Key, err)
	}
	return &c, nil
}

// LoadClientCAs reads ClientCA; nil when it is not set.
func (t ServerTLS) LoadClientCAs() (*x509.CertPool, error) {
	if t.ClientCA == "" {
		return nil, nil
	}
	pem, err := os.ReadFile(t.ClientCA)
	if err != nil {
		return nil, fmt.Errorf("read client CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("client CA %s holds no PEM certificate", t.ClientCA)
	}
	return pool, nil
}

// validateServerTLS makes the paths of t (at key path p) absolute and
// checks that the files load: the certificate must match its key.
func validateServerTLS(c *Config, d *decoder, p string, t *ServerTLS) {
	if t.Cert == "" && t.Key == "" && t.ClientCA == "" {
		return
	}
	abs := func(f string) string {
		if f != "" && !filepath.IsAbs(f) {
			return filepath.Join(c.Dir, f)
		}
		return f
	}
	t.Cert, t.Key, t.ClientCA = abs(t.Cert), abs(t.Key), abs(t.ClientCA)
	switch {
	case t.Cert == "":
		d.errorf(d.at(p+".cert"), p+".cert", "missing: set the certificate file with the key file")
		return
	case t.Key == "":
		d.errorf(d.at(p+".key"), p+".key", "missing: set the private key file with the certificate file")
		return
	}
	if d.withoutSecrets {
		return
	}
	if _, err := t.LoadCertificate(); err != nil {
		d.errorf(d.at(p+".cert"), p+".cert", "%v", err)
	}
	if _, err := t.LoadClientCAs(); err != nil {
		d.errorf(d.at(p+".client_ca"), p+".client_ca", "%v", err)
	}
}
