package tlsfiles_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fairway-lb/fairway/internal/testkit"
	"github.com/fairway-lb/fairway/internal/tlsfiles"
	"github.com/fairway-lb/fairway/internal/tlsfiles/tlstest"
)

// tlsServer accepts TLS connections on loopback with a certificate of ca, requiring a client
// certificate, and reports the common name of each client's certificate.
func tlsServer(t *testing.T, ca *tlstest.CA, cn string) (string, <-chan string) {
	t.Helper()
	certPEM, keyPEM := ca.Server(t, cn)
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	lis, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lis.Close() })
	clients := make(chan string, 10)
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			tc := c.(*tls.Conn)
			if tc.Handshake() == nil {
				clients <- tc.ConnectionState().PeerCertificates[0].Subject.CommonName
			}
			c.Close()
		}
	}()
	return lis.Addr().String(), clients
}

func dial(addr string, cfg *tls.Config) error {
	cfg = cfg.Clone()
	cfg.ServerName = "127.0.0.1"
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		return err
	}
	defer c.Close()
	return c.Handshake()
}

func TestFiles_ClientFollowsRotationAndKeepsGoodFiles(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	oldCA, newCA := tlstest.NewCA(t, "old CA"), tlstest.NewCA(t, "new CA")
	dir := t.TempDir()
	certPEM, keyPEM := oldCA.Client(t, "spiffe://cluster.local/ns/shop/sa/web")
	certFile := tlstest.WriteFile(t, dir, "tls.crt", certPEM)
	keyFile := tlstest.WriteFile(t, dir, "tls.key", keyPEM)
	caFile := tlstest.WriteFile(t, dir, "ca.crt", oldCA.PEM)
	reg := prometheus.NewRegistry()
	files, err := tlsfiles.Load(tlsfiles.WithKeyPair(certFile, keyFile), tlsfiles.WithCA(caFile), tlsfiles.WithRegisterer(reg))
	if err != nil {
		t.Fatal(err)
	}
	defer files.Close()
	cfg := files.ClientConfig()

	oldAddr, oldClients := tlsServer(t, oldCA, "old-server")
	newAddr, newClients := tlsServer(t, newCA, "new-server")
	if err := dial(oldAddr, cfg); err != nil {
		t.Fatalf("dial with the first files: %v", err)
	}
	testkit.Recv(t, oldClients, "the client at the old server")
	if err := dial(newAddr, cfg); err == nil {
		t.Fatal("a server of a CA not yet trusted was accepted")
	}

	// A rotation to the new CA: bundle, then certificate and key.
	tlstest.WriteFile(t, dir, "ca.crt", newCA.PEM)
	certPEM, keyPEM = newCA.Client(t, "spiffe://cluster.local/ns/shop/sa/web")
	tlstest.WriteFile(t, dir, "tls.key", keyPEM)
	tlstest.WriteFile(t, dir, "tls.crt", certPEM)
	testkit.Eventually(ctx, t, "the new files in use", func() bool { return dial(newAddr, cfg) == nil })
	testkit.Recv(t, newClients, "the client at the new server")
	if err := dial(oldAddr, cfg); err == nil {
		t.Fatal("the old CA's server is still trusted after the rotation")
	}

	// A broken write (a key that does not match) keeps the last good files.
	_, otherKey := newCA.Client(t, "")
	tlstest.WriteFile(t, dir, "tls.key", otherKey)
	testkit.Eventually(ctx, t, "a failed reload counted", func() bool {
		return testkit.MetricValue(t, reg, "fairway_tls_reloads_total", "result", "error") >= 1
	})
	if err := dial(newAddr, cfg); err != nil {
		t.Fatalf("dial after a broken rotation: %v", err)
	}
}

func TestLoad_Errors(t *testing.T) {
	dir := t.TempDir()
	for name, opts := range map[string][]tlsfiles.Option{
		"nothing":       nil,
		"missing files": {tlsfiles.WithKeyPair(dir+"/no.crt", dir+"/no.key")},
		"half a pair":   {tlsfiles.WithKeyPair(dir+"/no.crt", "")},
		"empty CA":      {tlsfiles.WithCA(tlstest.WriteFile(t, dir, "empty.crt", []byte("no PEM here")))},
	} {
		if _, err := tlsfiles.Load(opts...); err == nil {
			t.Errorf("%s: Load succeeded", name)
		}
	}
}
