package kube_test

import (
	"context"
	"flag"
	"fmt"
	"slices"
	"testing"
	"time"

	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"

	"github.com/fairway-lb/fairway/controlplane/kube"
	"github.com/fairway-lb/fairway/controlplane/topology"
)

var (
	benchServicesFlag  = flag.Int("kube.services", 200, "BenchmarkSource_Convergence: Services")
	benchEndpointsFlag = flag.Int("kube.endpoints", 10, "BenchmarkSource_Convergence: endpoints per Service (at most 254)")
)

// BenchmarkSource_Convergence measures the Kubernetes source alone against
// the real apiserver: the time from an EndpointSlice update returning to the
// snapshot carrying it reaching the sink, one single-endpoint change at a
// time, with -kube.services Services of -kube.endpoints endpoints each. The
// whole control plane (xDS included, many subscribers) is measured by
// bench/cpbench.
//
//	go test -run '^$' -bench BenchmarkSource_Convergence -benchtime 300x ./controlplane/kube/ \
//	    -args -kube.services=1000 -kube.endpoints=10
func BenchmarkSource_Convergence(b *testing.B) {
	benchServices, benchEndpoints := *benchServicesFlag, *benchEndpointsFlag
	env := sharedEnv(b)
	cfg := rest.CopyConfig(env.Config)
	cfg.QPS, cfg.Burst = 1000, 1000
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	ns := newNamespace(ctx, b, cs)
	sls := make([]*discoveryv1.EndpointSlice, benchServices)
	for i := range benchServices {
		name := fmt.Sprintf("svc-%d", i)
		if _, err := cs.CoreV1().Services(ns).Create(ctx, service(ns, name, nil), metav1.CreateOptions{}); err != nil {
			b.Fatal(err)
		}
		var eps []ep
		for j := range benchEndpoints {
			eps = append(eps, ready(fmt.Sprintf("198.51.100.%d", j+1), "zone-a"))
		}
		if sls[i], err = cs.DiscoveryV1().EndpointSlices(ns).Create(ctx, slice(ns, name, name+"-a", eps...), metav1.CreateOptions{}); err != nil {
			b.Fatal(err)
		}
	}
	sink := newRecordingSink()
	start := time.Now()
	runSource(b, kube.New(cs, kube.WithNamespaces(ns)), sink)
	sink.waitFor(ctx, b, "the first snapshot", func(s *topology.Snapshot) string {
		if s.Len() != benchServices {
			return fmt.Sprintf("%d services", s.Len())
		}
		return ""
	})
	b.Logf("%d services × %d endpoints: first snapshot %v after Run", benchServices, benchEndpoints, time.Since(start).Round(time.Millisecond))

	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := range b.N {
		svc := i % benchServices
		sl := sls[svc]
		e := (i / benchServices) % benchEndpoints
		readyNow := !*sl.Endpoints[e].Conditions.Ready
		sl.Endpoints[e].Conditions = discoveryv1.EndpointConditions{Ready: ptr.To(readyNow), Serving: ptr.To(readyNow), Terminating: ptr.To(false)}
		if sls[svc], err = cs.DiscoveryV1().EndpointSlices(ns).Update(ctx, sl, metav1.UpdateOptions{}); err != nil {
			b.Fatal(err)
		}
		written := time.Now()
		k := key(ns, fmt.Sprintf("svc-%d", svc))
		addr := sl.Endpoints[e].Addresses[0]
		sink.waitFor(ctx, b, "the change", func(s *topology.Snapshot) string {
			got, ok := s.Service(k)
			if !ok {
				return "service absent"
			}
			for _, x := range got.Endpoints {
				if x.Address == addr && x.Ready == readyNow {
					return ""
				}
			}
			return "not yet"
		})
		lat = append(lat, time.Since(written))
	}
	b.StopTimer()
	slices.Sort(lat)
	pct := func(p float64) float64 {
		return float64(lat[min(len(lat)-1, int(p*float64(len(lat))))].Microseconds()) / 1000
	}
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
	b.ReportMetric(float64(lat[len(lat)-1].Microseconds())/1000, "max-ms")
}
