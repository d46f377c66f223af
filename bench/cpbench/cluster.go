package cpbench

import (
	"context"
	"fmt"
	"net/netip"
	"strconv"
	"time"

	"golang.org/x/sync/errgroup"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/fairway-lb/fairway/controlplane/topology"
)

// servicePort is the one port of every benchmark Service.
const (
	servicePort = 8080
	portName    = "grpc"
)

// zones spread each Service's endpoints over three localities.
var zones = []string{"zone-a", "zone-b", "zone-c"}

// cluster is the harness's view of the benchmark's objects. Only the
// goroutine running Run touches it after setup.
type cluster struct {
	client kubernetes.Interface
	ns     string
	slices []*discoveryv1.EndpointSlice // latest written version, by service index
	fresh  uint32                       // last fresh address handed out
}

// restConfig loads kubeconfig with the harness's client-side rate limits.
func restConfig(kubeconfig string, qps float32, burst int) (*rest.Config, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = kubeconfig
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("fairway/cpbench: load kubeconfig: %w", err)
	}
	cfg.QPS = qps
	cfg.Burst = burst
	cfg.UserAgent = "fairway-cpbench"
	return cfg, nil
}

// serviceName is the name of the i-th Service.
func serviceName(i int) string { return fmt.Sprintf("svc-%04d", i) }

// resourceName is the xDS resource name of the i-th Service's port.
func resourceName(ns string, i int) string {
	return topology.ServiceKey{Namespace: ns, Name: serviceName(i), Port: servicePort}.ResourceName()
}

// initialAddress is the address of endpoint j of service i: 10.0.0.0/9,
// numbered from 10.0.0.1.
func initialAddress(i, j, perService int) string {
	g := uint32(i*perService + j + 1)
	return netip.AddrFrom4([4]byte{10, byte(g >> 16 & 0x7f), byte(g >> 8), byte(g)}).String()
}

// freshAddress hands out a never-used address from 10.128.0.0/9.
func (c *cluster) freshAddress() string {
	c.fresh++
	g := c.fresh
	return netip.AddrFrom4([4]byte{10, 128 | byte(g>>16&0x7f), byte(g >> 8), byte(g)}).String()
}

// setup creates the namespace, the Services and their EndpointSlices.
func (c *cluster) setup(ctx context.Context, services, endpoints, parallelism int) error {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: c.ns, Labels: map[string]string{"app.kubernetes.io/part-of": "fairway-bench"}}}
	if _, err := c.client.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		if apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("fairway/cpbench: namespace %q exists (or is still terminating); delete it or pick another with --namespace", c.ns)
		}
		return fmt.Errorf("fairway/cpbench: create namespace: %w", err)
	}
	c.slices = make([]*discoveryv1.EndpointSlice, services)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(parallelism)
	for i := range services {
		g.Go(func() error {
			svc := &corev1.Service{
				ObjectMeta: metav1.ObjectMeta{Name: serviceName(i), Namespace: c.ns},
				Spec: corev1.ServiceSpec{
					Type: corev1.ServiceTypeClusterIP,
					Ports: []corev1.ServicePort{{
						Name: portName, Port: servicePort, TargetPort: intstr.FromInt32(servicePort), Protocol: corev1.ProtocolTCP,
					}},
				},
			}
			if _, err := c.client.CoreV1().Services(c.ns).Create(gctx, svc, metav1.CreateOptions{}); err != nil {
				return fmt.Errorf("fairway/cpbench: create service %s: %w", svc.Name, err)
			}
			created, err := c.client.DiscoveryV1().EndpointSlices(c.ns).Create(gctx, newSlice(c.ns, i, endpoints), metav1.CreateOptions{})
			if err != nil {
				return fmt.Errorf("fairway/cpbench: create endpointslice of %s: %w", svc.Name, err)
			}
			c.slices[i] = created
			return nil
		})
	}
	return g.Wait()
}

// newSlice is the i-th Service's EndpointSlice with every endpoint ready.
func newSlice(ns string, i, endpoints int) *discoveryv1.EndpointSlice {
	s := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Name:      serviceName(i) + "-a",
			Namespace: ns,
			Labels: map[string]string{
				discoveryv1.LabelServiceName: serviceName(i),
				discoveryv1.LabelManagedBy:   "fairway-cpbench",
			},
		},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports: []discoveryv1.EndpointPort{{
			Name: ptr(portName), Port: ptr[int32](servicePort), Protocol: ptr(corev1.ProtocolTCP),
		}},
	}
	for j := range endpoints {
		s.Endpoints = append(s.Endpoints, discoveryv1.Endpoint{
			Addresses:  []string{initialAddress(i, j, endpoints)},
			Conditions: conditions(true),
			Zone:       ptr(zones[j%len(zones)]),
			NodeName:   ptr("node-" + strconv.Itoa(j%len(zones))),
			TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: ns, Name: serviceName(i) + "-" + strconv.Itoa(j)},
		})
	}
	return s
}

func conditions(ready bool) discoveryv1.EndpointConditions {
	return discoveryv1.EndpointConditions{Ready: ptr(ready), Serving: ptr(ready), Terminating: ptr(false)}
}

// write sends the i-th Service's changed slice and keeps what the API
// returns for the next change.
func (c *cluster) write(ctx context.Context, i int, s *discoveryv1.EndpointSlice) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	updated, err := c.client.DiscoveryV1().EndpointSlices(c.ns).Update(ctx, s, metav1.UpdateOptions{})
	if err != nil {
		return fmt.Errorf("fairway/cpbench: update endpointslice %s: %w", s.Name, err)
	}
	c.slices[i] = updated
	return nil
}

// cleanup removes the benchmark's objects from an external cluster: the
// EndpointSlices and Services first (a cluster without a namespace
// controller never finishes deleting a namespace's contents), then the
// namespace.
func (c *cluster) cleanup(ctx context.Context, parallelism int) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	err := c.client.DiscoveryV1().EndpointSlices(c.ns).DeleteCollection(ctx, metav1.DeleteOptions{},
		metav1.ListOptions{LabelSelector: discoveryv1.LabelManagedBy + "=fairway-cpbench"})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("fairway/cpbench: delete endpointslices: %w", err)
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(parallelism)
	for i := range c.slices {
		g.Go(func() error {
			err := c.client.CoreV1().Services(c.ns).Delete(gctx, serviceName(i), metav1.DeleteOptions{})
			if err != nil && !apierrors.IsNotFound(err) {
				return fmt.Errorf("fairway/cpbench: delete service %s: %w", serviceName(i), err)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	err = c.client.CoreV1().Namespaces().Delete(ctx, c.ns, metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("fairway/cpbench: delete namespace %s: %w", c.ns, err)
	}
	return nil
}

func ptr[T any](v T) *T { return &v }
