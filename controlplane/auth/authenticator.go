package auth

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/utils/clock"

	"github.com/fairway-lb/fairway/internal/loglimit"
	"github.com/fairway-lb/fairway/internal/promreg"
)

// Methods (Identity.Method).
const (
	MethodToken = "token"
	MethodMTLS  = "mtls"
)

// Mode is which credentials the xDS server accepts. With both, a stream is
// accepted with either (a verified client certificate first).
type Mode struct {
	Token bool
	MTLS  bool
}

// None reports whether the mode accepts every stream unauthenticated.
func (m Mode) None() bool { return !m.Token && !m.MTLS }

func (m Mode) String() string {
	switch {
	case m.Token && m.MTLS:
		return "token,mtls"
	case m.Token:
		return MethodToken
	case m.MTLS:
		return MethodMTLS
	}
	return "none"
}

// ParseMode parses --auth: "none", "token", "mtls" or "token,mtls".
func ParseMode(s string) (Mode, error) {
	if s == "none" {
		return Mode{}, nil
	}
	var m Mode
	for part := range strings.SplitSeq(s, ",") {
		switch strings.TrimSpace(part) {
		case MethodToken:
			m.Token = true
		case MethodMTLS:
			m.MTLS = true
		default:
			return Mode{}, fmt.Errorf("fairway/auth: unknown auth mode %q (none, token, mtls or token,mtls)", s)
		}
	}
	return m, nil
}

// Option configures New.
type Option func(*Authenticator)

// WithTokenReviewer sets the TokenReview client; required when the mode
// accepts tokens.
func WithTokenReviewer(r TokenReviewer) Option { return func(a *Authenticator) { a.reviews = r } }

// WithAudience sets the audience tokens must be issued for (default
// DefaultAudience).
func WithAudience(aud string) Option { return func(a *Authenticator) { a.audience = aud } }

// WithTrustDomain requires client certificates' SPIFFE IDs to be in this
// trust domain (default: any).
func WithTrustDomain(td string) Option { return func(a *Authenticator) { a.trustDomain = td } }

// WithCacheTTL sets how long an accepted token is trusted before a new
// review (never past its exp claim; default DefaultMaxCacheTTL) and how long
// a rejected one stays rejected (default DefaultNegativeCacheTTL).
func WithCacheTTL(accepted, rejected time.Duration) Option {
	return func(a *Authenticator) { a.maxTTL, a.negativeTTL = accepted, rejected }
}

// WithClock sets the clock of the cache and of the streams' expiry
// (default the real one).
func WithClock(c clock.WithDelayedExecution) Option { return func(a *Authenticator) { a.clock = c } }

// WithLogger sets the logger (default slog.Default()).
func WithLogger(l *slog.Logger) Option { return func(a *Authenticator) { a.log = l } }

// WithRegisterer registers the metrics with reg:
// fairway_xds_auth_streams_total{method,result},
// fairway_xds_auth_denials_total{reason} and
// fairway_xds_auth_token_reviews_total{result}.
func WithRegisterer(reg prometheus.Registerer) Option { return func(a *Authenticator) { a.reg = reg } }

// Authenticator authenticates xDS streams once, when they open, and ends
// them (codes.Unauthenticated) when their token expires or, when the cache
// forgets it, a new review rejects it. Install it with StreamInterceptor.
type Authenticator struct {
	// immutable after New
	mode        Mode
	reviews     TokenReviewer
	audience    string
	trustDomain string
	maxTTL      time.Duration
	negativeTTL time.Duration
	clock       clock.WithDelayedExecution
	log         *slog.Logger
	reg         prometheus.Registerer
	metrics     metrics
	tokens      *tokenCache
	refusals    *loglimit.Limit[string] // a Warn per denial reason each refusalLogEvery
}

// refusalLogEvery is how often a refused stream of each reason is logged at
// warn level (a misconfigured client fleet shows up in the log); the others
// in between log at debug level, and all count in
// fairway_xds_auth_denials_total.
const refusalLogEvery = 10 * time.Second

type metrics struct {
	streams *prometheus.CounterVec // {method, result}
	denials *prometheus.CounterVec // {reason}
	reviews *prometheus.CounterVec // {result}
}

// New returns an authenticator for mode. A mode of none is valid: its
// interceptor lets every stream through without an identity.
func New(mode Mode, opts ...Option) (*Authenticator, error) {
	a := &Authenticator{
		mode:        mode,
		audience:    DefaultAudience,
		maxTTL:      DefaultMaxCacheTTL,
		negativeTTL: DefaultNegativeCacheTTL,
		clock:       clock.RealClock{},
		log:         slog.Default(),
	}
	for _, o := range opts {
		o(a)
	}
	a.log = a.log.With("component", "fairway/auth")
	if mode.Token && a.reviews == nil {
		return nil, errors.New("fairway/auth: token authentication needs a TokenReview client")
	}
	if a.audience == "" {
		return nil, errors.New("fairway/auth: empty audience")
	}
	if a.maxTTL <= 0 || a.negativeTTL < 0 {
		return nil, fmt.Errorf("fairway/auth: cache lifetimes must be positive, got %v and %v", a.maxTTL, a.negativeTTL)
	}
	if err := a.registerMetrics(); err != nil {
		return nil, err
	}
	a.tokens = &tokenCache{a: a, m: map[[sha256.Size]byte]*verdict{}}
	a.refusals = loglimit.New[string](refusalLogEvery)
	return a, nil
}

func (a *Authenticator) registerMetrics() error {
	var err error
	if a.metrics.streams, err = promreg.Register(a.reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "fairway_xds_auth_streams_total",
		Help: "xDS streams opened, by authentication method (token, mtls, none) and result (authenticated, denied, error, unauthenticated: --auth none).",
	}, []string{"method", "result"})); err != nil {
		return fmt.Errorf("fairway/auth: %w", err)
	}
	if a.metrics.denials, err = promreg.Register(a.reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "fairway_xds_auth_denials_total",
		Help: "xDS streams refused or ended for their credentials, by reason (missing, malformed, invalid_token, audience, not_service_account, certificate, trust_domain, expired, revoked).",
	}, []string{"reason"})); err != nil {
		return fmt.Errorf("fairway/auth: %w", err)
	}
	if a.metrics.reviews, err = promreg.Register(a.reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "fairway_xds_auth_token_reviews_total",
		Help: "TokenReview API calls (cache misses), by result (authenticated, denied, error).",
	}, []string{"result"})); err != nil {
		return fmt.Errorf("fairway/auth: %w", err)
	}
	for _, r := range []string{"authenticated", "denied", "error"} {
		a.metrics.reviews.WithLabelValues(r)
	}
	return nil
}

// Mode returns the authenticator's mode.
func (a *Authenticator) Mode() Mode { return a.mode }
