package main

import (
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/fairway-lb/fairway/controlplane/auth"
	"github.com/fairway-lb/fairway/controlplane/kube"
	"github.com/fairway-lb/fairway/internal/tlsfiles"
)

// securityFlags are the flags of `fairway controlplane` for authentication
// and TLS of the xDS server.
type securityFlags struct {
	auth        string
	audience    string
	trustDomain string
	cacheTTL    time.Duration
	certFile    string
	keyFile     string
	clientCA    string

	mode auth.Mode // parsed from auth by check
}

func (s *securityFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&s.auth, "auth", "", "how xDS clients authenticate: token (ServiceAccount tokens, checked with the TokenReview API), mtls (client certificates naming a SPIFFE ID; needs --client-ca-file), token,mtls (either) or none (anyone who reaches the port reads everything); default token (with --file too, which then takes --kubeconfig for the TokenReview API); none must be given explicitly")
	fs.StringVar(&s.audience, "token-audience", auth.DefaultAudience, "audience clients' ServiceAccount tokens must be issued for")
	fs.StringVar(&s.trustDomain, "trust-domain", "", "with mtls, accept only client SPIFFE IDs in this trust domain (default: any the CA signs)")
	fs.DurationVar(&s.cacheTTL, "token-cache-ttl", auth.DefaultMaxCacheTTL, "trust a reviewed token this long (never past its expiry) before reviewing it again; a revoked token's streams end within it")
	fs.StringVar(&s.certFile, "tls-cert-file", "", "serve xDS over TLS with this PEM certificate chain (re-read when it changes)")
	fs.StringVar(&s.keyFile, "tls-key-file", "", "the private key of --tls-cert-file")
	fs.StringVar(&s.clientCA, "client-ca-file", "", "verify client certificates against these PEM CAs (mtls; re-read when it changes)")
}

// check parses --auth (default token, even with --file: none is never
// implied)
// and checks that the flags fit together. With --file, token
// authentication still needs a cluster: kubeconfig (--kubeconfig, else
// $KUBECONFIG) names it.
func (s *securityFlags) check(fromFile bool, kubeconfig string) error {
	if s.auth == "" {
		s.auth = "token" // none is never a default: it must be asked for
	}
	m, err := auth.ParseMode(s.auth)
	if err != nil {
		return fmt.Errorf("--auth must be none, token, mtls or token,mtls, got %q", s.auth)
	}
	s.mode = m
	switch {
	case (s.certFile == "") != (s.keyFile == ""):
		return errors.New("--tls-cert-file and --tls-key-file go together")
	case m.MTLS && (s.clientCA == "" || s.certFile == ""):
		return errors.New("--auth mtls needs --client-ca-file, --tls-cert-file and --tls-key-file")
	case !m.MTLS && s.clientCA != "":
		return errors.New("--client-ca-file needs --auth mtls or token,mtls")
	case !m.MTLS && s.trustDomain != "":
		return errors.New("--trust-domain needs --auth mtls or token,mtls")
	case m.Token && fromFile && kubeconfig == "" && os.Getenv("KUBECONFIG") == "":
		return errors.New("--auth token (the default) needs a cluster for the TokenReview API: with --file give --kubeconfig, or choose --auth none explicitly (anyone who reaches the xDS port reads everything) or --auth mtls")
	case s.cacheTTL <= 0:
		return fmt.Errorf("--token-cache-ttl must be positive, got %v", s.cacheTTL)
	case s.audience == "":
		return errors.New("--token-audience must not be empty")
	}
	return nil
}

// xdsSecurity returns the xDS server's TLS credentials and authentication
// interceptor for f, and a function that stops watching the TLS files.
func xdsSecurity(f controlPlaneFlags, log *slog.Logger, reg prometheus.Registerer) ([]grpc.ServerOption, func(), error) {
	s := f.security
	var opts []grpc.ServerOption
	stop := func() {}
	if s.certFile != "" {
		tf := []tlsfiles.Option{tlsfiles.WithKeyPair(s.certFile, s.keyFile), tlsfiles.WithLogger(log), tlsfiles.WithRegisterer(reg)}
		clientAuth := tls.NoClientCert
		if s.mode.MTLS {
			tf = append(tf, tlsfiles.WithCA(s.clientCA))
			clientAuth = tls.RequireAndVerifyClientCert
			if s.mode.Token {
				clientAuth = tls.VerifyClientCertIfGiven
			}
		}
		files, err := tlsfiles.Load(tf...)
		if err != nil {
			return nil, nil, err
		}
		stop = files.Close
		opts = append(opts, grpc.Creds(credentials.NewTLS(files.ServerConfig(clientAuth))))
	}
	aopts := []auth.Option{auth.WithLogger(log), auth.WithRegisterer(reg), auth.WithAudience(s.audience),
		auth.WithTrustDomain(s.trustDomain), auth.WithCacheTTL(s.cacheTTL, auth.DefaultNegativeCacheTTL)}
	if s.mode.Token {
		kubeconfig := f.kubeconfig
		if kubeconfig == "" {
			kubeconfig = os.Getenv("KUBECONFIG")
		}
		cfg, err := kube.RESTConfig(kubeconfig)
		if err != nil {
			stop()
			return nil, nil, fmt.Errorf("--auth token: %w", err)
		}
		cfg.QPS, cfg.Burst = auth.ReviewQPS, auth.ReviewBurst
		cs, err := kube.NewClientForConfig(cfg)
		if err != nil {
			stop()
			return nil, nil, err
		}
		aopts = append(aopts, auth.WithTokenReviewer(cs.AuthenticationV1().TokenReviews()))
	}
	a, err := auth.New(s.mode, aopts...)
	if err != nil {
		stop()
		return nil, nil, err
	}
	logSecurity(log.With("component", "fairway/controlplane"), s)
	return append(opts, grpc.StreamInterceptor(a.StreamInterceptor())), stop, nil
}

func logSecurity(log *slog.Logger, s securityFlags) {
	switch {
	case s.mode.None():
		log.Warn("xDS authentication is off (--auth none): any client that reaches the xDS port reads every Service's endpoints and reports caller zones")
	case s.certFile == "":
		log.Warn("xDS is served without TLS: clients' tokens travel in plaintext (give --tls-cert-file and --tls-key-file)", "auth", s.mode.String())
	default:
		log.Info("xDS clients authenticate", "auth", s.mode.String(), "tls", true)
	}
}
