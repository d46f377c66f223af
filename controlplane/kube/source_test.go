package kube_test

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	"github.com/fairway-lb/fairway/controlplane/kube"
	"github.com/fairway-lb/fairway/controlplane/topology"
	"github.com/fairway-lb/fairway/internal/testkit"
)

func TestSource_FirstSnapshotHasTheWholeWorld(t *testing.T) {
	ctx, cs, ns := begin(t, 60*time.Second)
	for i := range 3 {
		name := fmt.Sprintf("svc-%d", i)
		if _, err := cs.CoreV1().Services(ns).Create(ctx, service(ns, name, nil), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, err := cs.DiscoveryV1().EndpointSlices(ns).Create(ctx,
			slice(ns, name, name+"-a", ready(fmt.Sprintf("198.51.100.%d", i+1), "zone-a")), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}

	src := kube.New(cs, kube.WithNamespaces(ns))
	if src.Synced() {
		t.Fatal("Synced() = true before Run")
	}
	sink := newRecordingSink()
	runSource(t, src, sink)
	sink.waitFor(ctx, t, "the first snapshot", func(s *topology.Snapshot) string { return "" })

	first := sink.snapshots()[0]
	if first.Len() != 3 {
		t.Fatalf("first snapshot has %d service ports %v, want all 3", first.Len(), first.Keys())
	}
	for i := range 3 {
		name := fmt.Sprintf("svc-%d", i)
		if msg := endpointsAre(key(ns, name), wants(ready(fmt.Sprintf("198.51.100.%d", i+1), "zone-a")))(first); msg != "" {
			t.Error(msg)
		}
	}
	if !src.Synced() {
		t.Error("Synced() = false after the first snapshot")
	}
}

func TestSource_FollowsEndpointSliceChanges(t *testing.T) {
	ctx, cs, ns := begin(t, 60*time.Second)
	sink := newRecordingSink()
	runSource(t, kube.New(cs, kube.WithNamespaces(ns)), sink)
	k := key(ns, "echo")

	if _, err := cs.CoreV1().Services(ns).Create(ctx, service(ns, "echo", nil), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	sink.waitFor(ctx, t, "a service with no endpoints", endpointsAre(k, []topology.Endpoint{}))

	a1, a2 := ready("198.51.100.1", "zone-a"), ready("198.51.100.2", "zone-b")
	sliceA, err := cs.DiscoveryV1().EndpointSlices(ns).Create(ctx, slice(ns, "echo", "echo-a", a1, a2), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	sink.waitFor(ctx, t, "slice a served", endpointsAre(k, wants(a1, a2)))

	// Not ready → served as not ready; terminating but serving → draining.
	a1 = ep{addr: a1.addr, zone: a1.zone}
	a2 = ep{addr: a2.addr, zone: a2.zone, serving: true, terminating: true}
	sliceA.Endpoints[0].Conditions = discoveryv1.EndpointConditions{Ready: ptr.To(false), Serving: ptr.To(false), Terminating: ptr.To(false)}
	sliceA.Endpoints[1].Conditions = discoveryv1.EndpointConditions{Ready: ptr.To(false), Serving: ptr.To(true), Terminating: ptr.To(true)}
	if _, err := cs.DiscoveryV1().EndpointSlices(ns).Update(ctx, sliceA, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	sink.waitFor(ctx, t, "conditions flipped", endpointsAre(k, wants(a1, a2)))

	// A second slice is merged with the first.
	b1 := ready("203.0.113.7", "zone-c")
	if _, err := cs.DiscoveryV1().EndpointSlices(ns).Create(ctx, slice(ns, "echo", "echo-b", b1), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	sink.waitFor(ctx, t, "slices merged", endpointsAre(k, wants(a1, a2, b1)))

	// Deleting a slice removes its endpoints and only those.
	if err := cs.DiscoveryV1().EndpointSlices(ns).Delete(ctx, "echo-a", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	sink.waitFor(ctx, t, "slice a gone", endpointsAre(k, wants(b1)))

	// Deleting the Service removes its ports although a slice lingers.
	if err := cs.CoreV1().Services(ns).Delete(ctx, "echo", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	sink.waitFor(ctx, t, "service gone", endpointsAre(k, nil))
}

func TestSource_ScopesByNamespaceAndSelector(t *testing.T) {
	env := sharedEnv(t)
	cs := newClient(t, env)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	nsA, nsB, nsC := newNamespace(ctx, t, cs), newNamespace(ctx, t, cs), newNamespace(ctx, t, cs)
	for i, ns := range []string{nsA, nsB, nsC} {
		for _, name := range []string{"picked", "other"} {
			svc := service(ns, name, nil)
			if name == "picked" {
				svc.Labels = map[string]string{"fairway.io/serve": "yes"}
			}
			if _, err := cs.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			if _, err := cs.DiscoveryV1().EndpointSlices(ns).Create(ctx,
				slice(ns, name, name+"-a", ready(fmt.Sprintf("198.51.100.%d", 10+i), "")), metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
		}
	}
	sel, err := kube.ParseSelector("fairway.io/serve=yes")
	if err != nil {
		t.Fatal(err)
	}
	sink := newRecordingSink()
	runSource(t, kube.New(cs, kube.WithNamespaces(nsA, nsB), kube.WithSelector(sel)), sink)

	s := sink.waitFor(ctx, t, "the first snapshot", func(*topology.Snapshot) string { return "" })
	got := s.Keys()
	wantKeys := []topology.ServiceKey{key(nsA, "picked"), key(nsB, "picked")}
	if len(got) != len(wantKeys) || got[0] != wantKeys[0] || got[1] != wantKeys[1] {
		t.Fatalf("snapshot keys = %v, want %v", got, wantKeys)
	}

	// Labelling a Service brings it in; removing the label takes it out.
	other, err := cs.CoreV1().Services(nsB).Get(ctx, "other", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	other.Labels = map[string]string{"fairway.io/serve": "yes"}
	if _, err := cs.CoreV1().Services(nsB).Update(ctx, other, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	sink.waitFor(ctx, t, "labelled service served", endpointsAre(key(nsB, "other"), wants(ready("198.51.100.11", ""))))
	if _, err := cs.CoreV1().Services(nsA).Patch(ctx, "picked", types.MergePatchType,
		[]byte(`{"metadata":{"labels":{"fairway.io/serve":null}}}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	sink.waitFor(ctx, t, "unlabelled service gone", endpointsAre(key(nsA, "picked"), nil))
	if _, ok := sink.latest().Service(key(nsC, "picked")); ok {
		t.Errorf("service of unwatched namespace %s served", nsC)
	}
}

func TestSource_ReportsProblemsAsEventsOnce(t *testing.T) {
	ctx, cs, ns := begin(t, 60*time.Second)
	reg := prometheus.NewPedanticRegistry()
	logs := &testkit.LogBuffer{}
	logger := slog.New(slog.NewTextHandler(logs, nil))
	sink := newRecordingSink()
	runSource(t, kube.New(cs, kube.WithNamespaces(ns), kube.WithRegisterer(reg), kube.WithLogger(logger)), sink)

	// An invalid annotation: reported, default used, service served.
	bad := service(ns, "bad", map[string]string{"fairway.io/lb-policy": "fastest-please"})
	if _, err := cs.CoreV1().Services(ns).Create(ctx, bad, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	e1 := ready("198.51.100.20", "zone-a")
	if _, err := cs.DiscoveryV1().EndpointSlices(ns).Create(ctx, slice(ns, "bad", "bad-a", e1), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	s := sink.waitFor(ctx, t, "service with an invalid annotation served", endpointsAre(key(ns, "bad"), wants(e1)))
	if svc, _ := s.Service(key(ns, "bad")); svc.Policy.LB != topology.DefaultPolicy().LB {
		t.Errorf("policy LB = %q, want the default %q", svc.Policy.LB, topology.DefaultPolicy().LB)
	}
	ev := waitEvent(ctx, t, cs, ns, "bad", "InvalidAnnotation")
	if ev.Source.Component != kube.Component || !strings.Contains(ev.Message, "fairway.io/lb-policy") {
		t.Errorf("event = source %q message %q; want source %q and a message naming the annotation", ev.Source.Component, ev.Message, kube.Component)
	}

	// A slice of another address type next to a good service: the good one
	// keeps flowing.
	fqdn := slice(ns, "bad", "bad-fqdn")
	fqdn.AddressType = discoveryv1.AddressTypeFQDN
	fqdn.Endpoints = []discoveryv1.Endpoint{{Addresses: []string{"backend.example.org"}}}
	if _, err := cs.DiscoveryV1().EndpointSlices(ns).Create(ctx, fqdn, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitEvent(ctx, t, cs, ns, "bad", "UnsupportedAddressType")
	e2 := ready("198.51.100.21", "zone-a")
	if _, err := cs.CoreV1().Services(ns).Create(ctx, service(ns, "good", nil), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.DiscoveryV1().EndpointSlices(ns).Create(ctx, slice(ns, "good", "good-a", e2), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	sink.waitFor(ctx, t, "good service served", endpointsAre(key(ns, "good"), wants(e2)))

	// Touching the Service (a resync looks the same) re-checks it without
	// reporting the persisting problem again.
	if _, err := cs.CoreV1().Services(ns).Patch(ctx, "bad", types.MergePatchType,
		[]byte(`{"metadata":{"labels":{"touched":"yes"}}}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	// A change queued after the touch, to know the touch was processed.
	e3 := ready("198.51.100.22", "zone-a")
	if _, err := cs.DiscoveryV1().EndpointSlices(ns).Create(ctx, slice(ns, "bad", "bad-b", e3), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	sink.waitFor(ctx, t, "touched service", endpointsAre(key(ns, "bad"), wants(e1, e3)))
	if got := testkit.MetricValue(t, reg, "fairway_source_problems_total", "source", "kubernetes", "reason", "InvalidAnnotation"); got != 1 {
		t.Errorf("fairway_source_problems_total{reason=InvalidAnnotation} = %v, want 1 (reported once)", got)
	}
	evs, err := cs.CoreV1().Events(ns).List(ctx, metav1.ListOptions{FieldSelector: "reason=InvalidAnnotation"})
	if err != nil {
		t.Fatal(err)
	}
	if len(evs.Items) != 1 || evs.Items[0].Count != 1 {
		t.Errorf("InvalidAnnotation events = %d (first count %d), want one with count 1", len(evs.Items), firstCount(evs.Items))
	}

	// The Service goes while its slices linger: ports removed, orphan
	// logged and counted (no Event: there is no Service to put it on).
	if err := cs.CoreV1().Services(ns).Delete(ctx, "bad", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	sink.waitFor(ctx, t, "deleted service gone", endpointsAre(key(ns, "bad"), nil))
	if got := testkit.MetricValue(t, reg, "fairway_source_problems_total", "source", "kubernetes", "reason", "OrphanEndpointSlice"); got != 3 {
		t.Errorf("fairway_source_problems_total{reason=OrphanEndpointSlice} = %v, want 3 (one per lingering slice)", got)
	}
	if !strings.Contains(logs.String(), "OrphanEndpointSlice") {
		t.Errorf("no OrphanEndpointSlice log line in:\n%s", logs.String())
	}
	for _, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		if !strings.Contains(line, " component=fairway/kube") {
			t.Errorf("log line without component=fairway/kube: %s", line)
		}
	}
	for _, name := range []string{"fairway_kube_queue_depth", "fairway_kube_sync_seconds"} {
		testkit.MetricValue(t, reg, name)
	}
	if got := testkit.MetricValue(t, reg, "fairway_kube_services"); got != 1 {
		t.Errorf("fairway_kube_services = %v, want 1", got)
	}
}

func TestSource_PodLabelsAndWeight(t *testing.T) {
	ctx, cs, ns := begin(t, 60*time.Second)
	// No controller manager creates the namespace's default ServiceAccount,
	// which Pod admission requires.
	if _, err := cs.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: ns, Name: "echo-0",
			Labels:      map[string]string{"shard": "3"},
			Annotations: map[string]string{"fairway.io/weight": "5"},
		},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "echo", Image: "echo:test"}}},
	}
	if _, err := cs.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CoreV1().Services(ns).Create(ctx, service(ns, "echo", nil), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	sl := slice(ns, "echo", "echo-a", ready("198.51.100.30", "zone-a"))
	sl.Endpoints[0].TargetRef = &corev1.ObjectReference{Kind: "Pod", Namespace: ns, Name: "echo-0"}
	if _, err := cs.DiscoveryV1().EndpointSlices(ns).Create(ctx, sl, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	sink := newRecordingSink()
	runSource(t, kube.New(cs, kube.WithNamespaces(ns), kube.WithPods(true)), sink)
	w := want(ready("198.51.100.30", "zone-a"))
	w.Hostname, w.Weight, w.Labels = "echo-0", 5, map[string]string{"shard": "3"}
	sink.waitFor(ctx, t, "pod labels and weight", endpointsAre(key(ns, "echo"), []topology.Endpoint{w}))

	// A change to the pod alone reaches the endpoint.
	if _, err := cs.CoreV1().Pods(ns).Patch(ctx, "echo-0", types.MergePatchType,
		[]byte(`{"metadata":{"labels":{"shard":"4"},"annotations":{"fairway.io/weight":"7"}}}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	w.Weight, w.Labels = 7, map[string]string{"shard": "4"}
	sink.waitFor(ctx, t, "pod change", endpointsAre(key(ns, "echo"), []topology.Endpoint{w}))
}

func firstCount(evs []corev1.Event) int32 {
	if len(evs) == 0 {
		return 0
	}
	return evs[0].Count
}

func TestSource_ReportsEachProblemAsAnEvent(t *testing.T) {
	ctx, cs, ns := begin(t, 60*time.Second)
	sink := newRecordingSink()
	runSource(t, kube.New(cs, kube.WithNamespaces(ns)), sink)

	good := ready("198.51.100.70", "zone-a")
	tests := []struct {
		name        string
		annotations map[string]string
		slices      func(svc string) []*discoveryv1.EndpointSlice
		reason      string
		want        []topology.Endpoint // still served
	}{{
		name:        "bad-policy",
		annotations: map[string]string{"fairway.io/outlier-failure-percentage": "150"},
		slices: func(svc string) []*discoveryv1.EndpointSlice {
			return []*discoveryv1.EndpointSlice{slice(ns, svc, svc+"-a", good)}
		},
		reason: "InvalidAnnotation",
		want:   wants(good),
	}, {
		name: "bad-weight",
		slices: func(svc string) []*discoveryv1.EndpointSlice {
			sl := slice(ns, svc, svc+"-a", good)
			sl.Annotations = map[string]string{"fairway.io/weight": "heavy"}
			return []*discoveryv1.EndpointSlice{sl}
		},
		reason: "InvalidAnnotation",
		want:   wants(good),
	}, {
		name: "unmatched-port",
		slices: func(svc string) []*discoveryv1.EndpointSlice {
			sl := slice(ns, svc, svc+"-b", ready("198.51.100.71", "zone-a"))
			sl.Ports[0].Name = ptr.To("metrics")
			return []*discoveryv1.EndpointSlice{slice(ns, svc, svc+"-a", good), sl}
		},
		reason: "UnmatchedPort",
		want:   wants(good),
	}, {
		name: "conflicting",
		slices: func(svc string) []*discoveryv1.EndpointSlice {
			return []*discoveryv1.EndpointSlice{
				slice(ns, svc, svc+"-a", good),
				slice(ns, svc, svc+"-b", ep{addr: good.addr, zone: good.zone}),
			}
		},
		reason: "ConflictingEndpoint",
		want:   wants(good), // ready wins
	}, {
		// The API server does not check EndpointSlice port numbers.
		name: "bad-endpoint-port",
		slices: func(svc string) []*discoveryv1.EndpointSlice {
			sl := slice(ns, svc, svc+"-b", ready("198.51.100.72", "zone-a"))
			sl.Ports[0].Port = ptr.To[int32](70000)
			return []*discoveryv1.EndpointSlice{slice(ns, svc, svc+"-a", good), sl}
		},
		reason: "InvalidPort",
		want:   wants(good),
	}}
	for _, tc := range tests {
		if _, err := cs.CoreV1().Services(ns).Create(ctx, service(ns, tc.name, tc.annotations), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		for _, sl := range tc.slices(tc.name) {
			if _, err := cs.DiscoveryV1().EndpointSlices(ns).Create(ctx, sl, metav1.CreateOptions{}); err != nil {
				t.Fatalf("%s: %v", tc.name, err)
			}
		}
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sink.waitFor(ctx, t, "served despite the problem", endpointsAre(key(ns, tc.name), tc.want))
			waitEvent(ctx, t, cs, ns, tc.name, tc.reason)
		})
	}
}
