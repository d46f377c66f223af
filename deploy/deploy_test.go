package deploy_test

import (
	"context"
	"regexp"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"
	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/fairway-lb/fairway/deploy"
	"github.com/fairway-lb/fairway/internal/testenv"
)

const namespace = deploy.Namespace

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

type access struct {
	Verb     string
	Group    string
	Resource string
}

// allowed asks, as the control plane's ServiceAccount, which of checks it may
// do in namespace "shop" and cluster-wide.
func allowed(ctx context.Context, t *testing.T, sa kubernetes.Interface, checks []access) map[access]bool {
	t.Helper()
	got := map[access]bool{}
	for _, c := range checks {
		both := true
		for _, ns := range []string{"shop", ""} {
			r, err := sa.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx, &authorizationv1.SelfSubjectAccessReview{
				Spec: authorizationv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &authorizationv1.ResourceAttributes{
					Namespace: ns, Verb: c.Verb, Group: c.Group, Resource: c.Resource,
				}},
			}, metav1.CreateOptions{})
			if err != nil {
				t.Fatalf("SelfSubjectAccessReview %+v: %v", c, err)
			}
			both = both && r.Status.Allowed
		}
		got[c] = both
	}
	return got
}

var (
	readVerbs  = []string{"get", "list", "watch"}
	writeVerbs = []string{"create", "update", "patch", "delete", "deletecollection"}
)

// wantAccess lists what the ServiceAccount may and may not do.
func wantAccess(watchPods bool) map[access]bool {
	want := map[access]bool{}
	for _, v := range readVerbs {
		want[access{v, "", "services"}] = true
		want[access{v, "discovery.k8s.io", "endpointslices"}] = true
		want[access{v, "", "pods"}] = watchPods
		want[access{v, "", "secrets"}] = false
		want[access{v, "", "configmaps"}] = false
		want[access{v, "", "endpoints"}] = false
	}
	for _, v := range writeVerbs {
		want[access{v, "", "services"}] = false
		want[access{v, "discovery.k8s.io", "endpointslices"}] = false
		want[access{v, "", "pods"}] = false
	}
	// TokenReviews, for --auth token; nothing else of the authentication
	// and authorization APIs.
	want[access{"create", "authentication.k8s.io", "tokenreviews"}] = true
	want[access{"create", "authorization.k8s.io", "subjectaccessreviews"}] = false
	for _, g := range []string{"", "events.k8s.io"} {
		want[access{"create", g, "events"}] = true
		want[access{"patch", g, "events"}] = true
		want[access{"get", g, "events"}] = false
		want[access{"delete", g, "events"}] = false
	}
	return want
}

func checkAccess(ctx context.Context, t *testing.T, sa kubernetes.Interface, watchPods bool) {
	t.Helper()
	want := wantAccess(watchPods)
	var checks []access
	for c := range want {
		checks = append(checks, c)
	}
	if diff := cmp.Diff(allowed(ctx, t, sa, checks), want); diff != "" {
		t.Errorf("ServiceAccount access, watchPods=%v (-got +want):\n%s", watchPods, diff)
	}
}

func TestManifests_ApplyAndRBAC(t *testing.T) {
	env := testenv.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	base, err := deploy.Render()
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, o := range base {
		kinds = append(kinds, o.GetKind()+"/"+o.GetName())
	}
	wantKinds := []string{
		"Namespace/fairway-system",
		"ServiceAccount/fairway-controlplane",
		"ClusterRole/fairway-controlplane",
		"ClusterRoleBinding/fairway-controlplane",
		"Deployment/fairway-controlplane",
		"Service/fairway-xds",
	}
	if diff := cmp.Diff(kinds, wantKinds); diff != "" {
		t.Errorf("rendered objects (-got +want):\n%s", diff)
	}
	if err := env.Apply(ctx, base...); err != nil {
		t.Fatal(err)
	}

	admin, err := kubernetes.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	sa, err := kubernetes.NewForConfig(env.ImpersonatedConfig(deploy.ServiceAccountUser))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	t.Run("Deployment", func(t *testing.T) {
		d, err := admin.AppsV1().Deployments(namespace).Get(ctx, "fairway-controlplane", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if got := ptr.Deref(d.Spec.Replicas, 0); got != 2 {
			t.Errorf("replicas = %d, want 2", got)
		}
		pod := d.Spec.Template.Spec
		if pod.ServiceAccountName != "fairway-controlplane" {
			t.Errorf("serviceAccountName = %q, want fairway-controlplane", pod.ServiceAccountName)
		}
		if len(pod.Containers) != 1 {
			t.Fatalf("%d containers, want 1", len(pod.Containers))
		}
		c := pod.Containers[0]
		// A released, versioned image (make release VERSION=<tag>), never :latest.
		if !regexp.MustCompile(`^ghcr\.io/fairway-lb/fairway:v[0-9]+\.[0-9]+\.[0-9]+$`).MatchString(c.Image) {
			t.Errorf("image = %q, want ghcr.io/fairway-lb/fairway:vX.Y.Z", c.Image)
		}
		if diff := cmp.Diff(c.Args, []string{"controlplane", "--xds-addr=0.0.0.0:18000", "--admin-addr=0.0.0.0:9090", "--auth=token"}); diff != "" {
			t.Errorf("args (-got +want):\n%s", diff)
		}
		wantSC := &corev1.SecurityContext{
			RunAsNonRoot:             ptr.To(true),
			RunAsUser:                ptr.To[int64](65532),
			ReadOnlyRootFilesystem:   ptr.To(true),
			AllowPrivilegeEscalation: ptr.To(false),
			Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
			SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
		}
		if diff := cmp.Diff(c.SecurityContext, wantSC); diff != "" {
			t.Errorf("container securityContext (-got +want):\n%s", diff)
		}
		type probe struct{ Path, Port string }
		probes := map[string]*corev1.Probe{"readiness": c.ReadinessProbe, "liveness": c.LivenessProbe}
		gotProbes := map[string]probe{}
		for name, p := range probes {
			if p == nil || p.HTTPGet == nil {
				t.Errorf("%s probe is not an httpGet probe: %+v", name, p)
				continue
			}
			gotProbes[name] = probe{p.HTTPGet.Path, p.HTTPGet.Port.String()}
		}
		if diff := cmp.Diff(gotProbes, map[string]probe{"readiness": {"/readyz", "admin"}, "liveness": {"/healthz", "admin"}}); diff != "" {
			t.Errorf("probes (-got +want):\n%s", diff)
		}
		gotPorts := map[string]int32{}
		for _, p := range c.Ports {
			gotPorts[p.Name] = p.ContainerPort
		}
		if diff := cmp.Diff(gotPorts, map[string]int32{"grpc-xds": 18000, "admin": 9090}); diff != "" {
			t.Errorf("container ports (-got +want):\n%s", diff)
		}
		if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() {
			t.Errorf("resource requests missing: %v", c.Resources.Requests)
		}
	})

	t.Run("Service", func(t *testing.T) {
		s, err := admin.CoreV1().Services(namespace).Get(ctx, "fairway-xds", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]string{}
		for _, p := range s.Spec.Ports {
			got[p.Name] = p.TargetPort.String() + ":" + string(p.Protocol)
		}
		if diff := cmp.Diff(got, map[string]string{"grpc-xds": "grpc-xds:TCP", "admin": "admin:TCP"}); diff != "" {
			t.Errorf("service ports (-got +want):\n%s", diff)
		}
		for _, p := range s.Spec.Ports {
			if p.Name == "grpc-xds" && p.Port != 18000 {
				t.Errorf("grpc-xds port = %d, want 18000", p.Port)
			}
		}
	})

	t.Run("RBAC", func(t *testing.T) {
		checkAccess(ctx, t, sa, false)
		// The permissions hold for real requests too, not only in reviews.
		if _, err := sa.CoreV1().Services("").List(ctx, metav1.ListOptions{}); err != nil {
			t.Errorf("ServiceAccount lists services: %v", err)
		}
		if _, err := sa.DiscoveryV1().EndpointSlices("").List(ctx, metav1.ListOptions{}); err != nil {
			t.Errorf("ServiceAccount lists endpointslices: %v", err)
		}
		if _, err := sa.CoreV1().Pods("").List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
			t.Errorf("ServiceAccount lists pods: got %v, want Forbidden", err)
		}
		tr, err := sa.AuthenticationV1().TokenReviews().Create(ctx, &authenticationv1.TokenReview{
			Spec: authenticationv1.TokenReviewSpec{Token: "not-a-token", Audiences: []string{"fairway"}}}, metav1.CreateOptions{})
		if err != nil || tr.Status.Authenticated {
			t.Errorf("ServiceAccount reviews a token: %v, authenticated=%v; want a review that rejects it", err, tr != nil && tr.Status.Authenticated)
		}
		if _, err := sa.CoreV1().Secrets(namespace).List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
			t.Errorf("ServiceAccount lists secrets: got %v, want Forbidden", err)
		}
	})

	t.Run("WatchPodsComponent", func(t *testing.T) {
		overlay, err := deploy.Render(deploy.ComponentWatchPods)
		if err != nil {
			t.Fatal(err)
		}
		if err := env.Apply(ctx, overlay...); err != nil {
			t.Fatal(err)
		}
		checkAccess(ctx, t, sa, true)
		if _, err := sa.CoreV1().Pods("").List(ctx, metav1.ListOptions{}); err != nil {
			t.Errorf("ServiceAccount with watch-pods lists pods: %v", err)
		}
		d, err := admin.AppsV1().Deployments(namespace).Get(ctx, "fairway-controlplane", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		want := []string{"controlplane", "--xds-addr=0.0.0.0:18000", "--admin-addr=0.0.0.0:9090", "--auth=token", "--watch-pods"}
		if diff := cmp.Diff(d.Spec.Template.Spec.Containers[0].Args, want); diff != "" {
			t.Errorf("args with watch-pods (-got +want):\n%s", diff)
		}
	})
}

func TestRender_UnknownComponent(t *testing.T) {
	if _, err := deploy.Render("no-such-component"); err == nil {
		t.Fatal("Render with an unknown component succeeded, want an error")
	}
}
