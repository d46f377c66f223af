package auth_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"sync/atomic"
	"testing"
	"time"

	discoverypb "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"

	"github.com/fairway-lb/fairway/controlplane/auth"
	"github.com/fairway-lb/fairway/internal/testkit"
	"github.com/fairway-lb/fairway/internal/tlsfiles"
	"github.com/fairway-lb/fairway/internal/tlsfiles/tlstest"
)

// clientTLS returns client credentials trusting ca, presenting a
// certificate for uri (none if empty), and recording the serial number of
// the server's certificate at each handshake.
func clientTLS(t *testing.T, ca *tlstest.CA, uri string, serverSerial *atomic.Value) credentials.TransportCredentials {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	cfg := &tls.Config{RootCAs: pool, ServerName: "localhost"}
	if uri != "-" {
		certPEM, keyPEM := ca.Client(t, uri)
		cert, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	if serverSerial != nil {
		cfg.VerifyConnection = func(cs tls.ConnectionState) error {
			serverSerial.Store(cs.PeerCertificates[0].SerialNumber.String())
			return nil
		}
	}
	return credentials.NewTLS(cfg)
}

func TestMTLS_SPIFFEIdentityAndServerCertificateRotation(t *testing.T) {
	ca := tlstest.NewCA(t, "fairway test CA")
	dir := t.TempDir()
	certPEM, keyPEM := ca.Server(t, "xds-1")
	certFile := tlstest.WriteFile(t, dir, "tls.crt", certPEM)
	keyFile := tlstest.WriteFile(t, dir, "tls.key", keyPEM)
	caFile := tlstest.WriteFile(t, dir, "ca.crt", ca.PEM)
	tlsReg := prometheus.NewRegistry()
	files, err := tlsfiles.Load(tlsfiles.WithKeyPair(certFile, keyFile), tlsfiles.WithCA(caFile), tlsfiles.WithRegisterer(tlsReg))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(files.Close)
	a, err := auth.New(auth.Mode{MTLS: true}, auth.WithTrustDomain("cluster.local"))
	if err != nil {
		t.Fatal(err)
	}
	x := startXDS(t, a, grpc.Creds(credentials.NewTLS(files.ServerConfig(tls.RequireAndVerifyClientCert))))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	var serial atomic.Value
	st, err := ads(ctx, t, x.addr, "", clientTLS(t, ca, "spiffe://cluster.local/ns/shop/sa/web", &serial))
	if err != nil {
		t.Fatal(err)
	}
	seen := testkit.Recv(t, x.seen, "the handler's identity")
	if want := (auth.Identity{Namespace: "shop", ServiceAccount: "web", Method: auth.MethodMTLS}); !seen.ok || seen.id != want {
		t.Fatalf("handler saw %+v (%v), want %+v", seen.id, seen.ok, want)
	}
	first := serial.Load()

	for _, tc := range []struct{ uri, want string }{
		{"", "exactly one URI SAN"},
		{"spiffe://other.domain/ns/shop/sa/web", "trust domain cluster.local"},
		{"spiffe://cluster.local/shop/web", "not spiffe://TRUST_DOMAIN/ns/NS/sa/SA"},
	} {
		_, err := ads(ctx, t, x.addr, "", clientTLS(t, ca, tc.uri, nil))
		wantCode(t, err, codes.Unauthenticated, tc.want)
	}
	if _, err := ads(ctx, t, x.addr, "", clientTLS(t, ca, "-", nil)); err == nil {
		t.Fatal("a client without a certificate got a response")
	}

	// Rotate the server's certificate: new connections get the new one, the
	// open stream keeps going.
	certPEM, keyPEM = ca.Server(t, "xds-2")
	tlstest.WriteFile(t, dir, "tls.key", keyPEM)
	tlstest.WriteFile(t, dir, "tls.crt", certPEM)
	testkit.Eventually(ctx, t, "the rotated certificate read", func() bool {
		return testkit.MetricValue(t, tlsReg, "fairway_tls_reloads_total", "result", "ok") >= 1 &&
			files.Certificate().Leaf != nil && files.Certificate().Leaf.Subject.CommonName == "xds-2"
	})
	var serial2 atomic.Value
	if _, err := ads(ctx, t, x.addr, "", clientTLS(t, ca, "spiffe://cluster.local/ns/shop/sa/web", &serial2)); err != nil {
		t.Fatal(err)
	}
	if serial2.Load() == first {
		t.Fatalf("a new connection got the old certificate (serial %v)", first)
	}
	if err := st.Send(&discoverypb.DiscoveryRequest{TypeUrl: resourcev3.ListenerType}); err != nil {
		t.Fatalf("the stream opened before the rotation: %v", err)
	}
	if _, err := st.Recv(); err != nil {
		t.Fatalf("the stream opened before the rotation: %v", err)
	}
}
