package kube_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"go.uber.org/goleak"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/fairway-lb/fairway/controlplane/kube"
	"github.com/fairway-lb/fairway/controlplane/topology"
	"github.com/fairway-lb/fairway/internal/testenv"
	"github.com/fairway-lb/fairway/internal/testkit"
)

// shared is one etcd + kube-apiserver for the tests that do not restart it;
// each test works in namespaces of its own.
var shared struct {
	once sync.Once
	env  *testenv.Env
	dir  string
	err  error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if shared.env != nil {
		if err := shared.env.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			code = 1
		}
		os.RemoveAll(shared.dir)
	}
	if code == 0 {
		if err := goleak.Find(leakOptions...); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

var leakOptions = []goleak.Option{
	// client-go's shared transports keep idle connections and klog
	// flushes in the background; neither belongs to the source.
	goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
	goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
	goleak.IgnoreTopFunction("k8s.io/klog/v2.(*flushDaemon).run.func1"),
	goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
	// grpc-go's xDS client pool closes its transports asynchronously.
	goleak.IgnoreTopFunction("google.golang.org/grpc/internal/grpcsync.(*CallbackSerializer).run"),
}

// sharedEnv returns the package's shared test environment, starting it on
// first use.
func sharedEnv(t testing.TB) *testenv.Env {
	t.Helper()
	shared.once.Do(func() {
		shared.dir, shared.err = os.MkdirTemp("", "fairway-kube-test-")
		if shared.err != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		shared.env, shared.err = testenv.StartProcess(ctx, shared.dir)
	})
	if shared.err != nil {
		t.Fatalf("starting kube-apiserver and etcd: %v", shared.err)
	}
	return shared.env
}

// begin returns what most tests start with: a context that ends after d
// (and when the test does), a client of the shared API server and a new
// namespace.
func begin(t testing.TB, d time.Duration) (context.Context, kubernetes.Interface, string) {
	t.Helper()
	cs := newClient(t, sharedEnv(t))
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx, cs, newNamespace(ctx, t, cs)
}

func newClient(t testing.TB, env *testenv.Env) kubernetes.Interface {
	t.Helper()
	cs, err := kubernetes.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

var nsCounter atomic.Int64

// newNamespace creates a namespace with a name unique to the test.
func newNamespace(ctx context.Context, t testing.TB, cs kubernetes.Interface) string {
	t.Helper()
	name := fmt.Sprintf("%s-%d", strings.ToLower(strings.NewReplacer("/", "-", "_", "-").Replace(t.Name())), nsCounter.Add(1))
	if len(name) > 63 {
		name = name[len(name)-63:]
		name = strings.TrimLeft(name, "-")
	}
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create namespace %s: %v", name, err)
	}
	return name
}

// recordingSink is a topology.Sink that keeps every snapshot.
type recordingSink struct {
	mu      sync.Mutex
	updates []*topology.Snapshot // guarded by mu
	notify  chan struct{}
}

func newRecordingSink() *recordingSink { return &recordingSink{notify: make(chan struct{}, 1)} }

func (r *recordingSink) Update(s *topology.Snapshot) {
	r.mu.Lock()
	if n := len(r.updates); n > 0 && s.Version() <= r.updates[n-1].Version() {
		panic(fmt.Sprintf("snapshot version went from %d to %d", r.updates[n-1].Version(), s.Version()))
	}
	r.updates = append(r.updates, s)
	r.mu.Unlock()
	select {
	case r.notify <- struct{}{}:
	default:
	}
}

func (r *recordingSink) snapshots() []*topology.Snapshot {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*topology.Snapshot(nil), r.updates...)
}

func (r *recordingSink) latest() *topology.Snapshot {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.updates) == 0 {
		return nil
	}
	return r.updates[len(r.updates)-1]
}

// waitFor waits until cond holds for the latest snapshot; on timeout it fails
// the test with what cond last said.
func (r *recordingSink) waitFor(ctx context.Context, t testing.TB, what string, cond func(*topology.Snapshot) string) *topology.Snapshot {
	t.Helper()
	last := "no snapshot yet"
	for {
		if s := r.latest(); s != nil {
			if last = cond(s); last == "" {
				return s
			}
		}
		select {
		case <-r.notify:
		case <-ctx.Done():
			t.Fatalf("waiting for %s: %v; last mismatch: %s", what, ctx.Err(), last)
			return nil
		}
	}
}

// endpointsAre is a waitFor condition: service key serves exactly want
// (want nil: the key is absent).
func endpointsAre(key topology.ServiceKey, want []topology.Endpoint) func(*topology.Snapshot) string {
	return func(s *topology.Snapshot) string {
		svc, ok := s.Service(key)
		if want == nil {
			if ok {
				return fmt.Sprintf("%s still present with %d endpoints", key, len(svc.Endpoints))
			}
			return ""
		}
		if !ok {
			return fmt.Sprintf("%s absent (snapshot has %v)", key, s.Keys())
		}
		if d := cmp.Diff(svc.Endpoints, want, cmpopts.EquateEmpty()); d != "" {
			return fmt.Sprintf("%s endpoints (-got +want):\n%s", key, d)
		}
		return ""
	}
}

// runSource runs a source until the test ends and checks that Run returns
// nil.
func runSource(t testing.TB, src *kube.Source, sink topology.Sink) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx, sink) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("Run did not return 30s after its context was canceled")
		}
	})
}

const (
	portName   = "grpc"
	svcPort    = 8080
	targetPort = 9000
)

func service(ns, name string, annotations map[string]string) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Annotations: annotations},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": name},
			Ports: []corev1.ServicePort{{
				Name: portName, Port: svcPort, TargetPort: intstr.FromInt32(targetPort), Protocol: corev1.ProtocolTCP,
			}},
		},
	}
}

// ep is an endpoint of a slice in tests.
type ep struct {
	addr                        string
	ready, serving, terminating bool
	zone                        string
}

func slice(ns, svcName, name string, eps ...ep) *discoveryv1.EndpointSlice {
	sl := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: ns, Name: name,
			Labels: map[string]string{discoveryv1.LabelServiceName: svcName},
		},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports: []discoveryv1.EndpointPort{{
			Name: ptr.To(portName), Port: ptr.To[int32](targetPort), Protocol: ptr.To(corev1.ProtocolTCP),
		}},
	}
	for _, e := range eps {
		x := discoveryv1.Endpoint{
			Addresses: []string{e.addr},
			Conditions: discoveryv1.EndpointConditions{
				Ready: ptr.To(e.ready), Serving: ptr.To(e.serving), Terminating: ptr.To(e.terminating),
			},
		}
		if e.zone != "" {
			x.Zone = ptr.To(e.zone)
		}
		sl.Endpoints = append(sl.Endpoints, x)
	}
	return sl
}

func ready(addr, zone string) ep { return ep{addr: addr, ready: true, serving: true, zone: zone} }

// want is the topology endpoint the conversion makes of e.
func want(e ep) topology.Endpoint {
	return topology.Endpoint{
		Address: e.addr, Port: targetPort, Zone: e.zone,
		Ready: e.ready, Serving: e.serving, Terminating: e.terminating, Weight: 1,
	}
}

func wants(eps ...ep) []topology.Endpoint {
	out := make([]topology.Endpoint, len(eps))
	for i, e := range eps {
		out[i] = want(e)
	}
	topology.SortEndpoints(out)
	return out
}

func key(ns, name string) topology.ServiceKey {
	return topology.ServiceKey{Namespace: ns, Name: name, Port: svcPort}
}

// waitEvent waits for a Warning Event with reason on the Service ns/name and
// returns it.
func waitEvent(ctx context.Context, t *testing.T, cs kubernetes.Interface, ns, name, reason string) corev1.Event {
	t.Helper()
	var found corev1.Event
	testkit.Eventually(ctx, t, fmt.Sprintf("a %s Event on Service %s/%s", reason, ns, name), func() bool {
		evs, err := cs.CoreV1().Events(ns).List(ctx, metav1.ListOptions{
			FieldSelector: "involvedObject.kind=Service,involvedObject.name=" + name + ",reason=" + reason,
		})
		if err != nil {
			return false
		}
		for _, ev := range evs.Items {
			if ev.Type == corev1.EventTypeWarning {
				found = ev
				return true
			}
		}
		return false
	})
	return found
}
