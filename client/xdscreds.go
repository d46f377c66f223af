package client

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/fairway-lb/fairway/internal/tlsfiles"
)

// Environment variables of the xDS connection's credentials, read when the
// corresponding option is not given.
const (
	// EnvXDSCAFile is a PEM CA bundle: connect to the control plane over
	// TLS and verify it with these CAs.
	EnvXDSCAFile = "FAIRWAY_XDS_CA_FILE"
	// EnvXDSCertFile and EnvXDSKeyFile are a client certificate and key
	// for mTLS (with EnvXDSCAFile).
	EnvXDSCertFile = "FAIRWAY_XDS_CERT_FILE"
	EnvXDSKeyFile  = "FAIRWAY_XDS_KEY_FILE"
	// EnvXDSTokenFile is the ServiceAccount token file sent to the control
	// plane (default DefaultTokenFile when it exists).
	EnvXDSTokenFile = "FAIRWAY_XDS_TOKEN_FILE"
	// EnvXDSTokenWithoutTLS, set to true, sends the token over a plaintext
	// connection (WithXDSTokenWithoutTLS).
	EnvXDSTokenWithoutTLS = "FAIRWAY_XDS_TOKEN_WITHOUT_TLS"
)

// DefaultTokenFile is where the client looks for its ServiceAccount token
// when neither WithXDSTokenFile nor FAIRWAY_XDS_TOKEN_FILE names one: a
// projected serviceAccountToken volume with audience "fairway" mounted at
// /var/run/secrets/fairway (see docs/security.md). The kubelet rotates the
// file; the client reads it at every connection to the control plane.
const DefaultTokenFile = "/var/run/secrets/fairway/token"

// defaultTokenFile is DefaultTokenFile; tests point it elsewhere.
var defaultTokenFile = DefaultTokenFile

// xdsSecurity is how the xDS connection authenticates.
type xdsSecurity struct {
	caFile, certFile, keyFile string
	tokenFile                 *string
	tokenWithoutTLS           bool
}

// WithXDSTLS connects to the control plane over TLS, verifying it with the
// PEM CA bundle caFile and, when certFile and keyFile are not empty,
// presenting that client certificate (mTLS). The files are re-read when
// they change (rotation of a mounted Secret), for new connections. Default:
// FAIRWAY_XDS_CA_FILE, FAIRWAY_XDS_CERT_FILE and FAIRWAY_XDS_KEY_FILE, else
// a plaintext connection.
func WithXDSTLS(caFile, certFile, keyFile string) Option {
	return func(c *config) { c.sec.caFile, c.sec.certFile, c.sec.keyFile = caFile, certFile, keyFile }
}

// WithXDSTokenFile sends the token in path (a projected ServiceAccount token
// with audience "fairway") to the control plane as "authorization: Bearer"
// on each xDS stream, re-reading the file for each stream so that a rotated
// token is used. An empty path sends no token. Default:
// FAIRWAY_XDS_TOKEN_FILE, else DefaultTokenFile when it exists.
func WithXDSTokenFile(path string) Option { return func(c *config) { c.sec.tokenFile = &path } }

// WithXDSTokenWithoutTLS allows the token to be sent over a plaintext
// connection (no WithXDSTLS), for a control plane served without TLS inside
// the cluster network. Without it, such a channel fails instead. Default:
// FAIRWAY_XDS_TOKEN_WITHOUT_TLS=true.
func WithXDSTokenWithoutTLS() Option { return func(c *config) { c.sec.tokenWithoutTLS = true } }

// fromEnv completes s from the environment.
func (s xdsSecurity) fromEnv() xdsSecurity {
	if s.caFile == "" && s.certFile == "" {
		s.caFile, s.certFile, s.keyFile = os.Getenv(EnvXDSCAFile), os.Getenv(EnvXDSCertFile), os.Getenv(EnvXDSKeyFile)
	}
	if s.tokenFile == nil {
		p, set := os.LookupEnv(EnvXDSTokenFile)
		if !set {
			if _, err := os.Stat(defaultTokenFile); err == nil {
				p = defaultTokenFile
			}
		}
		s.tokenFile = &p
	}
	if !s.tokenWithoutTLS {
		s.tokenWithoutTLS, _ = strconv.ParseBool(os.Getenv(EnvXDSTokenWithoutTLS))
	}
	return s
}

// dialOptions returns the dial options of the xDS connection's credentials
// and a function that stops watching the TLS files.
func (s xdsSecurity) dialOptions(log *slog.Logger, reg prometheus.Registerer) ([]grpc.DialOption, func(), error) {
	var opts []grpc.DialOption
	stop := func() {}
	tlsOn := s.caFile != ""
	switch {
	case tlsOn:
		tf := []tlsfiles.Option{tlsfiles.WithCA(s.caFile), tlsfiles.WithLogger(log), tlsfiles.WithRegisterer(reg)}
		if s.certFile != "" || s.keyFile != "" {
			tf = append(tf, tlsfiles.WithKeyPair(s.certFile, s.keyFile))
		}
		files, err := tlsfiles.Load(tf...)
		if err != nil {
			return nil, nil, fmt.Errorf("fairway/client: xDS TLS: %w", err)
		}
		stop = files.Close
		opts = append(opts, grpc.WithTransportCredentials(credentials.NewTLS(files.ClientConfig())))
	case s.certFile != "" || s.keyFile != "":
		return nil, nil, errors.New("fairway/client: an xDS client certificate needs a CA file (WithXDSTLS, " + EnvXDSCAFile + ")")
	}
	if s.tokenFile != nil && *s.tokenFile != "" {
		if !tlsOn && !s.tokenWithoutTLS {
			stop()
			return nil, nil, fmt.Errorf("fairway/client: the xDS token %s would travel in plaintext: give the control plane's CA (WithXDSTLS, %s) or allow it (WithXDSTokenWithoutTLS, %s=true)",
				*s.tokenFile, EnvXDSCAFile, EnvXDSTokenWithoutTLS)
		}
		opts = append(opts, grpc.WithPerRPCCredentials(&tokenFile{path: *s.tokenFile, requireTLS: tlsOn}))
	}
	return opts, stop, nil
}

// tokenFile sends the token of a file as a bearer token, read again for
// every RPC (one per xDS stream), so that a rotated file is picked up.
type tokenFile struct {
	path       string
	requireTLS bool
}

func (t *tokenFile) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	b, err := os.ReadFile(t.path)
	if err != nil {
		return nil, fmt.Errorf("fairway/client: xDS token: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return nil, fmt.Errorf("fairway/client: xDS token: %s is empty", t.path)
	}
	return map[string]string{"authorization": "Bearer " + tok}, nil
}

func (t *tokenFile) RequireTransportSecurity() bool { return t.requireTLS }
