// Package auth authenticates xDS clients of the control plane: it maps a
// stream's credentials (a Kubernetes ServiceAccount token checked with the
// TokenReview API, or a client certificate whose URI SAN is a SPIFFE ID
// spiffe://TRUST_DOMAIN/ns/NS/sa/SA) to an Identity, which the xDS server
// reads from the stream's context to decide what the stream may see.
package auth

import "context"

// Identity is who an authenticated xDS stream belongs to.
type Identity struct {
	// Namespace is the client's Kubernetes namespace; visibility is decided
	// by it alone.
	Namespace string
	// ServiceAccount is the client's ServiceAccount name.
	ServiceAccount string
	// Method is how the identity was established: "token" or "mtls".
	Method string
}

type identityKey struct{}

// NewContext returns ctx carrying id.
func NewContext(ctx context.Context, id Identity) context.Context {
	return context.WithValue(ctx, identityKey{}, id)
}

// FromContext returns the identity in ctx, and whether there is one. A
// stream without one was accepted with authentication off (--auth none).
func FromContext(ctx context.Context) (Identity, bool) {
	id, ok := ctx.Value(identityKey{}).(Identity)
	return id, ok
}
