package kube

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/fairway-lb/fairway/controlplane/convert"
	"github.com/fairway-lb/fairway/controlplane/topology"
	"github.com/fairway-lb/fairway/internal/testenv"
	"github.com/fairway-lb/fairway/internal/testkit"
)

// lastSink keeps the latest snapshot.
type lastSink struct {
	mu   sync.Mutex
	snap *topology.Snapshot
}

func (l *lastSink) Update(s *topology.Snapshot) {
	l.mu.Lock()
	l.snap = s
	l.mu.Unlock()
}

func (l *lastSink) endpoints(k topology.ServiceKey) (int, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.snap == nil {
		return 0, false
	}
	svc, ok := l.snap.Service(k)
	if !ok {
		return 0, false
	}
	return len(svc.Endpoints), true
}

func TestSource_FailingServiceIsRetriedAndBlocksNoOther(t *testing.T) {
	var failures atomic.Int32
	convertService = func(svc *corev1.Service, sls []*discoveryv1.EndpointSlice, opts convert.Options) ([]*topology.Service, []convert.Problem) {
		if svc.Name == "boom" && failures.Add(1) <= 3 {
			panic("conversion blew up")
		}
		return convert.Service(svc, sls, opts)
	}
	t.Cleanup(func() { convertService = convert.Service })

	env := testenv.Start(t)
	cs, err := kubernetes.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const ns = "retry"
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	sink := &lastSink{}
	src := New(cs, WithNamespaces(ns))
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- src.Run(runCtx, sink) }()
	defer func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()

	for _, name := range []string{"boom", "fine"} {
		svc := &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
			Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "grpc", Port: 8080, Protocol: corev1.ProtocolTCP}}},
		}
		if _, err := cs.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		sl := &discoveryv1.EndpointSlice{
			ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: name + "-a", Labels: map[string]string{discoveryv1.LabelServiceName: name}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("grpc"), Port: ptr.To[int32](9000)}},
			Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{"198.51.100.50"}}},
		}
		if _, err := cs.DiscoveryV1().EndpointSlices(ns).Create(ctx, sl, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}

	// "fine" flows while "boom" fails; "boom" is served once its
	// conversion stops failing (after three retries with backoff).
	defer func() {
		if t.Failed() {
			t.Logf("conversion of boom failed %d times", failures.Load())
		}
	}()
	for _, name := range []string{"fine", "boom"} {
		k := topology.ServiceKey{Namespace: ns, Name: name, Port: 8080}
		testkit.Eventually(ctx, t, k.String()+" served", func() bool {
			n, ok := sink.endpoints(k)
			return ok && n == 1
		})
	}
	if n := failures.Load(); n < 4 {
		t.Errorf("boom converted %d times, want >= 4 (3 failures, then success)", n)
	}
}
