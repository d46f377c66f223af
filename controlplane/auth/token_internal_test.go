package auth

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	authv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	testingclock "k8s.io/utils/clock/testing"
)

// fakeReviewer answers TokenReviews as set, counting calls; it may block
// each call until release is closed.
type fakeReviewer struct {
	calls   atomic.Int32
	release chan struct{}
	status  authv1.TokenReviewStatus
	err     error
}

func (f *fakeReviewer) Create(_ context.Context, _ *authv1.TokenReview, _ metav1.CreateOptions) (*authv1.TokenReview, error) {
	f.calls.Add(1)
	if f.release != nil {
		<-f.release
	}
	if f.err != nil {
		return nil, f.err
	}
	return &authv1.TokenReview{Status: f.status}, nil
}

func jwt(claims string) string {
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(`{"alg":"RS256"}`)) + "." + enc([]byte(claims)) + ".c2ln"
}

func TestParseServiceAccount(t *testing.T) {
	for _, tc := range []struct {
		user   string
		ns, sa string
		ok     bool
	}{
		{"system:serviceaccount:shop:web", "shop", "web", true},
		{"system:serviceaccount:shop", "", "", false},
		{"system:serviceaccount::web", "", "", false},
		{"system:serviceaccount:shop:web:x", "", "", false},
		{"alice", "", "", false},
		{"system:node:n1", "", "", false},
	} {
		ns, sa, ok := parseServiceAccount(tc.user)
		if ns != tc.ns || sa != tc.sa || ok != tc.ok {
			t.Errorf("parseServiceAccount(%q) = %q, %q, %v; want %q, %q, %v", tc.user, ns, sa, ok, tc.ns, tc.sa, tc.ok)
		}
	}
}

func TestExpClaimAndWellFormed(t *testing.T) {
	if exp, ok := expClaim(jwt(`{"exp":1700000000}`)); !ok || !exp.Equal(time.Unix(1700000000, 0)) {
		t.Errorf("expClaim = %v, %v; want 1700000000", exp, ok)
	}
	if _, ok := expClaim(jwt(`{"sub":"x"}`)); ok {
		t.Error("expClaim found an exp in a token without one")
	}
	for tok, want := range map[string]bool{jwt(`{}`): true, "abc": false, "a.b": false, "!!.??.x": false, "": false} {
		if got := wellFormed(tok); got != want {
			t.Errorf("wellFormed(%q) = %v, want %v", tok, got, want)
		}
	}
}

func TestParseMode(t *testing.T) {
	for s, want := range map[string]Mode{"none": {}, "token": {Token: true}, "mtls": {MTLS: true}, "token,mtls": {true, true}, "mtls,token": {true, true}} {
		if got, err := ParseMode(s); err != nil || got != want {
			t.Errorf("ParseMode(%q) = %v, %v; want %v", s, got, err, want)
		}
	}
	for _, s := range []string{"", "basic", "token,", "None"} {
		if _, err := ParseMode(s); err == nil {
			t.Errorf("ParseMode(%q) succeeded", s)
		}
	}
}

func newTestAuthenticator(t *testing.T, r TokenReviewer, clk *testingclock.FakeClock) *Authenticator {
	t.Helper()
	a, err := New(Mode{Token: true}, WithTokenReviewer(r), WithClock(clk))
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestTokenCache_SingleFlightAndLifetimes(t *testing.T) {
	clk := testingclock.NewFakeClock(time.Unix(1_000_000, 0))
	r := &fakeReviewer{release: make(chan struct{}), status: authv1.TokenReviewStatus{
		Authenticated: true, Audiences: []string{DefaultAudience},
		User: authv1.UserInfo{Username: "system:serviceaccount:shop:web"}}}
	a := newTestAuthenticator(t, r, clk)
	tok := jwt(fmt.Sprintf(`{"exp":%d}`, clk.Now().Add(2*time.Minute).Unix()))

	var wg sync.WaitGroup
	for range 100 {
		wg.Go(func() {
			v, err := a.tokens.review(tok)
			if err != nil || v.denied != nil || v.id.Namespace != "shop" {
				t.Errorf("review = %+v, %v", v, err)
			}
		})
	}
	for r.calls.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(20 * time.Millisecond) // let the other 99 join the flight
	close(r.release)
	wg.Wait()
	if n := r.calls.Load(); n != 1 {
		t.Fatalf("%d reviews for 100 concurrent streams with one token, want 1", n)
	}
	// The exp claim (2 min) is sooner than the cache lifetime (5 min).
	v, _ := a.tokens.review(tok)
	if want := clk.Now().Add(2 * time.Minute); !v.expires.Equal(want) {
		t.Errorf("verdict expires %v, want the token's exp %v", v.expires, want)
	}
	clk.Step(2 * time.Minute)
	if _, err := a.tokens.review(tok); err != nil || r.calls.Load() != 2 {
		t.Errorf("after exp: %v, %d reviews; want a second review", err, r.calls.Load())
	}
}

func TestTokenCache_RejectionsCachedBrieflyAPIErrorsNot(t *testing.T) {
	clk := testingclock.NewFakeClock(time.Unix(1_000_000, 0))
	r := &fakeReviewer{status: authv1.TokenReviewStatus{Authenticated: false, Error: "invalid bearer token"}}
	a := newTestAuthenticator(t, r, clk)
	tok := jwt(`{}`)
	for range 3 {
		v, err := a.tokens.review(tok)
		if err != nil || v.denied == nil || v.denied.reason != "invalid_token" {
			t.Fatalf("review = %+v, %v; want an invalid_token denial", v, err)
		}
	}
	if n := r.calls.Load(); n != 1 {
		t.Errorf("%d reviews of a rejected token within the negative lifetime, want 1", n)
	}
	clk.Step(DefaultNegativeCacheTTL)
	a.tokens.review(tok)
	if n := r.calls.Load(); n != 2 {
		t.Errorf("%d reviews after the negative lifetime, want 2", n)
	}

	r.err = errors.New("connection refused")
	for range 2 {
		if _, err := a.tokens.review(jwt(`{"x":1}`)); !errors.Is(err, errReview) {
			t.Fatalf("review with the API down = %v, want errReview", err)
		}
	}
	if n := r.calls.Load(); n != 4 {
		t.Errorf("%d reviews, want 4: an API error is not cached", n)
	}
}

func TestJudge(t *testing.T) {
	a := &Authenticator{audience: DefaultAudience}
	for _, tc := range []struct {
		st     authv1.TokenReviewStatus
		reason string
	}{
		{authv1.TokenReviewStatus{Authenticated: true, Audiences: []string{"fairway"}, User: authv1.UserInfo{Username: "system:serviceaccount:a:b"}}, ""},
		{authv1.TokenReviewStatus{Authenticated: true, Audiences: []string{"other"}, User: authv1.UserInfo{Username: "system:serviceaccount:a:b"}}, "audience"},
		{authv1.TokenReviewStatus{Authenticated: true, Audiences: []string{"fairway"}, User: authv1.UserInfo{Username: "alice"}}, "not_service_account"},
		{authv1.TokenReviewStatus{Error: "token audiences [\"vault\"] is invalid for the target audiences [\"fairway\"]"}, "audience"},
		{authv1.TokenReviewStatus{Error: "square/go-jose: error in cryptographic primitive"}, "invalid_token"},
	} {
		_, d := a.judge(&authv1.TokenReview{Status: tc.st})
		got := ""
		if d != nil {
			got = d.reason
		}
		if got != tc.reason {
			t.Errorf("judge(%+v) reason %q, want %q", tc.st, got, tc.reason)
		}
	}
}

func TestParseSPIFFE(t *testing.T) {
	a := &Authenticator{trustDomain: "cluster.local"}
	for _, tc := range []struct {
		uri    string
		want   Identity
		reason string
	}{
		{"spiffe://cluster.local/ns/shop/sa/web", Identity{"shop", "web", MethodMTLS}, ""},
		{"spiffe://other/ns/shop/sa/web", Identity{}, "trust_domain"},
		{"spiffe://cluster.local/ns/shop/sa/web/extra", Identity{}, "certificate"},
		{"spiffe://cluster.local/ns//sa/web", Identity{}, "certificate"},
		{"spiffe://cluster.local/sa/web/ns/shop", Identity{}, "certificate"},
		{"https://cluster.local/ns/shop/sa/web", Identity{}, "certificate"},
	} {
		id, d := a.parseSPIFFE(tc.uri)
		reason := ""
		if d != nil {
			reason = d.reason
		}
		if id != tc.want || reason != tc.reason {
			t.Errorf("parseSPIFFE(%q) = %+v, %q; want %+v, %q", tc.uri, id, reason, tc.want, tc.reason)
		}
	}
}
