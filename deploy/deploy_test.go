package deploy_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"math/big"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"
	appsv1 "k8s.io/api/apps/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
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
		"PodDisruptionBudget/fairway-controlplane",
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

	t.Run("TLSComponent", func(t *testing.T) {
		overlay, err := deploy.Render(deploy.ComponentWatchPods, deploy.ComponentTLS)
		if err != nil {
			t.Fatal(err)
		}
		certPEM, keyPEM := serverCert(t, xdsServiceNames(t))
		secret := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "v1",
			"kind":       "Secret",
			"metadata":   map[string]any{"name": deploy.TLSSecret, "namespace": namespace},
			"type":       string(corev1.SecretTypeTLS),
			"data": map[string]any{
				corev1.TLSCertKey:       base64.StdEncoding.EncodeToString(certPEM),
				corev1.TLSPrivateKeyKey: base64.StdEncoding.EncodeToString(keyPEM),
			},
		}}
		if err := env.Apply(ctx, append([]*unstructured.Unstructured{secret}, overlay...)...); err != nil {
			t.Fatal(err)
		}
		d, err := admin.AppsV1().Deployments(namespace).Get(ctx, "fairway-controlplane", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		want := []string{"controlplane", "--xds-addr=0.0.0.0:18000", "--admin-addr=0.0.0.0:9090", "--auth=token", "--watch-pods",
			"--tls-cert-file=" + deploy.TLSMountPath + "/tls.crt", "--tls-key-file=" + deploy.TLSMountPath + "/tls.key"}
		if diff := cmp.Diff(d.Spec.Template.Spec.Containers[0].Args, want); diff != "" {
			t.Errorf("args with tls (-got +want):\n%s", diff)
		}
		checkTLSDeployment(ctx, t, admin, d)
		// The control plane's ServiceAccount does not read the Secret: the
		// kubelet mounts it.
		if _, err := sa.CoreV1().Secrets(namespace).Get(ctx, deploy.TLSSecret, metav1.GetOptions{}); !apierrors.IsForbidden(err) {
			t.Errorf("ServiceAccount gets the TLS Secret: got %v, want Forbidden", err)
		}
	})
}

// tlsFile resolves a path the container reads to the Secret volume and key
// that the kubelet puts there.
func tlsFile(t *testing.T, pod corev1.PodSpec, file string) (secret, key string) {
	t.Helper()
	for _, m := range pod.Containers[0].VolumeMounts {
		rel, ok := strings.CutPrefix(file, m.MountPath+"/")
		if !ok {
			continue
		}
		for _, v := range pod.Volumes {
			if v.Name == m.Name && v.Secret != nil {
				return v.Secret.SecretName, rel
			}
		}
	}
	t.Fatalf("%s is in no mounted Secret volume (mounts %+v)", file, pod.Containers[0].VolumeMounts)
	return "", ""
}

// flagValue returns the value of --name=VALUE in args.
func flagValue(t *testing.T, args []string, name string) string {
	t.Helper()
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, "--"+name+"="); ok {
			return v
		}
	}
	t.Fatalf("no --%s in %q", name, args)
	return ""
}

// xdsServiceNames returns the names clients dial for deploy/'s xDS Service:
// NAME.NAMESPACE.svc, and NAME.NAMESPACE.
func xdsServiceNames(t *testing.T) []string {
	t.Helper()
	objs, err := deploy.Render()
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range objs {
		if o.GetKind() == "Service" && o.GetName() == "fairway-xds" {
			return []string{o.GetName() + "." + o.GetNamespace() + ".svc", o.GetName() + "." + o.GetNamespace()}
		}
	}
	t.Fatal("deploy/ renders no Service fairway-xds")
	return nil
}

// serverCert returns a self-signed certificate for names and its key, PEM-encoded.
func serverCert(t *testing.T, names []string) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: names[0]},
		DNSNames:     names,
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
}

// checkTLSDeployment checks that the Deployment's --tls-cert-file and
// --tls-key-file are the keys of the Secret TLSSecret, as the kubelet would
// mount them, and that the Secret in the API holds a certificate and key that
// pair up and name the xDS Service.
func checkTLSDeployment(ctx context.Context, t *testing.T, admin kubernetes.Interface, d *appsv1.Deployment) {
	t.Helper()
	pod := d.Spec.Template.Spec
	args := pod.Containers[0].Args
	certSecret, certKey := tlsFile(t, pod, flagValue(t, args, "tls-cert-file"))
	keySecret, keyKey := tlsFile(t, pod, flagValue(t, args, "tls-key-file"))
	if certSecret != deploy.TLSSecret || keySecret != deploy.TLSSecret {
		t.Errorf("certificate from Secret %s, key from %s; want both from %s", certSecret, keySecret, deploy.TLSSecret)
	}
	if certKey != corev1.TLSCertKey || keyKey != corev1.TLSPrivateKeyKey {
		t.Errorf("certificate at key %s, key at %s; want %s and %s (a kubernetes.io/tls Secret)", certKey, keyKey, corev1.TLSCertKey, corev1.TLSPrivateKeyKey)
	}
	for _, m := range pod.Containers[0].VolumeMounts {
		if m.MountPath == deploy.TLSMountPath && !m.ReadOnly {
			t.Errorf("mount %s is writable, want readOnly", m.MountPath)
		}
	}
	s, err := admin.CoreV1().Secrets(namespace).Get(ctx, certSecret, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.X509KeyPair(s.Data[certKey], s.Data[keyKey])
	if err != nil {
		t.Fatalf("Secret %s: %v", certSecret, err)
	}
	for _, name := range xdsServiceNames(t) {
		if err := pair.Leaf.VerifyHostname(name); err != nil {
			t.Errorf("Secret %s: %v", certSecret, err)
		}
	}
}

func TestRender_TLSCertManager(t *testing.T) {
	objs, err := deploy.Render(deploy.ComponentTLS, deploy.ComponentTLSCertManager)
	if err != nil {
		t.Fatal(err)
	}
	var certs []*unstructured.Unstructured
	var volumes []any
	for _, o := range objs {
		switch o.GetKind() {
		case "Certificate":
			certs = append(certs, o)
		case "Deployment":
			volumes, _, _ = unstructured.NestedSlice(o.Object, "spec", "template", "spec", "volumes")
		}
	}
	if len(certs) != 1 {
		t.Fatalf("%d Certificates rendered, want 1", len(certs))
	}
	c := certs[0]
	if c.GetAPIVersion() != "cert-manager.io/v1" || c.GetNamespace() != deploy.Namespace {
		t.Errorf("Certificate %s in %q, want cert-manager.io/v1 in %s", c.GetAPIVersion(), c.GetNamespace(), deploy.Namespace)
	}
	secretName, _, _ := unstructured.NestedString(c.Object, "spec", "secretName")
	mounted := false
	for _, v := range volumes {
		if n, _, _ := unstructured.NestedString(v.(map[string]any), "secret", "secretName"); n == secretName {
			mounted = true
		}
	}
	if secretName != deploy.TLSSecret || !mounted {
		t.Errorf("Certificate issues Secret %q (mounted: %v), want %s, the Secret the tls component mounts", secretName, mounted, deploy.TLSSecret)
	}
	dnsNames, _, _ := unstructured.NestedStringSlice(c.Object, "spec", "dnsNames")
	for _, name := range xdsServiceNames(t) {
		if !slices.Contains(dnsNames, name) {
			t.Errorf("Certificate dnsNames %q lack %s", dnsNames, name)
		}
	}
	usages, _, _ := unstructured.NestedStringSlice(c.Object, "spec", "usages")
	if !slices.Contains(usages, "server auth") {
		t.Errorf("Certificate usages %q lack server auth", usages)
	}
	issuer, _, _ := unstructured.NestedStringMap(c.Object, "spec", "issuerRef")
	if diff := cmp.Diff(issuer, map[string]string{"name": "fairway-xds-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"}); diff != "" {
		t.Errorf("issuerRef (-got +want):\n%s", diff)
	}
	// Alone, the component only mounts a Secret that someone else creates.
	alone, err := deploy.Render(deploy.ComponentTLS)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range alone {
		if o.GetKind() == "Certificate" || o.GetKind() == "Secret" {
			t.Errorf("the tls component alone renders %s/%s", o.GetKind(), o.GetName())
		}
	}
}

func TestRender_UnknownComponent(t *testing.T) {
	if _, err := deploy.Render("no-such-component"); err == nil {
		t.Fatal("Render with an unknown component succeeded, want an error")
	}
}
