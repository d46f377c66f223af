package auth

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"
	authv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// DefaultAudience is the audience a client's token must be issued for
// (a projected ServiceAccount token volume with audience "fairway").
const DefaultAudience = "fairway"

// Cache lifetimes of TokenReview results (WithCacheTTL).
const (
	// DefaultMaxCacheTTL bounds how long an accepted token is trusted
	// without a new review (and never past its exp claim): a deleted
	// ServiceAccount's streams end within this long.
	DefaultMaxCacheTTL = 5 * time.Minute
	// DefaultNegativeCacheTTL is how long a rejected token stays rejected
	// without a new review.
	DefaultNegativeCacheTTL = 10 * time.Second
)

// Client-side rate limits for the TokenReview client (rest.Config QPS and
// Burst): after a control-plane restart every client reconnects with its own
// token, one review each. With client-go's defaults (5/s) 1,000 clients
// would wait minutes; the apiserver's priority and fairness still protects
// it.
const (
	ReviewQPS   = 500
	ReviewBurst = 1000
)

// maxCacheEntries bounds the token cache; past it, expired entries are
// swept and rejections are no longer cached.
const maxCacheEntries = 10000

// reviewTimeout bounds one TokenReview call.
const reviewTimeout = 10 * time.Second

// serviceAccountPrefix starts the username of a ServiceAccount token.
const serviceAccountPrefix = "system:serviceaccount:"

// TokenReviewer creates TokenReviews: the
// AuthenticationV1().TokenReviews() client of a kubernetes.Interface
// satisfies it. Create is called from the streams' goroutines (at most one
// call per distinct token at a time) and may block up to its context.
type TokenReviewer interface {
	Create(ctx context.Context, tr *authv1.TokenReview, opts metav1.CreateOptions) (*authv1.TokenReview, error)
}

// denial is a definitive rejection of a credential, with the reason that
// labels fairway_xds_auth_denials_total.
type denial struct {
	reason string
	msg    string
}

func (d *denial) Error() string { return "fairway/auth: " + d.msg }

// errReview is a review that could not be made (the API unreachable): not
// a verdict on the token.
var errReview = errors.New("fairway/auth: the token could not be reviewed")

// verdict is one cached review result; immutable.
type verdict struct {
	id       Identity
	denied   *denial   // nil: accepted
	tokenExp time.Time // the token's exp claim; zero if none
	expires  time.Time // when the cache forgets this verdict
}

// tokenCache maps a hash of a token to its verdict, reviewing each token
// once at a time whatever the number of streams presenting it.
type tokenCache struct {
	a  *Authenticator
	sf singleflight.Group

	mu sync.Mutex
	m  map[[sha256.Size]byte]*verdict // guarded by mu
}

// review returns the token's verdict, from the cache while it is fresh.
// The error is errReview (wrapped) when the API could not answer.
func (c *tokenCache) review(token string) (*verdict, error) {
	key := sha256.Sum256([]byte(token))
	now := c.a.clock.Now()
	c.mu.Lock()
	v := c.m[key]
	c.mu.Unlock()
	if v != nil && now.Before(v.expires) {
		return v, nil
	}
	res, err, _ := c.sf.Do(string(key[:]), func() (any, error) {
		v, err := c.a.reviewToken(token)
		if err != nil {
			return nil, err
		}
		c.store(key, v)
		return v, nil
	})
	if err != nil {
		return nil, err
	}
	return res.(*verdict), nil
}

func (c *tokenCache) store(key [sha256.Size]byte, v *verdict) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) >= maxCacheEntries {
		now := c.a.clock.Now()
		for k, old := range c.m {
			if !now.Before(old.expires) {
				delete(c.m, k)
			}
		}
	}
	if len(c.m) >= maxCacheEntries && v.denied != nil {
		return
	}
	if len(c.m) >= maxCacheEntries {
		for k := range c.m {
			delete(c.m, k)
			break
		}
	}
	c.m[key] = v
}

// reviewToken asks the TokenReview API about token and turns the answer into
// a verdict.
func (a *Authenticator) reviewToken(token string) (*verdict, error) {
	ctx, cancel := context.WithTimeout(context.Background(), reviewTimeout)
	defer cancel()
	tr, err := a.reviews.Create(ctx, &authv1.TokenReview{
		Spec: authv1.TokenReviewSpec{Token: token, Audiences: []string{a.audience}},
	}, metav1.CreateOptions{})
	if err != nil {
		a.metrics.reviews.WithLabelValues("error").Inc()
		a.log.Warn("TokenReview failed", "error", err)
		return nil, fmt.Errorf("%w: %w", errReview, err)
	}
	now := a.clock.Now()
	v := &verdict{}
	v.id, v.denied = a.judge(tr)
	if v.denied != nil {
		a.metrics.reviews.WithLabelValues("denied").Inc()
		v.expires = now.Add(a.negativeTTL)
		return v, nil
	}
	a.metrics.reviews.WithLabelValues("authenticated").Inc()
	v.expires = now.Add(a.maxTTL)
	if exp, ok := expClaim(token); ok {
		v.tokenExp = exp
		if exp.Before(v.expires) {
			v.expires = exp
		}
	}
	return v, nil
}

// judge maps a TokenReview's status to an identity or a denial.
func (a *Authenticator) judge(tr *authv1.TokenReview) (Identity, *denial) {
	st := tr.Status
	if !st.Authenticated {
		if strings.Contains(st.Error, "audience") {
			return Identity{}, &denial{"audience", "the token is not valid for audience " + a.audience}
		}
		return Identity{}, &denial{"invalid_token", "the token was rejected"}
	}
	if !slices.Contains(st.Audiences, a.audience) {
		return Identity{}, &denial{"audience", "the token is not valid for audience " + a.audience}
	}
	ns, sa, ok := parseServiceAccount(st.User.Username)
	if !ok {
		return Identity{}, &denial{"not_service_account", "the token is not a ServiceAccount's"}
	}
	return Identity{Namespace: ns, ServiceAccount: sa, Method: MethodToken}, nil
}

// parseServiceAccount splits "system:serviceaccount:NS:SA".
func parseServiceAccount(user string) (ns, sa string, ok bool) {
	rest, found := strings.CutPrefix(user, serviceAccountPrefix)
	if !found {
		return "", "", false
	}
	ns, sa, found = strings.Cut(rest, ":")
	if !found || ns == "" || sa == "" || strings.Contains(sa, ":") {
		return "", "", false
	}
	return ns, sa, true
}

// wellFormed reports whether token looks like a JWT (three base64url
// parts), so that garbage is refused without a review.
func wellFormed(token string) bool {
	parts := strings.Split(token, ".")
	if len(parts) != 3 || len(token) > 16<<10 {
		return false
	}
	for _, p := range parts[:2] {
		if _, err := base64.RawURLEncoding.DecodeString(p); err != nil || p == "" {
			return false
		}
	}
	return true
}

// expClaim reads the exp claim of a JWT's payload. It is read only after
// the API accepted the token, which checked the signature.
func expClaim(token string) (time.Time, bool) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return time.Time{}, false
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return time.Time{}, false
	}
	var claims struct {
		Exp *json.Number `json:"exp"`
	}
	if err := json.Unmarshal(payload, &claims); err != nil || claims.Exp == nil {
		return time.Time{}, false
	}
	sec, err := claims.Exp.Int64()
	if err != nil {
		f, ferr := claims.Exp.Float64()
		if ferr != nil {
			return time.Time{}, false
		}
		sec = int64(f)
	}
	return time.Unix(sec, 0), true
}
