package http

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/polyfn/polyfn/internal/config"
)

// certCheckInterval bounds how often a TLS listener looks at its
// certificate, key and client CA files for a change; a renewed certificate
// is served from the first handshake after this much time.
const certCheckInterval = 5 * time.Second

// tlsFiles serves the certificate and client CAs of a listener, read again
// when their files change (looked at, on a handshake, at most every
// certCheckInterval) and at each reload. Files that no longer load are
// logged and the ones before kept.
type tlsFiles struct {
	cfg config.ServerTLS
	log *slog.Logger

	mu      sync.Mutex
	conf    *tls.Config
	stamp   string // the files' sizes and modification times, as loaded
	checked time.Time
}

func newTLSFiles(cfg config.ServerTLS, log *slog.Logger) *tlsFiles {
	f := &tlsFiles{cfg: cfg, log: log}
	f.refresh(true)
	return f
}

// serverConfig is the listener's tls.Config: every handshake takes the
// files' current state.
func (f *tlsFiles) serverConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: []string{"h2", "http/1.1"},
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			f.mu.Lock()
			defer f.mu.Unlock()
			if time.Since(f.checked) >= certCheckInterval {
				f.refreshLocked(false)
			}
			return f.conf, nil
		},
	}
}

// refresh reads the files again if they changed (or, with force, always).
func (f *tlsFiles) refresh(force bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.refreshLocked(force)
}

func (f *tlsFiles) refreshLocked(force bool) {
	f.checked = time.Now()
	stamp := fileStamp(f.cfg.Cert) + fileStamp(f.cfg.Key) + fileStamp(f.cfg.ClientCA)
	if !force && stamp == f.stamp {
		return
	}
	cert, err := f.cfg.LoadCertificate()
	var cas *x509.CertPool
	if err == nil {
		cas, err = f.cfg.LoadClientCAs()
	}
	if err != nil {
		f.log.Error("tls: the certificate files do not load; the ones before stay", "error", err)
		return
	}
	conf := &tls.Config{
		MinVersion:   tls.VersionTLS12,
		NextProtos:   []string{"h2", "http/1.1"},
		Certificates: []tls.Certificate{*cert},
	}
	if cas != nil {
		conf.ClientCAs, conf.ClientAuth = cas, tls.RequireAndVerifyClientCert
	}
	if f.conf != nil && stamp != f.stamp {
		f.log.Info("tls: certificate files changed; serving the new ones", "cert", f.cfg.Cert)
	}
	f.conf, f.stamp = conf, stamp
}

func fileStamp(path string) string {
	if path == "" {
		return "-"
	}
	st, err := os.Stat(path)
	if err != nil {
		return "?"
	}
	return fmt.Sprintf("%d/%d;", st.ModTime().UnixNano(), st.Size())
}
