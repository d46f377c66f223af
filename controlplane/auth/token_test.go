package auth_test

import (
	"context"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	discoverypb "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	authv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	testingclock "k8s.io/utils/clock/testing"

	"github.com/fairway-lb/fairway/controlplane/auth"
	"github.com/fairway-lb/fairway/controlplane/topology"
	"github.com/fairway-lb/fairway/controlplane/xdsserver"
	"github.com/fairway-lb/fairway/internal/testenv"
	"github.com/fairway-lb/fairway/internal/testkit"
)

// cluster is a real kube-apiserver with ServiceAccounts shop/web and
// finance/ledger.
type cluster struct {
	cs  kubernetes.Interface
	cfg *rest.Config // admin
}

func startCluster(t testing.TB) *cluster {
	t.Helper()
	env := testenv.Start(t)
	cs, err := kubernetes.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, ns := range []struct{ ns, sa string }{{"shop", "web"}, {"finance", "ledger"}} {
		if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns.ns}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, err := cs.CoreV1().ServiceAccounts(ns.ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: ns.sa}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	return &cluster{cs: cs, cfg: env.Config}
}

// token returns a TokenRequest token of ns/sa for audience, valid 10 min
// (the API's minimum), and its expiry.
func (c *cluster) token(t testing.TB, ns, sa, audience string) (string, time.Time) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	secs := int64(600)
	tr, err := c.cs.CoreV1().ServiceAccounts(ns).CreateToken(ctx, sa, &authv1.TokenRequest{
		Spec: authv1.TokenRequestSpec{Audiences: []string{audience}, ExpirationSeconds: &secs},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return tr.Status.Token, tr.Status.ExpirationTimestamp.Time
}

// xds is an xDS server behind an authenticator, recording the identity each
// stream's handler sees.
type xds struct {
	addr string
	seen chan authSeen
	reg  *prometheus.Registry
}

type authSeen struct {
	id Identity
	ok bool
}

type Identity = auth.Identity

func startXDS(t *testing.T, a *auth.Authenticator, opts ...grpc.ServerOption) *xds {
	t.Helper()
	x := &xds{seen: make(chan authSeen, 1000)}
	record := func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		id, ok := auth.FromContext(ss.Context())
		x.seen <- authSeen{id, ok}
		return h(srv, ss)
	}
	opts = append(opts, grpc.ChainStreamInterceptor(a.StreamInterceptor(), record))
	svc := &topology.Service{Key: topology.ServiceKey{Namespace: "shop", Name: "web", Port: 8080}, Policy: topology.DefaultPolicy()}
	_, x.addr = serveXDS(t, topology.NewSnapshot(1, time.Now(), []*topology.Service{svc}), xdsserver.WithGRPCServerOptions(opts...))
	return x
}

// serveXDS serves an xdsserver with opts (and a registry of its own) on
// 127.0.0.1 until it is closed or the test ends, once given snap.
func serveXDS(t testing.TB, snap *topology.Snapshot, opts ...xdsserver.Option) (*xdsserver.Server, string) {
	t.Helper()
	s := xdsserver.New(append([]xdsserver.Option{xdsserver.WithRegisterer(prometheus.NewRegistry())}, opts...)...)
	s.Update(snap)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = s.Serve(lis) }()
	t.Cleanup(s.Close)
	return s, lis.Addr().String()
}

// ads opens an ADS stream with token (none if empty), subscribes to every
// Cluster and returns the stream with the first response's error.
func ads(ctx context.Context, t *testing.T, addr, token string, creds credentials.TransportCredentials) (discoverygrpc.AggregatedDiscoveryService_StreamAggregatedResourcesClient, error) {
	t.Helper()
	if creds == nil {
		creds = insecure.NewCredentials()
	}
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	if token != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
	}
	st, err := discoverygrpc.NewAggregatedDiscoveryServiceClient(cc).StreamAggregatedResources(ctx)
	if err != nil {
		return nil, err
	}
	// A refused stream may end before the request is sent (io.EOF): its
	// status comes with Recv.
	_ = st.Send(&discoverypb.DiscoveryRequest{TypeUrl: resourcev3.ClusterType})
	_, err = st.Recv()
	return st, err
}

// deltaADS opens a delta ADS stream with token, subscribes to every Cluster
// and waits for the first response.
func deltaADS(ctx context.Context, t *testing.T, addr, token string) discoverygrpc.AggregatedDiscoveryService_DeltaAggregatedResourcesClient {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
	st, err := discoverygrpc.NewAggregatedDiscoveryServiceClient(cc).DeltaAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&discoverypb.DeltaDiscoveryRequest{TypeUrl: resourcev3.ClusterType}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Recv(); err != nil {
		t.Fatalf("delta stream: %v", err)
	}
	return st
}

// ended waits for the stream to end and returns its error.
func ended(t *testing.T, st discoverygrpc.AggregatedDiscoveryService_StreamAggregatedResourcesClient) error {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		for {
			if _, err := st.Recv(); err != nil {
				errc <- err
				return
			}
		}
	}()
	return testkit.Recv(t, errc, "the stream's end")
}

func wantCode(t *testing.T, err error, code codes.Code, msgPart string) {
	t.Helper()
	if status.Code(err) != code || !strings.Contains(status.Convert(err).Message(), msgPart) {
		t.Fatalf("error = %v; want %v containing %q", err, code, msgPart)
	}
}

func TestToken_RealAPIServer(t *testing.T) {
	c := startCluster(t)
	clk := testingclock.NewFakeClock(time.Now())
	reg := prometheus.NewRegistry()
	a, err := auth.New(auth.Mode{Token: true}, auth.WithTokenReviewer(c.cs.AuthenticationV1().TokenReviews()),
		auth.WithClock(clk), auth.WithRegisterer(reg))
	if err != nil {
		t.Fatal(err)
	}
	x := startXDS(t, a)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	reviews := func(result string) float64 {
		return testkit.MetricValue(t, reg, "fairway_xds_auth_token_reviews_total", "result", result)
	}

	t.Run("NoCredentials", func(t *testing.T) {
		_, err := ads(ctx, t, x.addr, "", nil)
		wantCode(t, err, codes.Unauthenticated, "no credentials")
		_, err = ads(ctx, t, x.addr, "not-a-jwt", nil)
		wantCode(t, err, codes.Unauthenticated, "not a JWT")
	})
	t.Run("WrongAudience", func(t *testing.T) {
		tok, _ := c.token(t, "shop", "web", "vault")
		_, err := ads(ctx, t, x.addr, tok, nil)
		wantCode(t, err, codes.Unauthenticated, "audience fairway")
		if got := testkit.MetricValue(t, reg, "fairway_xds_auth_denials_total", "reason", "audience"); got != 1 {
			t.Errorf("audience denials = %v, want 1", got)
		}
	})
	t.Run("ShopIdentityOneReviewForManyStreams", func(t *testing.T) {
		tok, _ := c.token(t, "shop", "web", auth.DefaultAudience)
		before := reviews("authenticated")
		const n = 50
		var wg sync.WaitGroup
		errs := make(chan error, n)
		for range n {
			wg.Go(func() {
				_, err := ads(ctx, t, x.addr, tok, nil)
				errs <- err
			})
		}
		wg.Wait()
		for range n {
			if err := <-errs; err != nil {
				t.Fatal(err)
			}
			seen := testkit.Recv(t, x.seen, "the handler's identity")
			want := Identity{Namespace: "shop", ServiceAccount: "web", Method: auth.MethodToken}
			if !seen.ok || seen.id != want {
				t.Fatalf("handler saw %+v (%v), want %+v", seen.id, seen.ok, want)
			}
		}
		if got := reviews("authenticated") - before; got != 1 {
			t.Errorf("TokenReviews for %d streams with one token = %v, want 1", n, got)
		}
	})
	t.Run("DeletedServiceAccountEndsStream", func(t *testing.T) {
		if _, err := c.cs.CoreV1().ServiceAccounts("shop").Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "gone"}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		tok, _ := c.token(t, "shop", "gone", auth.DefaultAudience)
		st, err := ads(ctx, t, x.addr, tok, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.cs.CoreV1().ServiceAccounts("shop").Delete(ctx, "gone", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		// The apiserver itself caches a token's verdict for a few seconds.
		testkit.Eventually(ctx, t, "the apiserver rejecting the deleted ServiceAccount's token", func() bool {
			tr, err := c.cs.AuthenticationV1().TokenReviews().Create(ctx, &authv1.TokenReview{
				Spec: authv1.TokenReviewSpec{Token: tok, Audiences: []string{auth.DefaultAudience}}}, metav1.CreateOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if !tr.Status.Authenticated {
				return true
			}
			time.Sleep(200 * time.Millisecond)
			return false
		})
		clk.Step(auth.DefaultMaxCacheTTL + time.Second)
		wantCode(t, ended(t, st), codes.Unauthenticated, "no longer accepted")
		if got := testkit.MetricValue(t, reg, "fairway_xds_auth_denials_total", "reason", "revoked"); got != 1 {
			t.Errorf("revoked denials = %v, want 1", got)
		}
	})
	t.Run("ExpiredTokenEndsStream", func(t *testing.T) {
		tok, exp := c.token(t, "finance", "ledger", auth.DefaultAudience)
		st, err := ads(ctx, t, x.addr, tok, nil)
		if err != nil {
			t.Fatal(err)
		}
		delta := deltaADS(ctx, t, x.addr, tok)
		before := reviews("authenticated")
		// At the cache lifetime the token is reviewed again and still valid.
		clk.Step(auth.DefaultMaxCacheTTL + time.Second)
		testkit.Eventually(ctx, t, "a second review", func() bool { return reviews("authenticated") == before+1 })
		testkit.Eventually(ctx, t, "the next checks of both streams armed", func() bool { return clk.Waiters() == 2 })
		clk.SetTime(exp.Add(time.Second))
		wantCode(t, ended(t, st), codes.Unauthenticated, "the token expired")
		errc := make(chan error, 1)
		go func() {
			for {
				if _, err := delta.Recv(); err != nil {
					errc <- err
					return
				}
			}
		}()
		wantCode(t, testkit.Recv(t, errc, "the delta stream's end"), codes.Unauthenticated, "the token expired")
		_, err = ads(ctx, t, x.addr, tok, nil)
		wantCode(t, err, codes.Unauthenticated, "expired")
	})
}
