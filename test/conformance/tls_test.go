package conformance

import (
	"testing"

	"github.com/heraldrt/herald/internal/testkit"
)

// pusher-js (Node build, forceTLS) over wss:// and the `pusher` SDK over
// https:// against Herald serving TLS itself (--tls-cert/--tls-key given as
// HERALD_TLS_CERT/HERALD_TLS_KEY), with a certificate generated now whose CA
// Node trusts through NODE_EXTRA_CA_CERTS.
func TestPusherJSOverTLS(t *testing.T) {
	cert := testkit.NewTLSCert(t)
	h := testkit.StartHeraldTLS(t, heraldBin, DefaultConfig, cert)
	RunNode(t, h, "node/tls.test.mjs", "NODE_EXTRA_CA_CERTS="+cert.CAFile)
	// The Go client over wss:// against the same process.
	c := testkit.DialTLS(t, h.Addr, AppKey, cert)
	c.Subscribe("go-over-tls")
	c.Ping()
}
