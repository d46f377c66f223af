package charts_test

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/lint"
	"helm.sh/helm/v3/pkg/lint/support"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"

	"github.com/fairway-lb/fairway/charts"
	"github.com/fairway-lb/fairway/deploy"
	"github.com/fairway-lb/fairway/internal/testenv"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// helmLabels are the labels the chart adds to the kustomize base's.
var helmLabels = []string{
	"app.kubernetes.io/managed-by",
	"app.kubernetes.io/instance",
	"app.kubernetes.io/version",
	"helm.sh/chart",
}

// byName keys objs by kind/name, leaving out Namespaces (the kustomize base
// creates its own, Helm installs into one) and, with strip, the labels only
// Helm adds.
func byName(t *testing.T, objs []*unstructured.Unstructured, strip bool) map[string]map[string]any {
	t.Helper()
	out := map[string]map[string]any{}
	for _, o := range objs {
		if o.GetKind() == "Namespace" {
			continue
		}
		o = jsonCopy(t, o) // the same number types from YAML and kustomize
		if strip {
			labels := o.GetLabels()
			for _, l := range helmLabels {
				if _, ok := labels[l]; !ok {
					t.Errorf("%s/%s lacks the label %s", o.GetKind(), o.GetName(), l)
				}
				delete(labels, l)
			}
			o.SetLabels(labels)
		}
		key := o.GetKind() + "/" + o.GetName()
		if _, dup := out[key]; dup {
			t.Errorf("two objects %s", key)
		}
		out[key] = o.Object
	}
	return out
}

func jsonCopy(t *testing.T, o *unstructured.Unstructured) *unstructured.Unstructured {
	t.Helper()
	b, err := json.Marshal(o.Object)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return &unstructured.Unstructured{Object: m}
}

// The chart and the kustomize base (with the matching components) render the
// same objects, field for field: kinds, names, labels, containers, args, env,
// ports, probes, RBAC rules, resources, securityContext, image tag.
func TestChart_MatchesKustomize(t *testing.T) {
	for _, tc := range []struct {
		name       string
		values     map[string]any
		components []string
	}{
		{"Defaults", nil, nil},
		{"WatchPods", map[string]any{"watchPods": true}, []string{deploy.ComponentWatchPods}},
		{"NetworkPolicy", map[string]any{"networkPolicy": map[string]any{"enabled": true}}, []string{deploy.ComponentNetworkPolicy}},
		{"ServiceMonitor", map[string]any{"serviceMonitor": map[string]any{"enabled": true}}, []string{deploy.ComponentServiceMonitor}},
		{"TLS", map[string]any{"tls": map[string]any{"enabled": true}}, []string{deploy.ComponentTLS}},
		{"TLSCertManager", map[string]any{"tls": map[string]any{"enabled": true, "certManager": map[string]any{"enabled": true}}},
			[]string{deploy.ComponentTLS, deploy.ComponentTLSCertManager}},
		{"All", map[string]any{
			"watchPods":      true,
			"networkPolicy":  map[string]any{"enabled": true},
			"serviceMonitor": map[string]any{"enabled": true},
			"tls":            map[string]any{"enabled": true, "certManager": map[string]any{"enabled": true}},
		}, []string{deploy.ComponentWatchPods, deploy.ComponentNetworkPolicy, deploy.ComponentServiceMonitor,
			deploy.ComponentTLS, deploy.ComponentTLSCertManager}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := charts.Render("fairway", deploy.Namespace, tc.values)
			if err != nil {
				t.Fatal(err)
			}
			want, err := deploy.Render(tc.components...)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(byName(t, got, true), byName(t, want, false)); diff != "" {
				t.Errorf("chart (-got) vs kustomize (+want):\n%s", diff)
			}
		})
	}
}

func deployment(t *testing.T, objs []*unstructured.Unstructured) *unstructured.Unstructured {
	t.Helper()
	for _, o := range objs {
		if o.GetKind() == "Deployment" {
			return o
		}
	}
	t.Fatal("no Deployment rendered")
	return nil
}

func container(t *testing.T, d *unstructured.Unstructured) corev1.Container {
	t.Helper()
	cs, _, err := unstructured.NestedSlice(d.Object, "spec", "template", "spec", "containers")
	if err != nil || len(cs) != 1 {
		t.Fatalf("containers: %v (%d)", err, len(cs))
	}
	var c corev1.Container
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(cs[0].(map[string]any), &c); err != nil {
		t.Fatal(err)
	}
	return c
}

// goMemLimit parses a GOMEMLIMIT value (the runtime's syntax: bytes with an
// optional B, KiB, MiB, GiB or TiB suffix).
func goMemLimit(s string) (int64, error) {
	m := regexp.MustCompile(`^([0-9]+)(B|KiB|MiB|GiB|TiB)?$`).FindStringSubmatch(s)
	if m == nil {
		return 0, fmt.Errorf("GOMEMLIMIT %q is not <n>[B|KiB|MiB|GiB|TiB]", s)
	}
	n, err := strconv.ParseInt(m[1], 10, 64)
	if err != nil {
		return 0, err
	}
	shift := map[string]uint{"": 0, "B": 0, "KiB": 10, "MiB": 20, "GiB": 30, "TiB": 40}[m[2]]
	return n << shift, nil
}

// GOMEMLIMIT is set, under the memory limit with room for the non-heap part.
func TestChart_GOMEMLIMITUnderMemoryLimit(t *testing.T) {
	for _, tc := range []struct {
		name   string
		values map[string]any
	}{
		{"Defaults", nil},
		{"BiggerLimit", map[string]any{"goMemLimit": "1800MiB", "resources": map[string]any{"limits": map[string]any{"memory": "2Gi"}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			objs, err := charts.Render("fairway", deploy.Namespace, tc.values)
			if err != nil {
				t.Fatal(err)
			}
			c := container(t, deployment(t, objs))
			var env []string
			for _, e := range c.Env {
				env = append(env, e.Name)
				if e.Name != "GOMEMLIMIT" {
					continue
				}
				soft, err := goMemLimit(e.Value)
				if err != nil {
					t.Fatal(err)
				}
				limit := c.Resources.Limits.Memory().Value()
				if soft <= limit/2 || soft > limit*95/100 {
					t.Errorf("GOMEMLIMIT %s = %d bytes, want within (50%%, 95%%] of the memory limit %d", e.Value, soft, limit)
				}
			}
			if diff := cmp.Diff(env, []string{"GOMEMLIMIT"}); diff != "" {
				t.Errorf("env (-got +want):\n%s", diff)
			}
		})
	}
}

// The image tag defaults to the chart's appVersion; values override it and
// add arguments.
func TestChart_ImageAndArgs(t *testing.T) {
	c, err := charts.Load()
	if err != nil {
		t.Fatal(err)
	}
	objs, err := charts.Render("fairway", deploy.Namespace, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := container(t, deployment(t, objs)).Image, "ghcr.io/fairway-lb/fairway:"+c.Metadata.AppVersion; got != want {
		t.Errorf("default image = %q, want %q", got, want)
	}
	objs, err = charts.Render("fairway", "other", map[string]any{
		"image":     map[string]any{"tag": "v9.9.9", "pullPolicy": "Always"},
		"extraArgs": []any{"--log-format=json"},
		"auth":      "none",
		"replicas":  3,
	})
	if err != nil {
		t.Fatal(err)
	}
	d := deployment(t, objs)
	ctr := container(t, d)
	if ctr.Image != "ghcr.io/fairway-lb/fairway:v9.9.9" || ctr.ImagePullPolicy != corev1.PullAlways {
		t.Errorf("image = %q, pull policy %q; want ghcr.io/fairway-lb/fairway:v9.9.9, Always", ctr.Image, ctr.ImagePullPolicy)
	}
	if diff := cmp.Diff(ctr.Args, []string{"controlplane", "--xds-addr=0.0.0.0:18000", "--admin-addr=0.0.0.0:9090", "--auth=none", "--log-format=json"}); diff != "" {
		t.Errorf("args (-got +want):\n%s", diff)
	}
	if n, _, _ := unstructured.NestedFieldNoCopy(d.Object, "spec", "replicas"); fmt.Sprint(n) != "3" {
		t.Errorf("replicas = %v, want 3", n)
	}
	for _, o := range objs {
		if ns := o.GetNamespace(); o.GetKind() != "ClusterRole" && o.GetKind() != "ClusterRoleBinding" && ns != "other" {
			t.Errorf("%s/%s in namespace %q, want other", o.GetKind(), o.GetName(), ns)
		}
		if o.GetKind() == "ClusterRoleBinding" {
			subjects, _, _ := unstructured.NestedSlice(o.Object, "subjects")
			if len(subjects) != 1 || subjects[0].(map[string]any)["namespace"] != "other" {
				t.Errorf("ClusterRoleBinding subjects = %v, want the ServiceAccount in other", subjects)
			}
		}
	}
}

// The chart passes Helm's linter (Chart.yaml, values against
// values.schema.json, templates) with no warning; the schema rejects bad
// values with a message naming them.
func TestChart_Lint(t *testing.T) {
	kv, err := chartutil.ParseKubeVersion(charts.KubeVersion)
	if err != nil {
		t.Fatal(err)
	}
	for _, values := range []map[string]any{
		nil,
		{"watchPods": true, "networkPolicy": map[string]any{"enabled": true}, "serviceMonitor": map[string]any{"enabled": true},
			"tls": map[string]any{"enabled": true, "certManager": map[string]any{"enabled": true}}},
	} {
		l := lint.AllWithKubeVersion(charts.Name, values, deploy.Namespace, kv)
		for _, m := range l.Messages {
			if m.Severity >= support.WarningSev {
				t.Errorf("lint %v: %s", values, m)
			}
		}
	}
	for _, tc := range []struct {
		values map[string]any
		want   string
	}{
		{map[string]any{"goMemLimit": "lots"}, "goMemLimit"},
		{map[string]any{"replicas": 0}, "replicas"},
		{map[string]any{"watchpods": true}, "watchpods"},
		{map[string]any{"extraArgs": []any{"controlplane"}}, "extraArgs"},
		{map[string]any{"auth": "tokens"}, "auth"},
		{map[string]any{"tls": map[string]any{"enable": true}}, "enable"},
		{map[string]any{"tls": map[string]any{"enabled": true, "secretName": ""}}, "secretName"},
		{map[string]any{"tls": map[string]any{"certManager": map[string]any{"enabled": true}}}, "tls/enabled"},
	} {
		_, err := charts.Render("fairway", deploy.Namespace, tc.values)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Render(%v) = %v, want an error naming %s", tc.values, err, tc.want)
		}
		l := lint.AllWithKubeVersion(charts.Name, tc.values, deploy.Namespace, kv)
		if l.HighestSeverity < support.ErrorSev {
			t.Errorf("lint %v passed, want an error", tc.values)
		}
	}
}

// The chart in the tree is at the release that deploy/ names: version X.Y.Z,
// appVersion vX.Y.Z (the image tag; TestChart_MatchesKustomize compares it
// with deploy/kustomization.yaml's newTag).
func TestChart_VersionIsAppVersion(t *testing.T) {
	c, err := charts.Load()
	if err != nil {
		t.Fatal(err)
	}
	if "v"+c.Metadata.Version != c.Metadata.AppVersion {
		t.Errorf("Chart.yaml version %s, appVersion %s; want X.Y.Z and vX.Y.Z", c.Metadata.Version, c.Metadata.AppVersion)
	}
}

// TestChart_Package writes a release's archive, which loads back with the
// release's version as chart version, appVersion and default image tag.
func TestChart_Package(t *testing.T) {
	path, err := charts.Package(t.TempDir(), "v1.2.3")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(path, "/fairway-1.2.3.tgz") {
		t.Errorf("archive %s, want .../fairway-1.2.3.tgz", path)
	}
	if _, err := charts.Package(t.TempDir(), "1.2.3"); err == nil {
		t.Error("Package(1.2.3) succeeded, want an error (no v)")
	}
	if _, err := charts.Package(t.TempDir(), "vnext"); err == nil {
		t.Error("Package(vnext) succeeded, want an error (not semver)")
	}
	c, err := loader.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if c.Metadata.Version != "1.2.3" || c.Metadata.AppVersion != "v1.2.3" {
		t.Errorf("packaged version %s, appVersion %s; want 1.2.3, v1.2.3", c.Metadata.Version, c.Metadata.AppVersion)
	}
	for _, f := range c.Raw {
		if strings.HasSuffix(f.Name, ".go") {
			t.Errorf("the archive holds %s", f.Name)
		}
	}
}

// The rendered chart applies to a real kube-apiserver (server-side apply,
// dry run first, so unknown fields fail), and its RBAC grants the
// ServiceAccount what the control plane needs. The ServiceMonitor and the
// Certificate are rendered and compared (above) but not applied: the test
// apiserver has neither the Prometheus Operator's CRDs nor cert-manager's.
func TestChart_ApplyToAPIServer(t *testing.T) {
	env := testenv.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	admin, err := kubernetes.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: deploy.Namespace}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	objs, err := charts.Render("fairway", deploy.Namespace, map[string]any{
		"watchPods":      true,
		"networkPolicy":  map[string]any{"enabled": true},
		"serviceMonitor": map[string]any{"enabled": true},
		"tls":            map[string]any{"enabled": true, "secretName": "fairway-tls", "certManager": map[string]any{"enabled": true}},
		"auth":           "token,mtls",
		"extraArgs":      []any{"--client-ca-file=/etc/fairway/client-ca/ca.crt"},
		"volumes":        []any{map[string]any{"name": "client-ca", "configMap": map[string]any{"name": "fairway-client-ca"}}},
		"volumeMounts":   []any{map[string]any{"name": "client-ca", "mountPath": "/etc/fairway/client-ca", "readOnly": true}},
	})
	if err != nil {
		t.Fatal(err)
	}
	var core []*unstructured.Unstructured
	var kinds []string
	for _, o := range objs {
		kinds = append(kinds, o.GetKind())
		if o.GetKind() != "ServiceMonitor" && o.GetKind() != "Certificate" {
			core = append(core, o)
		}
	}
	want := []string{"NetworkPolicy", "PodDisruptionBudget", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Service", "Deployment", "Certificate", "ServiceMonitor"}
	if diff := cmp.Diff(kinds, want); diff != "" {
		t.Errorf("kinds in install order (-got +want):\n%s", diff)
	}
	if err := env.Apply(ctx, core...); err != nil {
		t.Fatal(err)
	}

	d, err := admin.AppsV1().Deployments(deploy.Namespace).Get(ctx, "fairway-controlplane", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c := d.Spec.Template.Spec.Containers[0]
	if diff := cmp.Diff(c.Args, []string{"controlplane", "--xds-addr=0.0.0.0:18000", "--admin-addr=0.0.0.0:9090", "--auth=token,mtls", "--watch-pods",
		"--tls-cert-file=/etc/fairway/tls/tls.crt", "--tls-key-file=/etc/fairway/tls/tls.key", "--client-ca-file=/etc/fairway/client-ca/ca.crt"}); diff != "" {
		t.Errorf("applied args (-got +want):\n%s", diff)
	}
	// The tls Secret's mount and the values' own, side by side.
	mounts := map[string]string{}
	for _, m := range c.VolumeMounts {
		mounts[m.Name] = m.MountPath
	}
	if diff := cmp.Diff(mounts, map[string]string{"fairway-xds-tls": deploy.TLSMountPath, "client-ca": "/etc/fairway/client-ca"}); diff != "" {
		t.Errorf("applied mounts (-got +want):\n%s", diff)
	}
	volumes := map[string]string{}
	for _, v := range d.Spec.Template.Spec.Volumes {
		switch {
		case v.Secret != nil:
			volumes[v.Name] = "secret/" + v.Secret.SecretName
		case v.ConfigMap != nil:
			volumes[v.Name] = "configmap/" + v.ConfigMap.Name
		}
	}
	if diff := cmp.Diff(volumes, map[string]string{"fairway-xds-tls": "secret/fairway-tls", "client-ca": "configmap/fairway-client-ca"}); diff != "" {
		t.Errorf("applied volumes (-got +want):\n%s", diff)
	}
	if got := c.Resources.Limits.Memory(); got.Cmp(resource.MustParse("512Mi")) != 0 {
		t.Errorf("applied memory limit %v, want 512Mi", got)
	}
	pdb, err := admin.PolicyV1().PodDisruptionBudgets(deploy.Namespace).Get(ctx, "fairway-controlplane", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if pdb.Spec.MaxUnavailable == nil || pdb.Spec.MaxUnavailable.IntValue() != 1 {
		t.Errorf("PodDisruptionBudget maxUnavailable = %v, want 1", pdb.Spec.MaxUnavailable)
	}

	sa, err := kubernetes.NewForConfig(env.ImpersonatedConfig(deploy.ServiceAccountUser))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		verb, group, resource string
		want                  bool
	}{
		{"watch", "", "services", true},
		{"list", "discovery.k8s.io", "endpointslices", true},
		{"watch", "", "pods", true},
		{"create", "events.k8s.io", "events", true},
		{"create", "authentication.k8s.io", "tokenreviews", true},
		{"list", "", "secrets", false},
		{"update", "", "services", false},
	} {
		r, err := sa.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx, &authorizationv1.SelfSubjectAccessReview{
			Spec: authorizationv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &authorizationv1.ResourceAttributes{
				Verb: c.verb, Group: c.group, Resource: c.resource,
			}},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if r.Status.Allowed != c.want {
			t.Errorf("ServiceAccount may %s %s.%s: %v, want %v", c.verb, c.resource, c.group, r.Status.Allowed, c.want)
		}
	}
}
