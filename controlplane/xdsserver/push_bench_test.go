package xdsserver

import (
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	discoverypb "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	streamv3 "github.com/envoyproxy/go-control-plane/pkg/server/stream/v3"

	"github.com/fairway-lb/fairway/controlplane/topology"
)

// benchWorld is 1,000 services in 20 namespaces with 10 endpoints each,
// half of them visible in their own namespace only, the others exported to
// every namespace.
func benchWorld() []*topology.Service {
	var out []*topology.Service
	for ns := range 20 {
		for i := range 50 {
			svc := &topology.Service{
				Key:    topology.ServiceKey{Namespace: fmt.Sprintf("ns-%d", ns), Name: fmt.Sprintf("svc-%d", i), Port: 8080},
				Policy: topology.DefaultPolicy(),
			}
			if i%2 == 0 {
				svc.Export = topology.Export{Limited: true}
			}
			for e := range 10 {
				svc.Endpoints = append(svc.Endpoints, topology.Endpoint{
					Address: fmt.Sprintf("10.%d.%d.%d", ns, i, e), Port: 9000, Zone: fmt.Sprintf("zone-%d", e%3),
					Ready: true, Serving: true, Weight: 1, Hostname: fmt.Sprintf("svc-%d-%d", i, e),
				})
			}
			out = append(out, svc)
		}
	}
	return out
}

// benchWatcher is a delta wildcard subscriber of one cache, as a stream
// keeps one: it re-arms its watch after each response with what it was
// sent (the server's work on the stream's goroutine, done inline here).
type benchWatcher struct {
	cache   *cachev3.LinearCache
	typeURL string
	sub     streamv3.Subscription
	out     chan cachev3.DeltaResponse
	cancel  func()
}

func newBenchWatcher(b *testing.B, c *cachev3.LinearCache, typeURL string) *benchWatcher {
	w := &benchWatcher{cache: c, typeURL: typeURL, sub: streamv3.NewDeltaSubscription(nil, nil, nil, true), out: make(chan cachev3.DeltaResponse, 1)}
	w.watch(b, typeURL)
	w.drain(b, typeURL)
	return w
}

func (w *benchWatcher) watch(b *testing.B, typeURL string) {
	cancel, err := w.cache.CreateDeltaWatch(&discoverypb.DeltaDiscoveryRequest{TypeUrl: typeURL}, w.sub, w.out)
	if err != nil {
		b.Fatal(err)
	}
	w.cancel = cancel
}

// drain takes a response, if one is due, and re-arms the watch.
func (w *benchWatcher) drain(b *testing.B, typeURL string) {
	select {
	case resp := <-w.out:
		if _, err := resp.GetDeltaDiscoveryResponse(); err != nil { // marshals, as sending does
			b.Fatal(err)
		}
		w.sub.SetReturnedResources(resp.GetNextVersionMap())
		if w.cancel != nil {
			w.cancel()
		}
		w.watch(b, typeURL)
	default:
	}
}

// BenchmarkServer_Push measures a push of one service's new endpoints:
// views=0 is the all view alone (authentication off), views=N adds N
// namespace views; subscribers=K puts K delta wildcard subscribers per type
// in every view (the work go-control-plane does for them on the push path
// and on their streams' goroutines, inline here). views=0/subscribers=11
// has as many subscribers as views=10/subscribers=1, all in the all view.
func BenchmarkServer_Push(b *testing.B) {
	for _, c := range benchPushCases {
		b.Run(fmt.Sprintf("views=%d/subscribers=%d", c.views, c.subscribers), func(b *testing.B) {
			benchPush(b, c.views, c.subscribers)
		})
	}
}

func benchPush(b *testing.B, views, subscribers int) {
	s := New(WithRegisterer(nil), WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	defer s.Close()
	svcs := benchWorld()
	snap := topology.NewSnapshot(1, time.Time{}, svcs)
	s.push(snap)
	var watchers []*benchWatcher
	for _, caches := range benchViews(s, views) {
		for _, t := range typeURLs {
			for range subscribers {
				watchers = append(watchers, newBenchWatcher(b, caches[t], t))
			}
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		old := svcs[(i*7)%len(svcs)]
		svc := *old
		svc.Endpoints = append([]topology.Endpoint(nil), old.Endpoints...)
		svc.Endpoints[0].Weight = uint32(i%5 + 2)
		snap = snap.With(uint64(i+2), time.Time{}, []*topology.Service{&svc}, nil)
		s.push(snap)
		for _, w := range watchers {
			w.drain(b, w.typeURL)
		}
	}
}
