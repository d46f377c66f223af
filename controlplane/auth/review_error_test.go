package auth_test

import (
	"context"
	"encoding/base64"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	authv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/fairway-lb/fairway/controlplane/auth"
	"github.com/fairway-lb/fairway/internal/testkit"
)

// downReviewer fails every review while down is set, and accepts the token
// as shop/web otherwise.
type downReviewer struct{ down atomic.Bool }

func (r *downReviewer) Create(context.Context, *authv1.TokenReview, metav1.CreateOptions) (*authv1.TokenReview, error) {
	if r.down.Load() {
		return nil, errors.New("connection refused")
	}
	return &authv1.TokenReview{Status: authv1.TokenReviewStatus{Authenticated: true, Audiences: []string{auth.DefaultAudience},
		User: authv1.UserInfo{Username: "system:serviceaccount:shop:web"}}}, nil
}

func TestToken_APIDownIsUnavailableNotCached(t *testing.T) {
	r := &downReviewer{}
	r.down.Store(true)
	a, err := auth.New(auth.Mode{Token: true}, auth.WithTokenReviewer(r))
	if err != nil {
		t.Fatal(err)
	}
	x := startXDS(t, a)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	enc := base64.RawURLEncoding.EncodeToString
	tok := enc([]byte(`{"alg":"RS256"}`)) + "." + enc([]byte(`{"sub":"x"}`)) + ".c2ln"

	_, err = ads(ctx, t, x.addr, tok, nil)
	wantCode(t, err, codes.Unavailable, "could not be reviewed")
	r.down.Store(false)
	if _, err := ads(ctx, t, x.addr, tok, nil); err != nil {
		t.Fatalf("once the API answers: %v", err)
	}
	if seen := testkit.Recv(t, x.seen, "the handler's identity"); seen.id.Namespace != "shop" {
		t.Errorf("handler saw %+v, want namespace shop", seen.id)
	}
}
