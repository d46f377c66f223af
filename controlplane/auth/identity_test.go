package auth_test

import (
	"context"
	"testing"

	"github.com/fairway-lb/fairway/controlplane/auth"
)

func TestContext_RoundTrip(t *testing.T) {
	if _, ok := auth.FromContext(context.Background()); ok {
		t.Fatal("FromContext(Background) reported an identity")
	}
	want := auth.Identity{Namespace: "shop", ServiceAccount: "web", Method: "token"}
	got, ok := auth.FromContext(auth.NewContext(context.Background(), want))
	if !ok || got != want {
		t.Fatalf("FromContext = %+v, %v; want %+v, true", got, ok, want)
	}
}
