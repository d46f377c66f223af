package testenv_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"

	"github.com/fairway-lb/fairway/internal/testenv"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestStartProcess_MissingBinariesFailsWithHint(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := testenv.StartProcess(ctx, t.TempDir(), testenv.WithBinDir(t.TempDir()))
	if !errors.Is(err, testenv.ErrBinariesMissing) {
		t.Fatalf("StartProcess with an empty bin dir: got %v, want ErrBinariesMissing", err)
	}
}

func TestEnv_ObjectsSurviveAPIServerRestart(t *testing.T) {
	start := time.Now()
	env := testenv.Start(t)
	t.Logf("etcd + kube-apiserver ready in %v", time.Since(start))

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cs, err := kubernetes.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}

	const ns = "shop"
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create namespace: %v", err)
	}
	svc, err := cs.CoreV1().Services(ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "cart"},
		Spec: corev1.ServiceSpec{
			Ports: []corev1.ServicePort{{Name: "grpc", Port: 50051, Protocol: corev1.ProtocolTCP}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create service: %v", err)
	}
	if svc.Spec.ClusterIP == "" {
		t.Errorf("service has no ClusterIP allocated")
	}
	_, err = cs.DiscoveryV1().EndpointSlices(ns).Create(ctx, &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Name:   "cart-a",
			Labels: map[string]string{discoveryv1.LabelServiceName: "cart"},
		},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("grpc"), Port: ptr.To[int32](50051), Protocol: ptr.To(corev1.ProtocolTCP)}},
		Endpoints: []discoveryv1.Endpoint{{
			Addresses:  []string{"198.51.100.7"},
			Zone:       ptr.To("zone-a"),
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true), Serving: ptr.To(true), Terminating: ptr.To(false)},
		}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create endpointslice: %v", err)
	}

	type seen struct {
		Services  []string
		Addresses []string
	}
	list := func() (seen, error) {
		var s seen
		svcs, err := cs.CoreV1().Services(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return s, err
		}
		for _, x := range svcs.Items {
			s.Services = append(s.Services, x.Name)
		}
		slices, err := cs.DiscoveryV1().EndpointSlices(ns).List(ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=cart"})
		if err != nil {
			return s, err
		}
		for _, x := range slices.Items {
			for _, ep := range x.Endpoints {
				s.Addresses = append(s.Addresses, ep.Addresses...)
			}
		}
		return s, nil
	}
	want := seen{Services: []string{"cart"}, Addresses: []string{"198.51.100.7"}}

	got, err := list()
	if err != nil {
		t.Fatalf("list before restart: %v", err)
	}
	if diff := cmp.Diff(got, want); diff != "" {
		t.Errorf("before restart (-got +want):\n%s", diff)
	}

	if err := env.StopAPIServer(); err != nil {
		t.Fatalf("StopAPIServer: %v", err)
	}
	if _, err := list(); err == nil {
		t.Errorf("list while the apiserver is stopped succeeded, want an error")
	}
	restart := time.Now()
	if err := env.StartAPIServer(); err != nil {
		t.Fatalf("StartAPIServer: %v", err)
	}
	t.Logf("kube-apiserver ready again in %v", time.Since(restart))

	got, err = list()
	if err != nil {
		t.Fatalf("list after restart: %v", err)
	}
	if diff := cmp.Diff(got, want); diff != "" {
		t.Errorf("after restart (-got +want):\n%s", diff)
	}
}

func TestEnv_KubeconfigImpersonationAndApply(t *testing.T) {
	env := testenv.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	if filepath.Dir(env.KubeconfigPath) != env.Dir {
		t.Errorf("KubeconfigPath %q is not in Dir %q", env.KubeconfigPath, env.Dir)
	}
	if _, err := os.Stat(env.KubeconfigPath); err != nil {
		t.Fatal(err)
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", env.KubeconfigPath)
	if err != nil {
		t.Fatalf("load kubeconfig: %v", err)
	}
	admin, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := admin.CoreV1().Namespaces().Get(ctx, "kube-system", metav1.GetOptions{}); err != nil {
		t.Errorf("admin via kubeconfig: get namespace kube-system: %v", err)
	}

	nobody, err := kubernetes.NewForConfig(env.ImpersonatedConfig("system:serviceaccount:default:nobody"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = nobody.CoreV1().Services("default").List(ctx, metav1.ListOptions{})
	if !apierrors.IsForbidden(err) {
		t.Errorf("impersonated ServiceAccount without RBAC lists services: got %v, want Forbidden", err)
	}

	cm := func(field string) *unstructured.Unstructured {
		return &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "v1",
			"kind":       "ConfigMap",
			"metadata":   map[string]any{"name": "settings", "namespace": "default"},
			field:        map[string]any{"mode": "p2c"},
		}}
	}
	if err := env.Apply(ctx, cm("datta")); err == nil {
		t.Errorf("Apply of a ConfigMap with a misspelled field succeeded, want an error")
	}
	if err := env.Apply(ctx, cm("data")); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	got, err := admin.CoreV1().ConfigMaps("default").Get(ctx, "settings", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(got.Data, map[string]string{"mode": "p2c"}); diff != "" {
		t.Errorf("applied ConfigMap data (-got +want):\n%s", diff)
	}
}

func TestEnv_SecondAPIServerSharesEtcdAndFlags(t *testing.T) {
	// A flag given with WithAPIServerArgs reaches the second apiserver too:
	// Services it creates get ClusterIPs from this range.
	env := testenv.Start(t, testenv.WithAPIServerArgs("--service-cluster-ip-range=10.97.0.0/16", "--request-timeout=3s"))
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	primary, err := kubernetes.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	cfg, stop := env.StartSecondAPIServer(t)
	t.Logf("second kube-apiserver ready in %v", time.Since(start))
	if cfg.Host == env.Config.Host {
		t.Fatalf("second apiserver has the primary's address %s", cfg.Host)
	}
	second, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}

	// Written through the primary, read through the second: one etcd, one
	// token file.
	if _, err := primary.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := second.CoreV1().Namespaces().Get(ctx, "shop", metav1.GetOptions{}); err != nil {
		t.Fatalf("second apiserver: get namespace written through the primary: %v", err)
	}

	// With the primary away, the second still serves, and what it writes the
	// primary sees once it is back.
	if err := env.StopAPIServer(); err != nil {
		t.Fatal(err)
	}
	svc, err := second.CoreV1().Services("shop").Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "cart"},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "grpc", Port: 50051, Protocol: corev1.ProtocolTCP}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("second apiserver with the primary stopped: create service: %v", err)
	}
	if !strings.HasPrefix(svc.Spec.ClusterIP, "10.97.") {
		t.Errorf("ClusterIP allocated by the second apiserver = %q, want one in 10.97.0.0/16", svc.Spec.ClusterIP)
	}
	if err := env.StartAPIServer(); err != nil {
		t.Fatal(err)
	}
	got, err := primary.CoreV1().Services("shop").Get(ctx, "cart", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("primary after restart: get service written through the second: %v", err)
	}
	if got.Spec.ClusterIP != svc.Spec.ClusterIP {
		t.Errorf("primary sees ClusterIP %q, want %q", got.Spec.ClusterIP, svc.Spec.ClusterIP)
	}

	stop()
	stop() // a second call does nothing
	if _, err := second.CoreV1().Namespaces().Get(ctx, "shop", metav1.GetOptions{}); err == nil {
		t.Error("second apiserver answers after stop")
	}
}
