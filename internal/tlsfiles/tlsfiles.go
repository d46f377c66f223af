// Package tlsfiles keeps TLS material read from files (a certificate and its
// key, a CA bundle) current: it watches the files' folders, as a Kubernetes
// Secret or ConfigMap volume swaps them with a symlink rename, and re-reads
// them, so that new handshakes use the new files while open connections keep
// going. Both the control plane (its xDS server) and the Fairway client (its
// xDS connection) use it.
package tlsfiles

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/fairway-lb/fairway/internal/promreg"
)

// debounce coalesces the events of one rotation (a Secret volume update is
// several renames and removals) into one read.
const debounce = 100 * time.Millisecond

// resync re-reads the files this often even without an event, in case one
// was lost.
const resync = time.Minute

// Option configures Load.
type Option func(*options)

type options struct {
	certFile, keyFile, caFile string
	log                       *slog.Logger
	reg                       prometheus.Registerer
}

// WithKeyPair reads a PEM certificate chain and its private key.
func WithKeyPair(certFile, keyFile string) Option {
	return func(o *options) { o.certFile, o.keyFile = certFile, keyFile }
}

// WithCA reads a PEM bundle of CA certificates: the roots a client verifies
// the server with, or the ones a server verifies client certificates with.
func WithCA(caFile string) Option { return func(o *options) { o.caFile = caFile } }

// WithLogger sets the logger (default slog.Default()).
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.log = l } }

// WithRegisterer registers fairway_tls_reloads_total{result} with reg.
func WithRegisterer(reg prometheus.Registerer) Option { return func(o *options) { o.reg = reg } }

// material is one consistent reading of the files; immutable.
type material struct {
	cert *tls.Certificate // nil without WithKeyPair
	pool *x509.CertPool   // nil without WithCA
}

// Files is the current TLS material of a set of files. Its methods may be
// called from any goroutine.
type Files struct {
	// immutable
	opts    options
	log     *slog.Logger
	reloads *prometheus.CounterVec // {result}
	stop    chan struct{}
	wg      sync.WaitGroup

	cur       atomic.Pointer[material]
	closeOnce sync.Once
}

// Load reads the files (an error if any is missing or invalid) and watches
// them until Close. A later read that fails (a half-written rotation, a key
// that does not match the certificate) is logged and counted, and the
// previous material stays in use.
func Load(opts ...Option) (*Files, error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	if (o.certFile == "") != (o.keyFile == "") {
		return nil, errors.New("fairway/tlsfiles: a certificate file needs a key file and the other way round")
	}
	if o.certFile == "" && o.caFile == "" {
		return nil, errors.New("fairway/tlsfiles: no file to read")
	}
	if o.log == nil {
		o.log = slog.Default()
	}
	f := &Files{opts: o, log: o.log.With("component", "fairway/tlsfiles"), stop: make(chan struct{})}
	reloads, err := promreg.Register(o.reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "fairway_tls_reloads_total",
		Help: "Reads of TLS certificate, key and CA files after a change, by result (ok, error).",
	}, []string{"result"}))
	if err != nil {
		return nil, fmt.Errorf("fairway/tlsfiles: %w", err)
	}
	f.reloads = reloads
	reloads.WithLabelValues("ok")
	reloads.WithLabelValues("error")
	m, err := o.read()
	if err != nil {
		return nil, err
	}
	f.cur.Store(m)
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, fmt.Errorf("fairway/tlsfiles: %w", err)
	}
	for _, dir := range o.dirs() {
		if err := w.Add(dir); err != nil {
			w.Close()
			return nil, fmt.Errorf("fairway/tlsfiles: watching %s: %w", dir, err)
		}
	}
	f.wg.Add(1)
	go f.watch(w)
	return f, nil
}

// Close stops watching and waits for the watcher goroutine. The last
// material stays usable.
func (f *Files) Close() {
	f.closeOnce.Do(func() { close(f.stop) })
	f.wg.Wait()
}

func (o options) dirs() []string {
	var dirs []string
	for _, p := range []string{o.certFile, o.keyFile, o.caFile} {
		if p == "" {
			continue
		}
		if d := filepath.Dir(p); !slices.Contains(dirs, d) {
			dirs = append(dirs, d)
		}
	}
	return dirs
}

func (o options) read() (*material, error) {
	m := &material{}
	if o.certFile != "" {
		c, err := tls.LoadX509KeyPair(o.certFile, o.keyFile)
		if err != nil {
			return nil, fmt.Errorf("fairway/tlsfiles: %s, %s: %w", o.certFile, o.keyFile, err)
		}
		m.cert = &c
	}
	if o.caFile != "" {
		pem, err := os.ReadFile(o.caFile)
		if err != nil {
			return nil, fmt.Errorf("fairway/tlsfiles: %w", err)
		}
		m.pool = x509.NewCertPool()
		if !m.pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("fairway/tlsfiles: %s holds no PEM certificate", o.caFile)
		}
	}
	return m, nil
}

// watch re-reads the files after events in their folders (debounced) and
// every resync, until Close.
func (f *Files) watch(w *fsnotify.Watcher) {
	defer f.wg.Done()
	defer w.Close()
	timer := time.NewTimer(resync)
	defer timer.Stop()
	for {
		select {
		case <-f.stop:
			return
		case _, ok := <-w.Events:
			if !ok {
				return
			}
			timer.Reset(debounce)
		case err, ok := <-w.Errors:
			if !ok {
				return
			}
			f.log.Warn("watch error; re-reading the files", "error", err)
			timer.Reset(debounce)
		case <-timer.C:
			f.reload()
			timer.Reset(resync)
		}
	}
}

func (f *Files) reload() {
	m, err := f.opts.read()
	if err != nil {
		f.reloads.WithLabelValues("error").Inc()
		f.log.Warn("cannot re-read the TLS files; keeping the previous ones", "error", err)
		return
	}
	old := f.cur.Swap(m)
	if !old.equal(m) {
		f.reloads.WithLabelValues("ok").Inc()
		f.log.Info("TLS files changed; new handshakes use them", "cert", f.opts.certFile, "ca", f.opts.caFile)
	}
}

func (m *material) equal(n *material) bool {
	if (m.cert == nil) != (n.cert == nil) || (m.pool == nil) != (n.pool == nil) {
		return false
	}
	if m.cert != nil && !slices.EqualFunc(m.cert.Certificate, n.cert.Certificate, slices.Equal) {
		return false
	}
	return m.pool == nil || m.pool.Equal(n.pool)
}

// Certificate returns the current certificate (nil without WithKeyPair).
func (f *Files) Certificate() *tls.Certificate { return f.cur.Load().cert }

// Pool returns the current CA pool (nil without WithCA).
func (f *Files) Pool() *x509.CertPool { return f.cur.Load().pool }

// ServerConfig returns a server configuration that presents the current
// certificate at each handshake and, with clientAuth above
// tls.RequestClientCert, verifies client certificates against the current
// CA pool.
func (f *Files) ServerConfig(clientAuth tls.ClientAuthType) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			m := f.cur.Load()
			c := &tls.Config{MinVersion: tls.VersionTLS12, ClientAuth: clientAuth, ClientCAs: m.pool}
			if m.cert != nil {
				c.Certificates = []tls.Certificate{*m.cert}
			}
			return c, nil
		},
	}
}

// ClientConfig returns a client configuration that verifies the server
// against the current CA pool (the system roots without WithCA) and, with
// WithKeyPair, presents the current certificate when the server asks.
func (f *Files) ClientConfig() *tls.Config {
	c := &tls.Config{MinVersion: tls.VersionTLS12}
	if f.opts.caFile != "" {
		// Go verifies against a fixed RootCAs; the pool changes on rotation,
		// so the chain is verified here against the current one instead.
		c.InsecureSkipVerify = true
		c.VerifyConnection = f.verifyServer
	}
	if f.opts.certFile != "" {
		c.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return f.cur.Load().cert, nil
		}
	}
	return c
}

func (f *Files) verifyServer(cs tls.ConnectionState) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("fairway/tlsfiles: the server presented no certificate")
	}
	inter := x509.NewCertPool()
	for _, c := range cs.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{
		DNSName:       cs.ServerName,
		Roots:         f.cur.Load().pool,
		Intermediates: inter,
	})
	return err
}
