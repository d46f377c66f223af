package auth

import (
	"context"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
)

// fromCertificate reports whether the stream's connection carries a client
// certificate that the TLS handshake verified, and returns its identity or
// the reason it names none.
func (a *Authenticator) fromCertificate(ctx context.Context) (Identity, *denial, bool) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return Identity{}, nil, false
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.VerifiedChains) == 0 || len(info.State.VerifiedChains[0]) == 0 {
		return Identity{}, nil, false
	}
	leaf := info.State.VerifiedChains[0][0]
	if len(leaf.URIs) != 1 {
		return Identity{}, &denial{"certificate", "the client certificate must have exactly one URI SAN, a SPIFFE ID"}, true
	}
	id, d := a.parseSPIFFE(leaf.URIs[0].String())
	return id, d, true
}

// parseSPIFFE maps spiffe://TRUST_DOMAIN/ns/NS/sa/SA to an identity.
func (a *Authenticator) parseSPIFFE(uri string) (Identity, *denial) {
	sid, err := spiffeid.FromString(uri)
	if err != nil {
		return Identity{}, &denial{"certificate", "the client certificate's URI SAN is not a SPIFFE ID"}
	}
	if a.trustDomain != "" && sid.TrustDomain().Name() != a.trustDomain {
		return Identity{}, &denial{"trust_domain", "the client certificate's SPIFFE ID is not in trust domain " + a.trustDomain}
	}
	// spiffeid validated the path: no empty, "." or ".." segments.
	segs := strings.Split(strings.TrimPrefix(sid.Path(), "/"), "/")
	if len(segs) != 4 || segs[0] != "ns" || segs[2] != "sa" {
		return Identity{}, &denial{"certificate", "the client certificate's SPIFFE ID is not spiffe://TRUST_DOMAIN/ns/NS/sa/SA"}
	}
	return Identity{Namespace: segs[1], ServiceAccount: segs[3], Method: MethodMTLS}, nil
}
