package xdsserver

import (
	"maps"
	"slices"
	"testing"
	"time"

	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/fairway-lb/fairway/controlplane/topology"
)

func viewService(ns, name string, e topology.Export) *topology.Service {
	return &topology.Service{Key: topology.ServiceKey{Namespace: ns, Name: name, Port: 80}, Policy: topology.DefaultPolicy(), Export: e}
}

// viewClusters are the Cluster names in v's cache.
func viewClusters(v *view) []string {
	return slices.Sorted(maps.Keys(v.caches[resourcev3.ClusterType].GetResources()))
}

// pushServices runs a push of snap after prev through render and vs, as
// Server.push does.
func pushServices(t *testing.T, vs *views, prev, snap *topology.Snapshot) {
	t.Helper()
	ch := diff(prev, snap, nil)
	res, done, failed := render(ch, nil)
	if len(failed) > 0 {
		t.Fatalf("render failed: %v", failed)
	}
	vs.all.apply(res.update, res.remove)
	vs.push(ch, done)
}

func TestViews_LazyFilledUpdatedAndDroppedWhenIdle(t *testing.T) {
	clk := clocktesting.NewFakeClock(time.Unix(1000, 0))
	gauge := prometheus.NewGauge(prometheus.GaugeOpts{Name: "views"})
	vs := newViews(newView("", true), clk, gauge)
	web, pay := viewService("shop", "web", topology.ExportOwn()), viewService("finance", "pay", topology.ExportOwn())
	s1 := topology.NewSnapshot(1, time.Time{}, []*topology.Service{web, pay})
	pushServices(t, vs, nil, s1)

	shop := vs.acquire(true, "shop")
	if got := viewClusters(shop); !slices.Equal(got, []string{"web.shop:80"}) {
		t.Errorf("shop's new view holds %v, want web only", got)
	}
	if got := viewClusters(vs.all); len(got) != 2 {
		t.Errorf("the all view holds %v, want both", got)
	}
	if vs.acquire(true, "shop") != shop {
		t.Error("a second shop stream got another view")
	}

	// pay is exported to shop, then removed.
	pay2 := viewService("finance", "pay", topology.Export{Limited: true, Namespaces: []string{"shop"}})
	s2 := s1.With(2, time.Time{}, []*topology.Service{pay2}, nil)
	pushServices(t, vs, s1, s2)
	if got := viewClusters(shop); !slices.Equal(got, []string{"pay.finance:80", "web.shop:80"}) {
		t.Errorf("after pay is exported to shop, shop's view holds %v", got)
	}
	s3 := s2.With(3, time.Time{}, nil, []topology.ServiceKey{pay2.Key})
	pushServices(t, vs, s2, s3)
	if got := viewClusters(shop); !slices.Equal(got, []string{"web.shop:80"}) {
		t.Errorf("after pay is removed, shop's view holds %v", got)
	}
	if got := len(shop.caches[resourcev3.ListenerType].GetResources()); got != 2 {
		t.Errorf("shop's view holds %d Listeners, want web's 2", got)
	}

	// Both shop streams close; the view stays for viewIdle.
	vs.release(shop)
	vs.release(shop)
	clk.Step(viewIdle - time.Second)
	vs.acquire(true, "billing")
	if n := vs.count(); n != 2 {
		t.Errorf("%d namespace views before shop's idle time is over, want 2", n)
	}
	if vs.lookup(shop.stamp) != shop {
		t.Error("shop's idle view is no longer found by its stamp")
	}
	clk.Step(time.Second)
	pushServices(t, vs, s3, s3)
	if n := vs.count(); n != 1 || testutil.ToFloat64(gauge) != 1 {
		t.Errorf("%d namespace views after shop's idle time (gauge %v), want 1 (billing)", n, testutil.ToFloat64(gauge))
	}
	if vs.lookup(shop.stamp) != nil {
		t.Error("shop's dropped view is still found by its stamp")
	}
	if again := vs.acquire(true, "shop"); again == shop || !slices.Equal(viewClusters(again), []string{"web.shop:80"}) {
		t.Errorf("shop's view made again holds %v (same view: %v)", viewClusters(again), again == shop)
	}
}
