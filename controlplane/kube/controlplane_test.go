package kube_test

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/utils/ptr"

	"github.com/fairway-lb/fairway/controlplane/kube"
	"github.com/fairway-lb/fairway/controlplane/topology"
	"github.com/fairway-lb/fairway/internal/testenv"
)

func TestControlPlane_ServesEndpointSlicesOverADS(t *testing.T) {
	ctx, cs, ns := begin(t, 90*time.Second)
	addr, _ := controlPlane(t, cs, kube.WithNamespaces(ns))
	name := key(ns, "echo").ResourceName()
	ads := watchEDS(ctx, t, addr, name)

	if _, err := cs.CoreV1().Services(ns).Create(ctx, service(ns, "echo", nil), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	sliceA, err := cs.DiscoveryV1().EndpointSlices(ns).Create(ctx,
		slice(ns, "echo", "echo-a", ready("198.51.100.1", "zone-a"), ready("198.51.100.2", "zone-b")), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ads.waitEndpoints(ctx, t, name, map[string]string{
		addrPort("198.51.100.1"): healthy, addrPort("198.51.100.2"): healthy,
	})

	// ready → false: UNHEALTHY; terminating but serving: DRAINING.
	sliceA.Endpoints[0].Conditions = discoveryv1.EndpointConditions{Ready: ptr.To(false), Serving: ptr.To(false), Terminating: ptr.To(false)}
	sliceA.Endpoints[1].Conditions = discoveryv1.EndpointConditions{Ready: ptr.To(false), Serving: ptr.To(true), Terminating: ptr.To(true)}
	if _, err := cs.DiscoveryV1().EndpointSlices(ns).Update(ctx, sliceA, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	ads.waitEndpoints(ctx, t, name, map[string]string{
		addrPort("198.51.100.1"): unhealthy, addrPort("198.51.100.2"): draining,
	})

	// A second slice is merged.
	if _, err := cs.DiscoveryV1().EndpointSlices(ns).Create(ctx,
		slice(ns, "echo", "echo-b", ready("203.0.113.5", "zone-a")), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	ads.waitEndpoints(ctx, t, name, map[string]string{
		addrPort("198.51.100.1"): unhealthy, addrPort("198.51.100.2"): draining, addrPort("203.0.113.5"): healthy,
	})

	// Deleting a slice takes its endpoints away.
	if err := cs.DiscoveryV1().EndpointSlices(ns).Delete(ctx, "echo-a", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	ads.waitEndpoints(ctx, t, name, map[string]string{addrPort("203.0.113.5"): healthy})
}

func TestControlPlane_RecoversFromAPIServerRestart(t *testing.T) {
	// Its own environment: this test stops the apiserver. With open watches
	// kube-apiserver drains for up to --request-timeout (default 60s) after
	// SIGTERM; a short one keeps the restart quick.
	env := testenv.Start(t, testenv.WithAPIServerArgs("--request-timeout=3s"))
	cs := newClient(t, env)
	ctx, cancel := context.WithTimeout(context.Background(), 180*time.Second)
	defer cancel()
	ns := newNamespace(ctx, t, cs)
	if _, err := cs.CoreV1().Services(ns).Create(ctx, service(ns, "echo", nil), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, sl := range []*discoveryv1.EndpointSlice{
		slice(ns, "echo", "echo-a", ready("198.51.100.1", "zone-a")),
		slice(ns, "echo", "echo-b", ready("198.51.100.2", "zone-b"), ready("198.51.100.3", "zone-b")),
	} {
		if _, err := cs.DiscoveryV1().EndpointSlices(ns).Create(ctx, sl, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	// A second apiserver on the same etcd, which the control plane does not
	// talk to: the world changes through it while the control plane's own
	// apiserver is away.
	otherCfg, _ := env.StartSecondAPIServer(t)
	other, err := kubernetes.NewForConfig(otherCfg)
	if err != nil {
		t.Fatal(err)
	}

	cp := startControlPlane(t, cs)
	name := key(ns, "echo").ResourceName()
	ads := watchEDS(ctx, t, cp.addr, name)
	before := map[string]string{
		addrPort("198.51.100.1"): healthy, addrPort("198.51.100.2"): healthy, addrPort("198.51.100.3"): healthy,
	}
	ads.waitEndpoints(ctx, t, name, before)

	if err := env.StopAPIServer(); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()

	// Meanwhile, through the other apiserver: a slice goes, an endpoint of
	// another turns not ready, a new slice comes.
	if err := other.DiscoveryV1().EndpointSlices(ns).Delete(ctx, "echo-a", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	sliceB, err := other.DiscoveryV1().EndpointSlices(ns).Get(ctx, "echo-b", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range sliceB.Endpoints {
		if sliceB.Endpoints[i].Addresses[0] == "198.51.100.2" {
			sliceB.Endpoints[i].Conditions = discoveryv1.EndpointConditions{Ready: ptr.To(false), Serving: ptr.To(false), Terminating: ptr.To(false)}
		}
	}
	if _, err := other.DiscoveryV1().EndpointSlices(ns).Update(ctx, sliceB, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := other.DiscoveryV1().EndpointSlices(ns).Create(ctx,
		slice(ns, "echo", "echo-c", ready("203.0.113.9", "zone-a")), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	after := map[string]string{
		addrPort("198.51.100.2"): unhealthy, addrPort("198.51.100.3"): healthy, addrPort("203.0.113.9"): healthy,
	}

	// While its apiserver is away the control plane stays ready and keeps
	// serving the last known endpoints, to old and new subscribers alike.
	outage, outageCancel := context.WithTimeout(ctx, 3*time.Second)
	tick := time.NewTicker(500 * time.Millisecond)
	readyzOK := 0
	for outage.Err() == nil {
		msg := readyz(outage, cp.adminURL)
		switch {
		case msg == "":
			readyzOK++
		case outage.Err() == nil: // not just the window closing mid-request
			t.Errorf("during the outage /readyz: %s", msg)
		}
		select {
		case <-outage.Done():
		case <-tick.C:
		}
	}
	tick.Stop()
	outageCancel()
	if readyzOK < 3 {
		t.Errorf("/readyz answered 200 %d times during the outage, want at least 3", readyzOK)
	}
	late := watchEDS(ctx, t, cp.addr, name)
	lctx, lcancel := context.WithTimeout(ctx, 10*time.Second)
	late.waitEndpoints(lctx, t, name, before)
	lcancel()
	if d := cmp.Diff(ads.current(name), before); d != "" {
		t.Errorf("during the outage %s serves (-got +want):\n%s", name, d)
	}
	for i, got := range ads.receivedSince(name, stopped) {
		if d := cmp.Diff(got, before); d != "" {
			t.Errorf("during the outage, assignment %d of %s changed (-got +want):\n%s", i, name, d)
		}
	}
	if !cp.src.Synced() {
		t.Error("Synced() = false during the outage")
	}

	if err := env.StartAPIServer(); err != nil {
		t.Fatal(err)
	}
	restarted := time.Now()
	t.Logf("apiserver down for %v", restarted.Sub(stopped).Round(time.Millisecond))

	// What changed while it was away is served exactly: the deleted slice's
	// endpoint gone, the flipped one UNHEALTHY, the new slice's present.
	wctx, wcancel := context.WithTimeout(ctx, recoveryTimeout)
	defer wcancel()
	ads.waitEndpoints(wctx, t, name, after)
	recovered := time.Now()
	t.Logf("changes made during the outage served %v after the apiserver was ready again", recovered.Sub(restarted).Round(time.Millisecond))
	late.waitEndpoints(wctx, t, name, after)

	// The watches are live again: a change made through the restarted
	// apiserver arrives too, and nothing stale comes back on the way.
	if err := cs.DiscoveryV1().EndpointSlices(ns).Delete(ctx, "echo-c", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	final := map[string]string{addrPort("198.51.100.2"): unhealthy, addrPort("198.51.100.3"): healthy}
	ads.waitEndpoints(wctx, t, name, final)
	t.Logf("change after the restart served %v after the apiserver was ready", time.Since(restarted).Round(time.Millisecond))
	for i, got := range ads.receivedSince(name, recovered) {
		if cmp.Diff(got, after) != "" && cmp.Diff(got, final) != "" {
			t.Errorf("after recovery, assignment %d of %s = %v, want %v then %v", i, name, got, keys(after), keys(final))
		}
	}
}

// readyz returns "" if url/readyz answers 200, else what it answered.
func readyz(ctx context.Context, url string) string {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url+"/readyz", nil)
	if err != nil {
		return err.Error()
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return resp.Status
	}
	return ""
}

// deployRBAC applies the ServiceAccount and its RBAC from deploy/ as they
// are (the manifests kustomize builds from).
func deployRBAC(ctx context.Context, t *testing.T, cs kubernetes.Interface) {
	t.Helper()
	for _, f := range []string{"namespace.yaml", "serviceaccount.yaml", "clusterrole.yaml", "clusterrolebinding.yaml"} {
		data, err := os.ReadFile(filepath.Join("..", "..", "deploy", f))
		if err != nil {
			t.Fatal(err)
		}
		obj, _, err := scheme.Codecs.UniversalDeserializer().Decode(data, nil, nil)
		if err != nil {
			t.Fatalf("decode deploy/%s: %v", f, err)
		}
		switch o := obj.(type) {
		case *corev1.Namespace:
			_, err = cs.CoreV1().Namespaces().Create(ctx, o, metav1.CreateOptions{})
		case *corev1.ServiceAccount:
			_, err = cs.CoreV1().ServiceAccounts(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
		case *rbacv1.ClusterRole:
			_, err = cs.RbacV1().ClusterRoles().Create(ctx, o, metav1.CreateOptions{})
		case *rbacv1.ClusterRoleBinding:
			_, err = cs.RbacV1().ClusterRoleBindings().Create(ctx, o, metav1.CreateOptions{})
		default:
			t.Fatalf("deploy/%s: unexpected %T", f, obj)
		}
		if err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatalf("apply deploy/%s: %v", f, err)
		}
	}
}

func TestControlPlane_RunsWithTheDeployServiceAccount(t *testing.T) {
	env := sharedEnv(t)
	admin := newClient(t, env)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	deployRBAC(ctx, t, admin)
	ns := newNamespace(ctx, t, admin)
	sa, err := kube.NewClientForConfig(env.ImpersonatedConfig("system:serviceaccount:fairway-system:fairway-controlplane"))
	if err != nil {
		t.Fatal(err)
	}

	// Exactly those permissions: it may not write Services nor read Secrets.
	if _, err := sa.CoreV1().Services(ns).Create(ctx, service(ns, "nope", nil), metav1.CreateOptions{}); !apierrors.IsForbidden(err) {
		t.Fatalf("the ServiceAccount creating a Service: got %v, want Forbidden", err)
	}
	if _, err := sa.CoreV1().Secrets(ns).List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Fatalf("the ServiceAccount listing Secrets: got %v, want Forbidden", err)
	}

	// Watching every namespace, serving, and recording Events all work.
	addr, _ := controlPlane(t, sa)
	name := key(ns, "echo").ResourceName()
	ads := watchEDS(ctx, t, addr, name)
	svc := service(ns, "echo", map[string]string{"fairway.io/choice-count": "one"})
	if _, err := admin.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.DiscoveryV1().EndpointSlices(ns).Create(ctx,
		slice(ns, "echo", "echo-a", ready("198.51.100.40", "zone-a")), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	ads.waitEndpoints(ctx, t, name, map[string]string{addrPort("198.51.100.40"): healthy})
	ev := waitEvent(ctx, t, admin, ns, "echo", "InvalidAnnotation")
	if ev.Source.Component != kube.Component {
		t.Errorf("event source = %q, want %q", ev.Source.Component, kube.Component)
	}
}

func TestSource_NothingBeforeTheInformersSync(t *testing.T) {
	env := sharedEnv(t)
	admin := newClient(t, env)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	deployRBAC(ctx, t, admin)
	ns := newNamespace(ctx, t, admin)
	if _, err := admin.CoreV1().Services(ns).Create(ctx, service(ns, "echo", nil), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.DiscoveryV1().EndpointSlices(ns).Create(ctx,
		slice(ns, "echo", "echo-a", ready("198.51.100.60", "zone-a")), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	// A user that may not list anything yet: the informers cannot sync.
	user := "fairway-late-" + ns
	cs, err := kube.NewClientForConfig(env.ImpersonatedConfig(user))
	if err != nil {
		t.Fatal(err)
	}
	src := kube.New(cs, kube.WithNamespaces(ns))
	sink := newRecordingSink()
	runSource(t, src, sink)
	wait, waitCancel := context.WithTimeout(ctx, 2*time.Second)
	<-wait.Done()
	waitCancel()
	if n := len(sink.snapshots()); n != 0 || src.Synced() {
		t.Fatalf("before the informers could sync: %d snapshots, Synced() = %v; want none, false", n, src.Synced())
	}

	// Granting the deploy ClusterRole lets them sync; the first snapshot
	// then holds the whole world.
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: user},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "fairway-controlplane"},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: user}},
	}
	if _, err := admin.RbacV1().ClusterRoleBindings().Create(ctx, binding, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	sink.waitFor(ctx, t, "the first snapshot", func(*topology.Snapshot) string { return "" })
	first := sink.snapshots()[0]
	if msg := endpointsAre(key(ns, "echo"), wants(ready("198.51.100.60", "zone-a")))(first); msg != "" {
		t.Errorf("first snapshot: %s", msg)
	}
	if !src.Synced() {
		t.Error("Synced() = false after the first snapshot")
	}
}
