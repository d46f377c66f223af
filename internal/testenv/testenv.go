// Package testenv starts a real kube-apiserver and etcd on loopback for tests
// and for local development.
//
// The binaries are built from Go modules by hack/kubebins/build.sh (run
// "make kubebins") into a cache folder, by default
// $HOME/.cache/fairway/kubebins/<KubeVersion>, or the folder named by the
// FAIRWAY_KUBEBINS environment variable. Tests never skip when the binaries
// are missing: Start fails the test and says how to build them.
//
// Each environment uses its own temporary folder (etcd data, serving
// certificate, service-account key, token file, kubeconfig and process logs)
// and free loopback ports, so tests in different packages may run in
// parallel. The admin user authenticates with a random bearer token and is in
// system:masters; other identities are reached by impersonation
// (ImpersonatedConfig).
//
// No controller manager runs: nothing creates EndpointSlices, and
// kube-apiserver rejects loopback addresses in EndpointSlices, so tests
// register non-loopback, test-only addresses (for example 198.51.100.0/24).
package testenv

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// KubeVersion is the kube-apiserver version built by hack/kubebins/build.sh.
const KubeVersion = "v1.37.2"

// BinDirEnv names the environment variable holding the folder with the
// kube-apiserver and etcd binaries.
const BinDirEnv = "FAIRWAY_KUBEBINS"

// ErrBinariesMissing is returned by StartProcess when kube-apiserver or etcd
// is not in the binary folder.
var ErrBinariesMissing = errors.New("fairway/testenv: kube-apiserver or etcd binary missing; run `make kubebins` (hack/kubebins/build.sh) or set " + BinDirEnv)

// DefaultBinDir returns the folder holding the binaries: $FAIRWAY_KUBEBINS if
// set, otherwise $HOME/.cache/fairway/kubebins/<KubeVersion>.
func DefaultBinDir() string {
	if d := os.Getenv(BinDirEnv); d != "" {
		return d
	}
	home, err := os.UserHomeDir()
	if err != nil {
		home = os.TempDir()
	}
	return filepath.Join(home, ".cache", "fairway", "kubebins", KubeVersion)
}

// Option configures Start and StartProcess.
type Option func(*options)

type options struct {
	binDir        string
	startTimeout  time.Duration
	stopTimeout   time.Duration
	apiserverArgs []string
}

// WithBinDir sets the folder holding kube-apiserver and etcd (default
// DefaultBinDir()).
func WithBinDir(dir string) Option { return func(o *options) { o.binDir = dir } }

// WithStartTimeout bounds how long starting etcd or kube-apiserver may take
// (default 90s; the first start on a busy 2-core machine can be slow).
func WithStartTimeout(d time.Duration) Option { return func(o *options) { o.startTimeout = d } }

// WithAPIServerArgs appends flags ("--name=value") to kube-apiserver's
// command line; a later flag overrides an earlier one of the same name.
func WithAPIServerArgs(args ...string) Option {
	return func(o *options) { o.apiserverArgs = append(o.apiserverArgs, args...) }
}

// Env is a running etcd + kube-apiserver pair.
//
// Its methods may be called from any goroutine; StopAPIServer, StartAPIServer,
// StartSecondAPIServer (and the stop function it returns) and Stop are
// serialized.
type Env struct {
	// Config authenticates as the admin user (group system:masters).
	// Callers must copy it (rest.CopyConfig) before changing it.
	Config *rest.Config
	// KubeconfigPath is a kubeconfig file for the admin user.
	KubeconfigPath string
	// Dir holds etcd's data, the PKI files, the kubeconfig and the logs
	// (etcd.log, kube-apiserver.log).
	Dir string
	// EtcdURL is etcd's client URL.
	EtcdURL string
	// AdminToken is the admin user's bearer token.
	AdminToken string

	opts     options
	apiPort  int
	pkiDir   string
	caPool   *x509.CertPool
	apiArgs  []string
	logPaths []string

	mu        sync.Mutex            // serializes start/stop of the processes below
	etcd      *process              // guarded by mu
	apiserver *process              // guarded by mu
	seconds   map[*process]struct{} // further apiservers; guarded by mu
	nSeconds  int                   // how many were ever started; guarded by mu
}

// Start starts an environment in a temporary folder of t and stops it when
// the test ends; on failure it dumps the processes' logs into the test log.
// It fails the test (never skips it) when the binaries are missing.
func Start(t testing.TB, opts ...Option) *Env {
	t.Helper()
	o := newOptions(opts)
	ctx, cancel := context.WithTimeout(context.Background(), 2*o.startTimeout)
	defer cancel()
	dir := t.TempDir()
	env, err := StartProcess(ctx, dir, opts...)
	if err != nil {
		dumpLogs(t, dir, []string{filepath.Join(dir, "etcd.log"), filepath.Join(dir, "kube-apiserver.log")})
		t.Fatalf("%v", err)
	}
	t.Cleanup(func() {
		if err := env.Stop(); err != nil {
			t.Errorf("%v", err)
		}
		if t.Failed() {
			dumpLogs(t, dir, env.logs())
		}
	})
	return env
}

// StartProcess starts etcd and kube-apiserver with their state in dir (which
// it creates if needed) and waits until the apiserver reports /readyz. The
// caller must call Stop. ctx bounds the start only, not the processes' life.
func StartProcess(ctx context.Context, dir string, opts ...Option) (*Env, error) {
	o := newOptions(opts)
	etcdBin := filepath.Join(o.binDir, "etcd")
	apiBin := filepath.Join(o.binDir, "kube-apiserver")
	for _, b := range []string{etcdBin, apiBin} {
		if fi, err := os.Stat(b); err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
			return nil, fmt.Errorf("%w (looked for %s)", ErrBinariesMissing, b)
		}
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("fairway/testenv: %w", err)
	}
	e := &Env{
		Dir:    dir,
		opts:   o,
		pkiDir: filepath.Join(dir, "pki"),
	}
	if err := os.MkdirAll(e.pkiDir, 0o700); err != nil {
		return nil, fmt.Errorf("fairway/testenv: %w", err)
	}
	if err := e.writeCredentials(); err != nil {
		return nil, err
	}
	ports, err := freePorts(3)
	if err != nil {
		return nil, err
	}
	clientPort, peerPort := ports[0], ports[1]
	e.apiPort = ports[2]
	e.EtcdURL = "http://127.0.0.1:" + strconv.Itoa(clientPort)
	peerURL := "http://127.0.0.1:" + strconv.Itoa(peerPort)

	etcdLog := filepath.Join(dir, "etcd.log")
	apiLog := filepath.Join(dir, "kube-apiserver.log")
	e.logPaths = []string{etcdLog, apiLog}

	e.etcd = &process{
		name: "etcd",
		path: etcdBin,
		args: []string{
			"--name=fairway",
			"--data-dir=" + filepath.Join(dir, "etcd"),
			"--listen-client-urls=" + e.EtcdURL,
			"--advertise-client-urls=" + e.EtcdURL,
			"--listen-peer-urls=" + peerURL,
			"--initial-advertise-peer-urls=" + peerURL,
			"--initial-cluster=fairway=" + peerURL,
			"--unsafe-no-fsync=true",
			"--log-level=warn",
		},
		logPath: etcdLog,
	}
	e.apiArgs = append([]string{
		"--etcd-servers=" + e.EtcdURL,
		"--bind-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(e.apiPort),
		"--advertise-address=127.0.0.1",
		"--endpoint-reconciler-type=none",
		"--cert-dir=" + e.pkiDir,
		"--token-auth-file=" + filepath.Join(e.pkiDir, "tokens.csv"),
		"--authorization-mode=RBAC",
		"--service-account-issuer=https://kubernetes.default.svc",
		"--service-account-key-file=" + filepath.Join(e.pkiDir, "sa.key"),
		"--service-account-signing-key-file=" + filepath.Join(e.pkiDir, "sa.key"),
		"--service-cluster-ip-range=10.96.0.0/16",
		"--v=0",
	}, o.apiserverArgs...)

	e.mu.Lock()
	defer e.mu.Unlock()
	if err := e.etcd.start(); err != nil {
		return nil, err
	}
	if err := waitReady(ctx, o.startTimeout, e.etcd, &http.Client{Timeout: 2 * time.Second}, e.EtcdURL+"/health", ""); err != nil {
		e.stopLocked()
		return nil, err
	}
	if err := e.startAPIServerLocked(ctx); err != nil {
		e.stopLocked()
		return nil, err
	}
	if err := e.writeKubeconfig(); err != nil {
		e.stopLocked()
		return nil, err
	}
	return e, nil
}

// Host returns the apiserver's URL, https://127.0.0.1:<port>.
func (e *Env) Host() string { return "https://127.0.0.1:" + strconv.Itoa(e.apiPort) }

// ImpersonatedConfig returns a copy of the admin config that impersonates
// user with groups. For a ServiceAccount pass
// "system:serviceaccount:<namespace>:<name>" and no groups: the apiserver
// then adds the ServiceAccount's groups itself.
func (e *Env) ImpersonatedConfig(user string, groups ...string) *rest.Config {
	c := rest.CopyConfig(e.Config)
	c.Impersonate = rest.ImpersonationConfig{UserName: user, Groups: groups}
	return c
}

// StopAPIServer stops the kube-apiserver process and leaves etcd running.
// Clients then see refused connections until StartAPIServer.
func (e *Env) StopAPIServer() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.apiserver == nil {
		return nil
	}
	err := e.apiserver.stop(e.opts.stopTimeout)
	e.apiserver = nil
	return err
}

// StartAPIServer starts kube-apiserver again on the same port with the same
// etcd, certificate and credentials, and waits for /readyz. It does nothing
// if the apiserver is running.
func (e *Env) StartAPIServer() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.apiserver != nil {
		return nil
	}
	if e.etcd == nil {
		return errors.New("fairway/testenv: environment stopped")
	}
	ctx, cancel := context.WithTimeout(context.Background(), e.opts.startTimeout)
	defer cancel()
	return e.startAPIServerLocked(ctx)
}

// Stop stops kube-apiserver and etcd. It is safe to call more than once.
func (e *Env) Stop() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.stopLocked()
}

// stopLocked stops both processes; e.mu must be held.
func (e *Env) stopLocked() error {
	var errs []error
	for p := range e.seconds {
		errs = append(errs, p.stop(e.opts.stopTimeout))
		delete(e.seconds, p)
	}
	if e.apiserver != nil {
		errs = append(errs, e.apiserver.stop(e.opts.stopTimeout))
		e.apiserver = nil
	}
	if e.etcd != nil {
		errs = append(errs, e.etcd.stop(e.opts.stopTimeout))
		e.etcd = nil
	}
	return errors.Join(errs...)
}

// startAPIServerLocked starts kube-apiserver and waits for /readyz; e.mu
// must be held.
func (e *Env) startAPIServerLocked(ctx context.Context) error {
	p, err := e.runAPIServer(ctx, "kube-apiserver", e.apiArgs, filepath.Join(e.Dir, "kube-apiserver.log"), e.Host(), e.caPool)
	if err != nil {
		return err
	}
	e.apiserver = p
	return nil
}

// runAPIServer starts a kube-apiserver process with args and waits until
// host answers /readyz. caPool verifies the serving certificate; nil probes
// without verification (loopback only) because the apiserver writes its
// self-signed certificate on its first start.
func (e *Env) runAPIServer(ctx context.Context, name string, args []string, logPath, host string, caPool *x509.CertPool) (*process, error) {
	p := &process{
		name:    name,
		path:    filepath.Join(e.opts.binDir, "kube-apiserver"),
		args:    args,
		logPath: logPath,
	}
	if err := p.start(); err != nil {
		return nil, err
	}
	tlsConfig := &tls.Config{InsecureSkipVerify: true} //nolint:gosec // loopback readiness probe before the CA exists
	if caPool != nil {
		tlsConfig = &tls.Config{RootCAs: caPool}
	}
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: tlsConfig}}
	defer client.CloseIdleConnections()
	if err := waitReady(ctx, e.opts.startTimeout, p, client, host+"/readyz", e.AdminToken); err != nil {
		_ = p.stop(e.opts.stopTimeout)
		return nil, err
	}
	return p, nil
}

// StartSecondAPIServer starts another kube-apiserver process on the same
// etcd, with the same flags as the primary one (including those given with
// WithAPIServerArgs), the same service-account key and token file, but its
// own free port and certificate folder, and waits for its /readyz. It returns
// an admin config for it and a function that stops it (safe to call more
// than once; also called when the test ends, and by Stop).
//
// Clients of the primary apiserver do not see the second one: a test may
// stop the primary and change objects through the second, as another
// replica of a highly available control plane would.
func (e *Env) StartSecondAPIServer(t testing.TB) (*rest.Config, func()) {
	t.Helper()
	cfg, p, err := e.startSecondAPIServer()
	if err != nil {
		t.Fatalf("%v", err)
	}
	stop := func() {
		e.mu.Lock()
		defer e.mu.Unlock()
		if _, ok := e.seconds[p]; !ok {
			return // already stopped, by this function or by Stop
		}
		delete(e.seconds, p)
		if err := p.stop(e.opts.stopTimeout); err != nil {
			t.Errorf("%v", err)
		}
	}
	t.Cleanup(stop)
	return cfg, stop
}

// startSecondAPIServer starts a further apiserver and records it in
// e.seconds.
func (e *Env) startSecondAPIServer() (*rest.Config, *process, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.etcd == nil {
		return nil, nil, errors.New("fairway/testenv: environment stopped")
	}
	e.nSeconds++
	n := e.nSeconds
	certDir := filepath.Join(e.Dir, fmt.Sprintf("pki-apiserver-%d", n+1))
	if err := os.MkdirAll(certDir, 0o700); err != nil {
		return nil, nil, fmt.Errorf("fairway/testenv: %w", err)
	}
	ports, err := freePorts(1)
	if err != nil {
		return nil, nil, err
	}
	host := "https://127.0.0.1:" + strconv.Itoa(ports[0])
	args := make([]string, 0, len(e.apiArgs)+2)
	for _, a := range e.apiArgs {
		if strings.HasPrefix(a, "--secure-port=") || strings.HasPrefix(a, "--cert-dir=") {
			continue
		}
		args = append(args, a)
	}
	args = append(args, "--secure-port="+strconv.Itoa(ports[0]), "--cert-dir="+certDir)
	name := fmt.Sprintf("kube-apiserver-%d", n+1)
	logPath := filepath.Join(e.Dir, name+".log")
	e.logPaths = append(e.logPaths, logPath)
	ctx, cancel := context.WithTimeout(context.Background(), e.opts.startTimeout)
	defer cancel()
	p, err := e.runAPIServer(ctx, name, args, logPath, host, nil)
	if err != nil {
		return nil, nil, err
	}
	caPEM, err := os.ReadFile(filepath.Join(certDir, "apiserver.crt"))
	if err != nil {
		_ = p.stop(e.opts.stopTimeout)
		return nil, nil, fmt.Errorf("fairway/testenv: read serving certificate of %s: %w", name, err)
	}
	if e.seconds == nil {
		e.seconds = make(map[*process]struct{})
	}
	e.seconds[p] = struct{}{}
	cfg := rest.CopyConfig(e.Config)
	cfg.Host = host
	cfg.TLSClientConfig = rest.TLSClientConfig{CAData: caPEM}
	return cfg, p, nil
}

// logs returns the paths of the processes' logs.
func (e *Env) logs() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]string(nil), e.logPaths...)
}

// writeCredentials generates the service-account signing key and the admin
// token file.
func (e *Env) writeCredentials() error {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return fmt.Errorf("fairway/testenv: generate service-account key: %w", err)
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})
	if err := os.WriteFile(filepath.Join(e.pkiDir, "sa.key"), keyPEM, 0o600); err != nil {
		return fmt.Errorf("fairway/testenv: %w", err)
	}
	tok := make([]byte, 24)
	if _, err := rand.Read(tok); err != nil {
		return fmt.Errorf("fairway/testenv: %w", err)
	}
	e.AdminToken = hex.EncodeToString(tok)
	line := e.AdminToken + ",admin,admin-uid,system:masters\n"
	if err := os.WriteFile(filepath.Join(e.pkiDir, "tokens.csv"), []byte(line), 0o600); err != nil {
		return fmt.Errorf("fairway/testenv: %w", err)
	}
	return nil
}

// writeKubeconfig pins the apiserver's self-signed certificate and writes the
// admin kubeconfig and rest.Config.
func (e *Env) writeKubeconfig() error {
	caPEM, err := os.ReadFile(filepath.Join(e.pkiDir, "apiserver.crt"))
	if err != nil {
		return fmt.Errorf("fairway/testenv: read serving certificate: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return errors.New("fairway/testenv: no certificate in " + filepath.Join(e.pkiDir, "apiserver.crt"))
	}
	e.caPool = pool
	const name = "fairway-testenv"
	kc := clientcmdapi.NewConfig()
	kc.Clusters[name] = &clientcmdapi.Cluster{Server: e.Host(), CertificateAuthorityData: caPEM}
	kc.AuthInfos[name] = &clientcmdapi.AuthInfo{Token: e.AdminToken}
	kc.Contexts[name] = &clientcmdapi.Context{Cluster: name, AuthInfo: name, Namespace: "default"}
	kc.CurrentContext = name
	e.KubeconfigPath = filepath.Join(e.Dir, "kubeconfig")
	if err := clientcmd.WriteToFile(*kc, e.KubeconfigPath); err != nil {
		return fmt.Errorf("fairway/testenv: write kubeconfig: %w", err)
	}
	e.Config = &rest.Config{
		Host:            e.Host(),
		BearerToken:     e.AdminToken,
		TLSClientConfig: rest.TLSClientConfig{CAData: caPEM},
		QPS:             -1, // no client-side rate limit in tests
	}
	return nil
}

func newOptions(opts []Option) options {
	o := options{
		binDir:       DefaultBinDir(),
		startTimeout: 90 * time.Second,
		stopTimeout:  15 * time.Second,
	}
	for _, opt := range opts {
		opt(&o)
	}
	return o
}

// freePorts returns n distinct free TCP ports on 127.0.0.1. The listeners are
// held until all ports are picked so that the ports differ.
func freePorts(n int) ([]int, error) {
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("fairway/testenv: pick a free port: %w", err)
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// waitReady polls url until it answers 200, p exits, or timeout or ctx ends.
func waitReady(ctx context.Context, timeout time.Duration, p *process, client *http.Client, url, token string) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return fmt.Errorf("fairway/testenv: %w", err)
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = fmt.Errorf("%s: %s", url, resp.Status)
		} else {
			last = err
		}
		select {
		case <-p.done:
			return fmt.Errorf("fairway/testenv: %s exited before it was ready: %v (log: %s)", p.name, p.waitErr, p.logPath)
		case <-ctx.Done():
			return fmt.Errorf("fairway/testenv: %s not ready: %w (last: %v; log: %s)", p.name, ctx.Err(), last, p.logPath)
		case <-tick.C:
		}
	}
}

// dumpLogs writes the tail of each log into the test log.
func dumpLogs(t testing.TB, dir string, paths []string) {
	t.Helper()
	const maxTail = 16 << 10
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		if len(b) > maxTail {
			b = b[len(b)-maxTail:]
		}
		t.Logf("fairway/testenv: last %d bytes of %s:\n%s", len(b), p, b)
	}
	t.Logf("fairway/testenv: state kept until cleanup in %s", dir)
}
