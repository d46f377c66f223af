package auth

import (
	"context"
	"errors"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"k8s.io/utils/clock"
)

// reviewRetry is how soon a stream's token is reviewed again when the API
// could not answer (the stream keeps going meanwhile, never past the token's
// exp claim).
const reviewRetry = 30 * time.Second

// StreamInterceptor returns the interceptor that authenticates each stream
// once, before its handler runs, puts the Identity into the stream's
// context (NewContext) and ends the stream with codes.Unauthenticated when
// its credentials stop being valid. Refused streams get
// codes.Unauthenticated, or codes.Unavailable when the TokenReview API could
// not answer. With mode none every stream passes without an identity.
func (a *Authenticator) StreamInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if a.mode.None() {
			a.metrics.streams.WithLabelValues("none", "unauthenticated").Inc()
			return handler(srv, ss)
		}
		cred, err := a.authenticate(ss.Context())
		if err != nil {
			return err
		}
		a.metrics.streams.WithLabelValues(cred.id.Method, "authenticated").Inc()
		ctx, cancel := context.WithCancelCause(NewContext(ss.Context(), cred.id))
		defer cancel(nil)
		if cred.token == "" {
			return handler(srv, &identityStream{ServerStream: ss, ctx: ctx})
		}
		g := &guard{a: a, ctx: ctx, cancel: cancel, token: cred.token, id: cred.id}
		g.schedule(cred.verdict)
		defer g.stop()
		err = handler(srv, &guardedStream{ServerStream: ss, ctx: ctx})
		if d, ok := errors.AsType[*denial](context.Cause(ctx)); ok {
			return status.Error(codes.Unauthenticated, d.Error())
		}
		return err
	}
}

// credential is an accepted stream's identity and, for a token, the token
// and its verdict.
type credential struct {
	id      Identity
	token   string
	verdict *verdict
}

// authenticate establishes the identity of a stream from its client
// certificate or its bearer token, as the mode allows.
func (a *Authenticator) authenticate(ctx context.Context) (credential, error) {
	if a.mode.MTLS {
		id, d, has := a.fromCertificate(ctx)
		if has && d != nil {
			return credential{}, a.deny(ctx, MethodMTLS, d)
		}
		if has {
			return credential{id: id}, nil
		}
	}
	if a.mode.Token {
		token, present := bearer(ctx)
		if present {
			return a.authenticateToken(ctx, token)
		}
	}
	msg := "no credentials: send the ServiceAccount token as authorization: Bearer TOKEN"
	switch {
	case a.mode.MTLS && a.mode.Token:
		msg = "no credentials: present a client certificate or send the ServiceAccount token as authorization: Bearer TOKEN"
	case a.mode.MTLS:
		msg = "no credentials: present a client certificate"
	}
	return credential{}, a.deny(ctx, "none", &denial{"missing", msg})
}

func (a *Authenticator) authenticateToken(ctx context.Context, token string) (credential, error) {
	if !wellFormed(token) {
		return credential{}, a.deny(ctx, MethodToken, &denial{"malformed", "the bearer token is not a JWT"})
	}
	v, err := a.tokens.review(token)
	if err != nil {
		a.metrics.streams.WithLabelValues(MethodToken, "error").Inc()
		return credential{}, status.Error(codes.Unavailable, errReview.Error()+"; try again")
	}
	if v.denied != nil {
		return credential{}, a.deny(ctx, MethodToken, v.denied)
	}
	if !v.tokenExp.IsZero() && !a.clock.Now().Before(v.tokenExp) {
		return credential{}, a.deny(ctx, MethodToken, &denial{"expired", "the token expired"})
	}
	return credential{id: v.id, token: token, verdict: v}, nil
}

// deny counts and logs a refused stream and returns its status.
func (a *Authenticator) deny(ctx context.Context, method string, d *denial) error {
	a.metrics.streams.WithLabelValues(method, "denied").Inc()
	a.metrics.denials.WithLabelValues(d.reason).Inc()
	attrs := []any{"reason", d.reason, "error", d.Error()}
	if p, ok := peer.FromContext(ctx); ok {
		attrs = append(attrs, "peer", p.Addr.String())
	}
	if skipped, ok := a.refusals.Allow(d.reason, a.clock.Now()); ok {
		a.log.Warn("xDS stream refused: its credentials were not accepted", append(attrs, "refused_since_last_warn", skipped)...)
	} else {
		a.log.Debug("xDS stream refused", attrs...)
	}
	return status.Error(codes.Unauthenticated, d.Error())
}

// bearer returns the token of the stream's "authorization: Bearer TOKEN"
// metadata.
func bearer(ctx context.Context) (string, bool) {
	md, _ := metadata.FromIncomingContext(ctx)
	for _, v := range md.Get("authorization") {
		scheme, token, ok := strings.Cut(v, " ")
		if ok && strings.EqualFold(scheme, "bearer") {
			return strings.TrimSpace(token), true
		}
	}
	return "", false
}

// guard ends a token stream when its token expires, and reviews the token
// again (through the cache) whenever the cache forgets its verdict, ending
// the stream when the review rejects it. Its timer callbacks run on their
// own goroutines.
type guard struct {
	// immutable
	a      *Authenticator
	ctx    context.Context
	cancel context.CancelCauseFunc
	token  string
	id     Identity

	mu      sync.Mutex
	timer   clock.Timer // guarded by mu
	stopped bool        // guarded by mu
}

// schedule arms the next check: when the verdict expires from the cache,
// or at the token's exp claim if earlier.
func (g *guard) schedule(v *verdict) {
	at := v.expires
	if !v.tokenExp.IsZero() && v.tokenExp.Before(at) {
		at = v.tokenExp
	}
	g.scheduleAt(at, v.tokenExp)
}

func (g *guard) scheduleAt(at, tokenExp time.Time) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.stopped {
		return
	}
	// The callback runs under the fake clock's lock in tests: it only
	// starts the check.
	g.timer = g.a.clock.AfterFunc(at.Sub(g.a.clock.Now()), func() { go g.check(tokenExp) })
}

func (g *guard) check(tokenExp time.Time) {
	if g.ctx.Err() != nil {
		return
	}
	now := g.a.clock.Now()
	if !tokenExp.IsZero() && !now.Before(tokenExp) {
		g.end(&denial{"expired", "the token expired"})
		return
	}
	v, err := g.a.tokens.review(g.token)
	switch {
	case err != nil:
		at := now.Add(reviewRetry)
		if !tokenExp.IsZero() && tokenExp.Before(at) {
			at = tokenExp
		}
		g.scheduleAt(at, tokenExp)
	case v.denied != nil:
		g.end(&denial{"revoked", "the token is no longer accepted: " + strings.TrimPrefix(v.denied.Error(), "fairway/auth: ")})
	default:
		g.schedule(v)
	}
}

func (g *guard) end(d *denial) {
	if g.ctx.Err() != nil { // the stream ended meanwhile
		return
	}
	g.a.metrics.denials.WithLabelValues(d.reason).Inc()
	g.a.log.Info("ending xDS stream", "namespace", g.id.Namespace, "service_account", g.id.ServiceAccount, "reason", d.reason)
	g.cancel(d)
}

func (g *guard) stop() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.stopped = true
	if g.timer != nil {
		g.timer.Stop()
	}
}

// identityStream is a stream whose context carries the identity.
type identityStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *identityStream) Context() context.Context { return s.ctx }

// guardedStream is a stream that its guard can end: once its context is
// cancelled, RecvMsg and SendMsg fail, so the xDS server's handler returns.
type guardedStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *guardedStream) Context() context.Context { return s.ctx }

func (s *guardedStream) SendMsg(m any) error {
	if err := s.ended(); err != nil {
		return err
	}
	return s.ServerStream.SendMsg(m)
}

// RecvMsg waits for the next message or the end of the stream's context.
// Each call reads on a goroutine of its own (a blocked gRPC read cannot be
// interrupted otherwise); after an end the caller discards m and the read
// returns when the handler has returned.
func (s *guardedStream) RecvMsg(m any) error {
	if err := s.ended(); err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- s.ServerStream.RecvMsg(m) }()
	select {
	case err := <-done:
		return err
	case <-s.ctx.Done():
		return s.ended()
	}
}

func (s *guardedStream) ended() error {
	if s.ctx.Err() == nil {
		return nil
	}
	if d, ok := errors.AsType[*denial](context.Cause(s.ctx)); ok {
		return status.Error(codes.Unauthenticated, d.Error())
	}
	return status.FromContextError(s.ctx.Err()).Err()
}
