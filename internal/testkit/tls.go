package testkit

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
)

// TLSCert is a certificate generated at test time for 127.0.0.1, ::1 and
// localhost, signed by its own throw-away CA.
type TLSCert struct {
	CertFile string // PEM certificate chain (leaf, then CA)
	KeyFile  string // PEM private key of the leaf
	CAFile   string // PEM CA certificate, for NODE_EXTRA_CA_CERTS and the like
	Pool     *x509.CertPool

	once   sync.Once
	client *http.Client
}

// NewTLSCert generates a CA and a server certificate into t's temporary
// directory.
func NewTLSCert(t testing.TB) *TLSCert {
	t.Helper()
	dir := t.TempDir()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "Herald test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leafTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "localhost"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1")},
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	c := &TLSCert{CertFile: filepath.Join(dir, "cert.pem"), KeyFile: filepath.Join(dir, "key.pem"),
		CAFile: filepath.Join(dir, "ca.pem"), Pool: x509.NewCertPool()}
	c.Pool.AddCert(ca)
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
	chain := append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leafDER}), caPEM...)
	for path, data := range map[string][]byte{c.CertFile: chain, c.CAFile: caPEM,
		c.KeyFile: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})} {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

// ClientConfig returns a TLS client configuration that trusts only the
// certificate's CA.
func (c *TLSCert) ClientConfig() *tls.Config {
	return &tls.Config{RootCAs: c.Pool, MinVersion: tls.VersionTLS12}
}

// HTTPClient returns an HTTP client (one per certificate, keeping its
// connections alive) that trusts only the certificate's CA.
func (c *TLSCert) HTTPClient() *http.Client {
	c.once.Do(func() {
		c.client = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: c.ClientConfig()}}
	})
	return c.client
}

// DialTLS connects over wss:// to app key on addr, trusting only cert's CA,
// and waits for pusher:connection_established.
func DialTLS(t testing.TB, addr, key string, cert *TLSCert) *WSClient {
	t.Helper()
	url := "wss://" + addr + "/app/" + key + "?protocol=7&client=go-conformance&version=1.0&flash=false"
	return DialURL(t, url, ws.Dialer{TLSConfig: cert.ClientConfig()})
}

// StartHeraldTLS is StartHerald with TLS on the public listener: the
// certificate is passed as HERALD_TLS_CERT and HERALD_TLS_KEY, and readiness
// is checked over https.
func StartHeraldTLS(t testing.TB, bin, config string, cert *TLSCert, env ...string) *Herald {
	t.Helper()
	env = append([]string{"HERALD_TLS_CERT=" + cert.CertFile, "HERALD_TLS_KEY=" + cert.KeyFile}, env...)
	return startHerald(t, bin, "127.0.0.1", config, cert, env)
}

// readyz asks the server's /readyz, over https when it serves TLS.
func (h *Herald) readyz() (*http.Response, error) {
	if h.TLS != nil {
		return h.TLS.HTTPClient().Get("https://" + h.Addr + "/readyz")
	}
	return http.Get("http://" + h.Addr + "/readyz")
}
