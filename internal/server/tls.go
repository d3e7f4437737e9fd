package server

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/heraldrt/herald/internal/apps"
)

// TLS on the public listener: wss:// and https:// on the one port, from the
// PEM files tls_cert and tls_key (flags --tls-cert, --tls-key; env
// HERALD_TLS_CERT, HERALD_TLS_KEY). The files are checked for changes at
// most every certCheckInterval on a handshake and reloaded, so a renewed
// certificate is served without a restart; a file that fails to load keeps
// the previous certificate and logs a warning.

// certCheckInterval is how often the certificate files are checked for changes.
const certCheckInterval = 10 * time.Second

// loadTLS returns the public listener's TLS configuration, or nil when no
// certificate is configured. Only HTTP/1.1 is offered: WebSockets over
// HTTP/2 are not served.
func loadTLS(cfg *apps.Config, log *slog.Logger) (*tls.Config, error) {
	if cfg.TLSCert == "" && cfg.TLSKey == "" {
		return nil, nil
	}
	r := &certReloader{certFile: cfg.TLSCert, keyFile: cfg.TLSKey, log: log}
	if err := r.load(); err != nil {
		return nil, fmt.Errorf("server: tls: %w", err)
	}
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		NextProtos:     []string{"http/1.1"},
		GetCertificate: r.get,
	}, nil
}

// certReloader serves a certificate loaded from files and reloads it when
// their modification times change.
type certReloader struct {
	certFile, keyFile string
	log               *slog.Logger

	mu        sync.Mutex
	cert      *tls.Certificate
	certMod   time.Time
	keyMod    time.Time
	lastCheck time.Time
}

func modTime(path string) (time.Time, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return time.Time{}, err
	}
	return fi.ModTime(), nil
}

// load reads both files; the caller holds mu or has the reloader to itself.
func (r *certReloader) load() error {
	cm, err := modTime(r.certFile)
	if err != nil {
		return err
	}
	km, err := modTime(r.keyFile)
	if err != nil {
		return err
	}
	c, err := tls.LoadX509KeyPair(r.certFile, r.keyFile)
	if err != nil {
		return err // the error names neither key bytes nor passphrases
	}
	r.cert, r.certMod, r.keyMod, r.lastCheck = &c, cm, km, time.Now()
	return nil
}

func (r *certReloader) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if time.Since(r.lastCheck) >= certCheckInterval {
		r.lastCheck = time.Now()
		cm, cerr := modTime(r.certFile)
		km, kerr := modTime(r.keyFile)
		if cerr == nil && kerr == nil && (!cm.Equal(r.certMod) || !km.Equal(r.keyMod)) {
			if err := r.load(); err != nil {
				r.log.Warn("TLS certificate changed but cannot be loaded; serving the previous one",
					"cert", r.certFile, "key", r.keyFile, "err", err)
			} else {
				r.log.Info("TLS certificate reloaded", "cert", r.certFile)
			}
		}
	}
	return r.cert, nil
}
