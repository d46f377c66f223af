package kube_test

import (
	"context"
	"fmt"
	"net"
	"net/http/httptest"
	"sort"
	"sync"
	"testing"
	"time"

	corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointpb "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discoverypb "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"k8s.io/client-go/kubernetes"

	"github.com/fairway-lb/fairway/controlplane/kube"
	"github.com/fairway-lb/fairway/controlplane/xdsserver"
)

// controlPlane runs a kube.Source feeding an xdsserver.Server that serves ADS
// on a loopback port; everything stops when the test ends.
func controlPlane(t *testing.T, cs kubernetes.Interface, opts ...kube.Option) (addr string, src *kube.Source) {
	t.Helper()
	cp := startControlPlane(t, cs, opts...)
	return cp.addr, cp.src
}

// runningControlPlane is what startControlPlane started.
type runningControlPlane struct {
	addr     string // ADS on loopback
	adminURL string // the xDS server's admin handler (/healthz, /readyz, /metrics)
	src      *kube.Source
}

// startControlPlane is controlPlane that also serves the xDS server's admin
// handler on loopback.
func startControlPlane(t *testing.T, cs kubernetes.Interface, opts ...kube.Option) runningControlPlane {
	t.Helper()
	srv := xdsserver.New()
	admin := httptest.NewServer(srv.AdminHandler())
	t.Cleanup(admin.Close)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-served; err != nil {
			t.Errorf("xdsserver Serve: %v", err)
		}
	})
	src := kube.New(cs, opts...)
	runSource(t, src, srv) // cleanups run LIFO: the source stops first
	return runningControlPlane{addr: lis.Addr().String(), adminURL: admin.URL, src: src}
}

// adsWatch is a raw ADS stream subscribed to ClusterLoadAssignments by name;
// it ACKs every response and keeps the latest assignment of each name.
type adsWatch struct {
	mu      sync.Mutex
	cla     map[string]*endpointpb.ClusterLoadAssignment // guarded by mu
	history []servedAssignment                           // every assignment received, in order; guarded by mu
	err     error                                        // guarded by mu
	notify  chan struct{}
}

// servedAssignment is one ClusterLoadAssignment as received.
type servedAssignment struct {
	at     time.Time
	name   string
	health map[string]string // healthByAddress
}

func watchEDS(ctx context.Context, t *testing.T, addr string, names ...string) *adsWatch {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(ctx)
	stream, err := discoverypb.NewAggregatedDiscoveryServiceClient(cc).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	w := &adsWatch{cla: make(map[string]*endpointpb.ClusterLoadAssignment), notify: make(chan struct{}, 1)}
	node := &corepb.Node{Id: "kube-test", Locality: &corepb.Locality{Zone: "zone-a"}}
	if err := stream.Send(&discoverypb.DiscoveryRequest{Node: node, TypeUrl: resourcev3.EndpointType, ResourceNames: names}); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			resp, err := stream.Recv()
			if err != nil {
				w.mu.Lock()
				w.err = err
				w.mu.Unlock()
				w.signal()
				return
			}
			w.mu.Lock()
			for _, r := range resp.GetResources() {
				cla := &endpointpb.ClusterLoadAssignment{}
				if err := r.UnmarshalTo(cla); err != nil {
					w.err = err
					continue
				}
				w.cla[cla.GetClusterName()] = cla
				w.history = append(w.history, servedAssignment{at: time.Now(), name: cla.GetClusterName(), health: healthByAddress(cla)})
			}
			w.mu.Unlock()
			w.signal()
			if err := stream.Send(&discoverypb.DiscoveryRequest{
				Node: node, TypeUrl: resourcev3.EndpointType, ResourceNames: names,
				VersionInfo: resp.GetVersionInfo(), ResponseNonce: resp.GetNonce(),
			}); err != nil {
				return
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		cc.Close()
	})
	return w
}

func (w *adsWatch) signal() {
	select {
	case w.notify <- struct{}{}:
	default:
	}
}

// healthByAddress summarizes an assignment as "ADDRESS:PORT" → health status.
func healthByAddress(cla *endpointpb.ClusterLoadAssignment) map[string]string {
	m := make(map[string]string)
	for _, loc := range cla.GetEndpoints() {
		for _, lbe := range loc.GetLbEndpoints() {
			sa := lbe.GetEndpoint().GetAddress().GetSocketAddress()
			m[fmt.Sprintf("%s:%d", sa.GetAddress(), sa.GetPortValue())] = lbe.GetHealthStatus().String()
		}
	}
	return m
}

// waitEndpoints waits until the assignment name serves exactly want
// ("ADDRESS:PORT" → health status).
func (w *adsWatch) waitEndpoints(ctx context.Context, t *testing.T, name string, want map[string]string) {
	t.Helper()
	last := "no assignment yet"
	for {
		w.mu.Lock()
		cla, err := w.cla[name], w.err
		w.mu.Unlock()
		if err != nil {
			t.Fatalf("ADS stream: %v", err)
		}
		if cla != nil {
			got := healthByAddress(cla)
			if last = cmp.Diff(got, want); last == "" {
				return
			}
		}
		select {
		case <-w.notify:
		case <-ctx.Done():
			t.Fatalf("waiting for %s to serve %v: %v; last diff (-got +want):\n%s", name, keys(want), ctx.Err(), last)
		}
	}
}

// current returns the latest assignment summary of name.
func (w *adsWatch) current(name string) map[string]string {
	w.mu.Lock()
	defer w.mu.Unlock()
	if cla := w.cla[name]; cla != nil {
		return healthByAddress(cla)
	}
	return nil
}

// receivedSince returns, in order, the summaries of name received at or
// after since.
func (w *adsWatch) receivedSince(name string, since time.Time) []map[string]string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []map[string]string
	for _, a := range w.history {
		if a.name == name && !a.at.Before(since) {
			out = append(out, a.health)
		}
	}
	return out
}

func keys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

const (
	healthy   = "HEALTHY"
	unhealthy = "UNHEALTHY"
	draining  = "DRAINING"
)

func addrPort(addr string) string { return fmt.Sprintf("%s:%d", addr, targetPort) }

// recoveryTimeout bounds how long after an apiserver restart a change may
// take to reach a subscriber: client-go's reflectors retry with jittered
// exponential backoff (0.8 s doubling, up to 30 s), so a few seconds of
// outage can cost several seconds, rarely tens, of reconnect delay.
const recoveryTimeout = 45 * time.Second
