package convert

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/fairway-lb/fairway/controlplane/topology"
)

func ptr[T any](v T) *T { return &v }

// svcPort is a Service port: name, number, protocol ("" = TCP).
type svcPort struct {
	name  string
	port  int32
	proto corev1.Protocol
}

func service(ns, name string, ann map[string]string, ports ...svcPort) *corev1.Service {
	s := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Annotations: ann},
		Spec:       corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP, ClusterIP: "10.0.0.1"},
	}
	for _, p := range ports {
		s.Spec.Ports = append(s.Spec.Ports, corev1.ServicePort{Name: p.name, Port: p.port, Protocol: p.proto})
	}
	return s
}

func slicePort(name string, port int32) discoveryv1.EndpointPort {
	return discoveryv1.EndpointPort{Name: ptr(name), Port: ptr(port), Protocol: ptr(corev1.ProtocolTCP)}
}

func endpointSlice(ns, name, svc string, at discoveryv1.AddressType, ports []discoveryv1.EndpointPort, eps ...discoveryv1.Endpoint) *discoveryv1.EndpointSlice {
	s := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: name},
		AddressType: at,
		Ports:       ports,
		Endpoints:   eps,
	}
	if svc != "" {
		s.Labels = map[string]string{discoveryv1.LabelServiceName: svc}
	}
	return s
}

func withLabels(s *discoveryv1.EndpointSlice, kv ...string) *discoveryv1.EndpointSlice {
	for i := 0; i < len(kv); i += 2 {
		s.Labels[kv[i]] = kv[i+1]
	}
	return s
}

func withAnnotations(s *discoveryv1.EndpointSlice, kv ...string) *discoveryv1.EndpointSlice {
	s.Annotations = map[string]string{}
	for i := 0; i < len(kv); i += 2 {
		s.Annotations[kv[i]] = kv[i+1]
	}
	return s
}

// podEP is a ready endpoint of pod NAME with ADDR in ZONE.
func podEP(addr, pod, zone string) discoveryv1.Endpoint {
	return discoveryv1.Endpoint{
		Addresses:  []string{addr},
		Conditions: discoveryv1.EndpointConditions{Ready: ptr(true), Serving: ptr(true), Terminating: ptr(false)},
		Zone:       ptr(zone),
		NodeName:   ptr("node-" + zone),
		TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: "default", Name: pod},
	}
}

func conds(e discoveryv1.Endpoint, ready, serving, terminating *bool) discoveryv1.Endpoint {
	e.Conditions = discoveryv1.EndpointConditions{Ready: ready, Serving: serving, Terminating: terminating}
	return e
}

// ep is the topology endpoint podEP converts to.
func ep(addr string, port int32, pod, zone string) topology.Endpoint {
	return topology.Endpoint{Address: addr, Port: port, Zone: zone, Node: "node-" + zone, Hostname: pod, Ready: true, Serving: true, Weight: 1}
}

func state(e topology.Endpoint, ready, serving, terminating bool) topology.Endpoint {
	e.Ready, e.Serving, e.Terminating = ready, serving, terminating
	return e
}

func weight(e topology.Endpoint, w uint32) topology.Endpoint {
	e.Weight = w
	return e
}

func labels(e topology.Endpoint, kv ...string) topology.Endpoint {
	e.Labels = map[string]string{}
	for i := 0; i < len(kv); i += 2 {
		e.Labels[kv[i]] = kv[i+1]
	}
	return e
}

func topoSvc(ns, name string, port int32, eps ...topology.Endpoint) *topology.Service {
	if eps == nil {
		eps = []topology.Endpoint{}
	}
	return &topology.Service{Key: topology.ServiceKey{Namespace: ns, Name: name, Port: port}, Policy: topology.DefaultPolicy(), Endpoints: eps}
}

func withPolicy(s *topology.Service, f func(p *topology.Policy)) *topology.Service {
	f(&s.Policy)
	return s
}

const (
	v4 = discoveryv1.AddressTypeIPv4
	v6 = discoveryv1.AddressTypeIPv6
)

var grpcPort = []discoveryv1.EndpointPort{slicePort("grpc", 8080)}

func TestService_Conversion(t *testing.T) {
	echo := service("default", "echo", nil, svcPort{"grpc", 80, ""})
	tests := []struct {
		name         string
		svc          *corev1.Service
		slices       []*discoveryv1.EndpointSlice
		opts         Options
		want         []*topology.Service
		wantProblems []Problem
	}{
		{
			name: "several slices per service",
			svc:  echo,
			slices: []*discoveryv1.EndpointSlice{
				endpointSlice("default", "echo-b", "echo", v4, grpcPort, podEP("10.0.0.3", "echo-3", "zone-c")),
				endpointSlice("default", "echo-a", "echo", v4, grpcPort, podEP("10.0.0.2", "echo-2", "zone-b"), podEP("10.0.0.1", "echo-1", "zone-a")),
			},
			want: []*topology.Service{topoSvc("default", "echo", 80,
				ep("10.0.0.1", 8080, "echo-1", "zone-a"), ep("10.0.0.2", 8080, "echo-2", "zone-b"), ep("10.0.0.3", 8080, "echo-3", "zone-c"))},
		},
		{
			name: "no slices yet: the service exists with no endpoints",
			svc:  echo,
			want: []*topology.Service{topoSvc("default", "echo", 80)},
		},
		{
			name: "same address in two slices with the same conditions is kept once, silently",
			svc:  echo,
			slices: []*discoveryv1.EndpointSlice{
				endpointSlice("default", "echo-a", "echo", v4, grpcPort, podEP("10.0.0.1", "echo-1", "zone-a")),
				endpointSlice("default", "echo-b", "echo", v4, grpcPort, podEP("10.0.0.1", "echo-1", "zone-a")),
			},
			want: []*topology.Service{topoSvc("default", "echo", 80, ep("10.0.0.1", 8080, "echo-1", "zone-a"))},
		},
		{
			name: "same address twice in one slice is kept once",
			svc:  echo,
			slices: []*discoveryv1.EndpointSlice{
				endpointSlice("default", "echo-a", "echo", v4, grpcPort, podEP("10.0.0.1", "echo-1", "zone-a"), podEP("10.0.0.1", "echo-1", "zone-a")),
			},
			want: []*topology.Service{topoSvc("default", "echo", 80, ep("10.0.0.1", 8080, "echo-1", "zone-a"))},
		},
		{
			name: "same address in two slices with conflicting conditions: the ready one wins, reported",
			svc:  echo,
			slices: []*discoveryv1.EndpointSlice{
				endpointSlice("default", "echo-a", "echo", v4, grpcPort, conds(podEP("10.0.0.1", "echo-1", "zone-a"), ptr(false), ptr(false), ptr(true))),
				endpointSlice("default", "echo-b", "echo", v4, grpcPort, podEP("10.0.0.1", "echo-1", "zone-a")),
			},
			want: []*topology.Service{topoSvc("default", "echo", 80, ep("10.0.0.1", 8080, "echo-1", "zone-a"))},
			wantProblems: []Problem{{
				Namespace: "default", Service: "echo", Object: "EndpointSlice default/echo-b", Reason: ReasonConflictingEndpoint,
				Message: "endpoint 10.0.0.1:8080 also appears in EndpointSlice echo-a with other conditions (ready=true serving=true terminating=false here, ready=false serving=false terminating=true there); using the ready=true serving=true terminating=false one from EndpointSlice echo-b",
			}},
		},
		{
			name: "conflict resolution does not depend on slice order",
			svc:  echo,
			slices: []*discoveryv1.EndpointSlice{
				endpointSlice("default", "echo-b", "echo", v4, grpcPort, podEP("10.0.0.1", "echo-1", "zone-a")),
				endpointSlice("default", "echo-a", "echo", v4, grpcPort, conds(podEP("10.0.0.1", "echo-1", "zone-a"), ptr(false), ptr(false), ptr(true))),
			},
			want: []*topology.Service{topoSvc("default", "echo", 80, ep("10.0.0.1", 8080, "echo-1", "zone-a"))},
			wantProblems: []Problem{{
				Namespace: "default", Service: "echo", Object: "EndpointSlice default/echo-b", Reason: ReasonConflictingEndpoint,
				Message: "endpoint 10.0.0.1:8080 also appears in EndpointSlice echo-a with other conditions (ready=true serving=true terminating=false here, ready=false serving=false terminating=true there); using the ready=true serving=true terminating=false one from EndpointSlice echo-b",
			}},
		},
		{
			name: "conflict between two not-ready copies prefers the serving one",
			svc:  echo,
			slices: []*discoveryv1.EndpointSlice{
				endpointSlice("default", "echo-a", "echo", v4, grpcPort, conds(podEP("10.0.0.1", "echo-1", "zone-a"), ptr(false), ptr(false), ptr(true))),
				endpointSlice("default", "echo-b", "echo", v4, grpcPort, conds(podEP("10.0.0.1", "echo-1", "zone-a"), ptr(false), ptr(true), ptr(true))),
			},
			want: []*topology.Service{topoSvc("default", "echo", 80, state(ep("10.0.0.1", 8080, "echo-1", "zone-a"), false, true, true))},
			wantProblems: []Problem{{
				Namespace: "default", Service: "echo", Object: "EndpointSlice default/echo-b", Reason: ReasonConflictingEndpoint,
				Message: "endpoint 10.0.0.1:8080 also appears in EndpointSlice echo-a with other conditions (ready=false serving=true terminating=true here, ready=false serving=false terminating=true there); using the ready=false serving=true terminating=true one from EndpointSlice echo-b",
			}},
		},
		{
			name: "named ports: each Service port matches the slice port of the same name",
			svc:  service("default", "multi", nil, svcPort{"http", 80, ""}, svcPort{"grpc", 9000, ""}),
			slices: []*discoveryv1.EndpointSlice{
				endpointSlice("default", "multi-a", "multi", v4,
					[]discoveryv1.EndpointPort{slicePort("grpc", 9090), slicePort("http", 8080)},
					podEP("10.0.0.1", "multi-1", "zone-a")),
			},
			want: []*topology.Service{
				topoSvc("default", "multi", 80, ep("10.0.0.1", 8080, "multi-1", "zone-a")),
				topoSvc("default", "multi", 9000, ep("10.0.0.1", 9090, "multi-1", "zone-a")),
			},
		},
		{
			name: "unnamed single-port Service matches the slice port with an empty name",
			svc:  service("default", "plain", nil, svcPort{"", 80, ""}),
			slices: []*discoveryv1.EndpointSlice{
				endpointSlice("default", "plain-a", "plain", v4, []discoveryv1.EndpointPort{slicePort("", 8080)}, podEP("10.0.0.1", "plain-1", "zone-a")),
			},
			want: []*topology.Service{topoSvc("default", "plain", 80, ep("10.0.0.1", 8080, "plain-1", "zone-a"))},
		},
		{
			name: "slice port with nil name and nil protocol counts as unnamed TCP",
			svc:  service("default", "plain", nil, svcPort{"", 80, ""}),
			slices: []*discoveryv1.EndpointSlice{
				endpointSlice("default", "plain-a", "plain", v4, []discoveryv1.EndpointPort{{Port: ptr(int32(8080))}}, podEP("10.0.0.1", "plain-1", "zone-a")),
			},
			want: []*topology.Service{topoSvc("default", "plain", 80, ep("10.0.0.1", 8080, "plain-1", "zone-a"))},
		},
		{
			name: "slice port matching no Service port is reported once, the matching one served",
			svc:  echo,
			slices: []*discoveryv1.EndpointSlice{
				endpointSlice("default", "echo-a", "echo", v4,
					[]discoveryv1.EndpointPort{slicePort("grpc", 8080), slicePort("metrics", 9100)},
					podEP("10.0.0.1", "echo-1", "zone-a"), podEP("10.0.0.2", "echo-2", "zone-b")),
			},
			want: []*topology.Service{topoSvc("default", "echo", 80, ep("10.0.0.1", 8080, "echo-1", "zone-a"), ep("10.0.0.2", 8080, "echo-2", "zone-b"))},
			wantProblems: []Problem{{
				Namespace: "default", Service: "echo", Object: "EndpointSlice default/echo-a", Reason: ReasonUnmatchedPort,
				Message: `port "metrics" matches no TCP port of the Service; ignoring it`,
			}},
		},
		{
			name: "slice port without a number is reported",
			svc:  echo,
			slices: []*discoveryv1.EndpointSlice{
				endpointSlice("default", "echo-a", "echo", v4, []discoveryv1.EndpointPort{{Name: ptr("grpc")}}, podEP("10.0.0.1", "echo-1", "zone-a")),
			},
			want: []*topology.Service{topoSvc("default", "echo", 80)},
			wantProblems: []Problem{{
				Namespace: "default", Service: "echo", Object: "EndpointSlice default/echo-a", Reason: ReasonMissingPort,
				Message: `port "grpc" has no port number; ignoring it`,
			}},
		},
		{
			name: "UDP ports are skipped silently",
			svc:  service("kube-system", "dns", nil, svcPort{"dns", 53, corev1.ProtocolUDP}, svcPort{"dns-tcp", 53, corev1.ProtocolTCP}),
			slices: []*discoveryv1.EndpointSlice{
				endpointSlice("kube-system", "dns-a", "dns", v4,
					[]discoveryv1.EndpointPort{{Name: ptr("dns"), Port: ptr(int32(53)), Protocol: ptr(corev1.ProtocolUDP)}, slicePort("dns-tcp", 53)},
					podEP("10.0.0.1", "dns-1", "zone-a")),
			},
			want: []*topology.Service{topoSvc("kube-system", "dns", 53, ep("10.0.0.1", 53, "dns-1", "zone-a"))},
		},
		{
			name: "IPv4 and IPv6 slices of a dual-stack service",
			svc:  echo,
			slices: []*discoveryv1.EndpointSlice{
				endpointSlice("default", "echo-v4", "echo", v4, grpcPort, podEP("10.0.0.1", "echo-1", "zone-a")),
				endpointSlice("default", "echo-v6", "echo", v6, grpcPort, podEP("fd00:0:0:0::1", "echo-1", "zone-a")),
			},
			want: []*topology.Service{topoSvc("default", "echo", 80, ep("10.0.0.1", 8080, "echo-1", "zone-a"), ep("fd00::1", 8080, "echo-1", "zone-a"))},
		},
		{
			name: "FQDN slice is skipped and reported",
			svc:  echo,
			slices: []*discoveryv1.EndpointSlice{
				endpointSlice("default", "echo-fqdn", "echo", discoveryv1.AddressTypeFQDN, grpcPort, podEP("backend.example.com", "echo-1", "zone-a")),
				endpointSlice("default", "echo-v4", "echo", v4, grpcPort, podEP("10.0.0.1", "echo-1", "zone-a")),
			},
			want: []*topology.Service{topoSvc("default", "echo", 80, ep("10.0.0.1", 8080, "echo-1", "zone-a"))},
			wantProblems: []Problem{{
				Namespace: "default", Service: "echo", Object: "EndpointSlice default/echo-fqdn", Reason: ReasonUnsupportedAddressType,
				Message: `address type "FQDN" is not supported (only IPv4 and IPv6); skipping the EndpointSlice`,
			}},
		},
		{
			name: "invalid or mismatched addresses are skipped and reported",
			svc:  echo,
			slices: []*discoveryv1.EndpointSlice{
				endpointSlice("default", "echo-a", "echo", v4, grpcPort,
					podEP("not-an-ip", "echo-1", "zone-a"), podEP("fd00::1", "echo-2", "zone-a"),
					discoveryv1.Endpoint{}, podEP("10.0.0.3", "echo-3", "zone-a")),
			},
			want: []*topology.Service{topoSvc("default", "echo", 80, ep("10.0.0.3", 8080, "echo-3", "zone-a"))},
			wantProblems: []Problem{
				{Namespace: "default", Service: "echo", Object: "EndpointSlice default/echo-a", Reason: ReasonInvalidAddress, Message: `endpoint address "not-an-ip" is not an IPv4 address; skipping it`},
				{Namespace: "default", Service: "echo", Object: "EndpointSlice default/echo-a", Reason: ReasonInvalidAddress, Message: `endpoint address "fd00::1" is not an IPv4 address; skipping it`},
				{Namespace: "default", Service: "echo", Object: "EndpointSlice default/echo-a", Reason: ReasonInvalidAddress, Message: `endpoint 2 has no address; skipping it`},
			},
		},
		{
			name: "missing zone, node and target",
			svc:  echo,
			slices: []*discoveryv1.EndpointSlice{
				endpointSlice("default", "echo-a", "echo", v4, grpcPort, discoveryv1.Endpoint{Addresses: []string{"10.0.0.1"}}),
			},
			want: []*topology.Service{topoSvc("default", "echo", 80, topology.Endpoint{Address: "10.0.0.1", Port: 8080, Ready: true, Serving: true, Weight: 1})},
		},
		{
			name: "hostname from targetRef when a Pod, else endpoint hostname",
			svc:  echo,
			slices: []*discoveryv1.EndpointSlice{
				endpointSlice("default", "echo-a", "echo", v4, grpcPort,
					discoveryv1.Endpoint{Addresses: []string{"10.0.0.1"}, Hostname: ptr("host-1"), TargetRef: &corev1.ObjectReference{Kind: "Pod", Name: "pod-1"}},
					discoveryv1.Endpoint{Addresses: []string{"10.0.0.2"}, Hostname: ptr("host-2"), TargetRef: &corev1.ObjectReference{Kind: "VirtualMachine", Name: "vm-2"}},
					discoveryv1.Endpoint{Addresses: []string{"10.0.0.3"}, Hostname: ptr("host-3")},
				),
			},
			want: []*topology.Service{topoSvc("default", "echo", 80,
				topology.Endpoint{Address: "10.0.0.1", Port: 8080, Hostname: "pod-1", Ready: true, Serving: true, Weight: 1},
				topology.Endpoint{Address: "10.0.0.2", Port: 8080, Hostname: "host-2", Ready: true, Serving: true, Weight: 1},
				topology.Endpoint{Address: "10.0.0.3", Port: 8080, Hostname: "host-3", Ready: true, Serving: true, Weight: 1},
			)},
		},
		{
			name: "nil conditions: ready nil is ready, serving nil follows ready, terminating nil is false",
			svc:  echo,
			slices: []*discoveryv1.EndpointSlice{
				endpointSlice("default", "echo-a", "echo", v4, grpcPort,
					conds(podEP("10.0.0.1", "all-nil", "zone-a"), nil, nil, nil),
					conds(podEP("10.0.0.2", "not-ready-serving-nil", "zone-a"), ptr(false), nil, nil),
					conds(podEP("10.0.0.3", "ready-nil-not-serving", "zone-a"), nil, ptr(false), nil),
					conds(podEP("10.0.0.4", "ready-nil-terminating", "zone-a"), nil, nil, ptr(true)),
				),
			},
			want: []*topology.Service{topoSvc("default", "echo", 80,
				state(ep("10.0.0.1", 8080, "all-nil", "zone-a"), true, true, false),
				state(ep("10.0.0.2", 8080, "not-ready-serving-nil", "zone-a"), false, false, false),
				state(ep("10.0.0.3", 8080, "ready-nil-not-serving", "zone-a"), true, false, false),
				state(ep("10.0.0.4", 8080, "ready-nil-terminating", "zone-a"), true, true, true),
			)},
		},
		{
			name: "terminating but serving endpoint is kept with its conditions",
			svc:  echo,
			slices: []*discoveryv1.EndpointSlice{
				endpointSlice("default", "echo-a", "echo", v4, grpcPort,
					conds(podEP("10.0.0.1", "echo-1", "zone-a"), ptr(false), ptr(true), ptr(true)),
					conds(podEP("10.0.0.2", "echo-2", "zone-a"), ptr(false), ptr(false), ptr(true)),
				),
			},
			want: []*topology.Service{topoSvc("default", "echo", 80,
				state(ep("10.0.0.1", 8080, "echo-1", "zone-a"), false, true, true),
				state(ep("10.0.0.2", 8080, "echo-2", "zone-a"), false, false, true),
			)},
		},
		{
			name: "ExternalName Service gives nothing",
			svc: &corev1.Service{
				ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "ext"},
				Spec:       corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ExternalName: "example.com", Ports: []corev1.ServicePort{{Port: 80}}},
			},
			slices: []*discoveryv1.EndpointSlice{endpointSlice("default", "ext-a", "ext", v4, []discoveryv1.EndpointPort{slicePort("", 80)}, podEP("10.0.0.1", "x", "zone-a"))},
		},
		{
			name: "headless Service is converted like any other",
			svc: func() *corev1.Service {
				s := service("default", "headless", nil, svcPort{"grpc", 8080, ""})
				s.Spec.ClusterIP = corev1.ClusterIPNone
				return s
			}(),
			slices: []*discoveryv1.EndpointSlice{endpointSlice("default", "headless-a", "headless", v4, grpcPort, podEP("10.0.0.1", "h-1", "zone-a"))},
			want:   []*topology.Service{topoSvc("default", "headless", 8080, ep("10.0.0.1", 8080, "h-1", "zone-a"))},
		},
		{
			name:   "Service without ports gives nothing",
			svc:    service("default", "noports", nil),
			slices: []*discoveryv1.EndpointSlice{endpointSlice("default", "noports-a", "noports", v4, nil, podEP("10.0.0.1", "n-1", "zone-a"))},
			want:   []*topology.Service{},
		},
		{
			name: "slice of another Service is reported and skipped",
			svc:  echo,
			slices: []*discoveryv1.EndpointSlice{
				endpointSlice("default", "other-a", "other", v4, grpcPort, podEP("10.0.0.9", "other-1", "zone-a")),
				endpointSlice("prod", "echo-a", "echo", v4, grpcPort, podEP("10.0.0.8", "echo-8", "zone-a")),
				endpointSlice("default", "echo-a", "echo", v4, grpcPort, podEP("10.0.0.1", "echo-1", "zone-a")),
			},
			want: []*topology.Service{topoSvc("default", "echo", 80, ep("10.0.0.1", 8080, "echo-1", "zone-a"))},
			wantProblems: []Problem{
				{Namespace: "default", Service: "echo", Object: "EndpointSlice prod/echo-a", Reason: ReasonForeignEndpointSlice, Message: "the EndpointSlice does not belong to Service default/echo; skipping it"},
				{Namespace: "default", Service: "echo", Object: "EndpointSlice default/other-a", Reason: ReasonForeignEndpointSlice, Message: "the EndpointSlice does not belong to Service default/echo; skipping it"},
			},
		},
		{
			name: "service policy from annotations, one copy per port",
			svc: service("default", "tuned", map[string]string{
				AnnotationLBPolicy:        "round_robin",
				AnnotationStrategy:        "zone_affinity,p2c",
				AnnotationSlowStartWindow: "30s",
			}, svcPort{"a", 80, ""}, svcPort{"b", 81, ""}),
			want: []*topology.Service{
				withPolicy(topoSvc("default", "tuned", 80), func(p *topology.Policy) {
					p.LB = topology.RoundRobin
					p.Strategy = `[{"zone_affinity":{}},{"p2c":{}}]`
					p.SlowStart = &topology.SlowStart{Window: 30 * time.Second, Aggression: 1, MinWeightPercent: 10}
				}),
				withPolicy(topoSvc("default", "tuned", 81), func(p *topology.Policy) {
					p.LB = topology.RoundRobin
					p.Strategy = `[{"zone_affinity":{}},{"p2c":{}}]`
					p.SlowStart = &topology.SlowStart{Window: 30 * time.Second, Aggression: 1, MinWeightPercent: 10}
				}),
			},
		},
		{
			name: "invalid service annotation is reported on the Service, default used",
			svc:  service("default", "echo", map[string]string{AnnotationChoiceCount: "1"}, svcPort{"grpc", 80, ""}),
			slices: []*discoveryv1.EndpointSlice{
				endpointSlice("default", "echo-a", "echo", v4, grpcPort, podEP("10.0.0.1", "echo-1", "zone-a")),
			},
			want: []*topology.Service{topoSvc("default", "echo", 80, ep("10.0.0.1", 8080, "echo-1", "zone-a"))},
			wantProblems: []Problem{{
				Namespace: "default", Service: "echo", Object: "Service default/echo", Reason: ReasonInvalidAnnotation,
				Message: `annotation fairway.io/choice-count: invalid value "1" (want an integer in 2-100); using default 2`,
			}},
		},
		{
			name: "slice weight applies to every endpoint of the slice",
			svc:  echo,
			slices: []*discoveryv1.EndpointSlice{
				withAnnotations(endpointSlice("default", "echo-a", "echo", v4, grpcPort, podEP("10.0.0.1", "echo-1", "zone-a"), podEP("10.0.0.2", "echo-2", "zone-a")), AnnotationWeight, "5"),
				endpointSlice("default", "echo-b", "echo", v4, grpcPort, podEP("10.0.0.3", "echo-3", "zone-b")),
			},
			want: []*topology.Service{topoSvc("default", "echo", 80,
				weight(ep("10.0.0.1", 8080, "echo-1", "zone-a"), 5), weight(ep("10.0.0.2", 8080, "echo-2", "zone-a"), 5), ep("10.0.0.3", 8080, "echo-3", "zone-b"))},
		},
		{
			name: "invalid slice weight is reported, default 1 used",
			svc:  echo,
			slices: []*discoveryv1.EndpointSlice{
				withAnnotations(endpointSlice("default", "echo-a", "echo", v4, grpcPort, podEP("10.0.0.1", "echo-1", "zone-a")), AnnotationWeight, "0"),
			},
			want: []*topology.Service{topoSvc("default", "echo", 80, ep("10.0.0.1", 8080, "echo-1", "zone-a"))},
			wantProblems: []Problem{{
				Namespace: "default", Service: "echo", Object: "EndpointSlice default/echo-a", Reason: ReasonInvalidAnnotation,
				Message: `annotation fairway.io/weight: invalid value "0" (want an integer in 1-10000); using default 1`,
			}},
		},
		{
			name: "invalid slice weight and endpoint weights: reported in that order",
			svc:  echo,
			slices: []*discoveryv1.EndpointSlice{
				withAnnotations(endpointSlice("default", "echo-a", "echo", v4, grpcPort, podEP("10.0.0.1", "echo-1", "zone-a")),
					AnnotationWeight, "0", AnnotationEndpointWeights, "echo-1"),
			},
			want: []*topology.Service{topoSvc("default", "echo", 80, ep("10.0.0.1", 8080, "echo-1", "zone-a"))},
			wantProblems: []Problem{
				{Namespace: "default", Service: "echo", Object: "EndpointSlice default/echo-a", Reason: ReasonInvalidAnnotation,
					Message: `annotation fairway.io/weight: invalid value "0" (want an integer in 1-10000); using default 1`},
				{Namespace: "default", Service: "echo", Object: "EndpointSlice default/echo-a", Reason: ReasonInvalidAnnotation,
					Message: `annotation fairway.io/endpoint-weights: invalid entry "echo-1" (want KEY=N); ignoring it, the endpoint keeps its default weight`},
			},
		},
		{
			name: "endpoint weights by targetRef name, hostname and address override the slice weight; bad entries reported",
			svc:  echo,
			slices: []*discoveryv1.EndpointSlice{
				withAnnotations(endpointSlice("default", "echo-a", "echo", v4, grpcPort,
					podEP("10.0.0.1", "echo-1", "zone-a"),
					discoveryv1.Endpoint{Addresses: []string{"10.0.0.2"}, Hostname: ptr("host-2")},
					discoveryv1.Endpoint{Addresses: []string{"10.0.0.3"}},
					discoveryv1.Endpoint{Addresses: []string{"10.0.0.4"}},
				), AnnotationWeight, "2", AnnotationEndpointWeights, "echo-1=10, host-2=20,10.0.0.3=30,10.0.0.4=huge,=5"),
			},
			want: []*topology.Service{topoSvc("default", "echo", 80,
				weight(ep("10.0.0.1", 8080, "echo-1", "zone-a"), 10),
				topology.Endpoint{Address: "10.0.0.2", Port: 8080, Hostname: "host-2", Ready: true, Serving: true, Weight: 20},
				topology.Endpoint{Address: "10.0.0.3", Port: 8080, Ready: true, Serving: true, Weight: 30},
				topology.Endpoint{Address: "10.0.0.4", Port: 8080, Ready: true, Serving: true, Weight: 2},
			)},
			wantProblems: []Problem{
				{Namespace: "default", Service: "echo", Object: "EndpointSlice default/echo-a", Reason: ReasonInvalidAnnotation,
					Message: `annotation fairway.io/endpoint-weights: invalid entry "10.0.0.4=huge" (want an integer in 1-10000); ignoring it, the endpoint keeps its default weight`},
				{Namespace: "default", Service: "echo", Object: "EndpointSlice default/echo-a", Reason: ReasonInvalidAnnotation,
					Message: `annotation fairway.io/endpoint-weights: invalid entry "=5" (want KEY=N); ignoring it, the endpoint keeps its default weight`},
			},
		},
		{
			name: "endpoint labels from label.fairway.io/ slice labels",
			svc:  echo,
			slices: []*discoveryv1.EndpointSlice{
				withLabels(endpointSlice("default", "echo-a", "echo", v4, grpcPort, podEP("10.0.0.1", "echo-1", "zone-a")),
					"label.fairway.io/shard", "3", "app", "echo", "label.fairway.io/", "ignored"),
			},
			want: []*topology.Service{topoSvc("default", "echo", 80, labels(ep("10.0.0.1", 8080, "echo-1", "zone-a"), "shard", "3"))},
		},
		{
			name: "pod labels and weight with pod watching; slice labels win; endpoint-weights win over the pod",
			svc:  echo,
			slices: []*discoveryv1.EndpointSlice{
				withAnnotations(withLabels(endpointSlice("default", "echo-a", "echo", v4, grpcPort,
					podEP("10.0.0.1", "echo-1", "zone-a"), podEP("10.0.0.2", "echo-2", "zone-a"), podEP("10.0.0.3", "echo-3", "zone-a"), podEP("10.0.0.4", "gone", "zone-a")),
					"label.fairway.io/shard", "3"), AnnotationEndpointWeights, "echo-3=7"),
			},
			opts: Options{Pod: func(ns, name string) (map[string]string, map[string]string, bool) {
				switch {
				case ns == "default" && name == "echo-1":
					return map[string]string{"shard": "9", "track": "canary"}, map[string]string{AnnotationWeight: "4"}, true
				case ns == "default" && name == "echo-2":
					return nil, map[string]string{AnnotationWeight: "lots"}, true
				case ns == "default" && name == "echo-3":
					return nil, map[string]string{AnnotationWeight: "4"}, true
				}
				return nil, nil, false
			}},
			want: []*topology.Service{topoSvc("default", "echo", 80,
				weight(labels(ep("10.0.0.1", 8080, "echo-1", "zone-a"), "shard", "3", "track", "canary"), 4),
				labels(ep("10.0.0.2", 8080, "echo-2", "zone-a"), "shard", "3"),
				weight(labels(ep("10.0.0.3", 8080, "echo-3", "zone-a"), "shard", "3"), 7),
				labels(ep("10.0.0.4", 8080, "gone", "zone-a"), "shard", "3"),
			)},
			wantProblems: []Problem{{
				Namespace: "default", Service: "echo", Object: "Pod default/echo-2", Reason: ReasonInvalidAnnotation,
				Message: `annotation fairway.io/weight: invalid value "lots" (want an integer in 1-10000); using the slice weight 1`,
			}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			svcBefore := tt.svc.DeepCopy()
			var slicesBefore []*discoveryv1.EndpointSlice
			for _, s := range tt.slices {
				slicesBefore = append(slicesBefore, s.DeepCopy())
			}

			got, problems := Service(tt.svc, tt.slices, tt.opts)
			if diff := cmp.Diff(got, tt.want, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("Service() services (-got +want):\n%s", diff)
			}
			if diff := cmp.Diff(problems, tt.wantProblems); diff != "" {
				t.Errorf("Service() problems (-got +want):\n%s", diff)
			}
			if diff := cmp.Diff(tt.svc, svcBefore); diff != "" {
				t.Errorf("Service() mutated the Service (-got +want):\n%s", diff)
			}
			if diff := cmp.Diff(tt.slices, slicesBefore); diff != "" {
				t.Errorf("Service() mutated the slices (-got +want):\n%s", diff)
			}
			for _, s := range got {
				for i := 1; i < len(s.Endpoints); i++ {
					if s.Endpoints[i-1].Key() >= s.Endpoints[i].Key() {
						t.Errorf("%s: endpoints not sorted and unique by Key: %s then %s", s.Key, s.Endpoints[i-1].Key(), s.Endpoints[i].Key())
					}
				}
			}
		})
	}
}

// TestService_Deterministic checks that the output does not depend on the
// order of the slices or of their endpoints.
func TestService_Deterministic(t *testing.T) {
	svc := service("default", "echo", nil, svcPort{"grpc", 80, ""})
	a := endpointSlice("default", "echo-a", "echo", v4, grpcPort,
		podEP("10.0.0.2", "echo-2", "zone-b"), conds(podEP("10.0.0.1", "echo-1", "zone-a"), ptr(false), nil, nil))
	b := endpointSlice("default", "echo-b", "echo", v4, grpcPort,
		podEP("10.0.0.1", "echo-1", "zone-a"), podEP("10.0.0.3", "echo-3", "zone-c"))
	c := endpointSlice("default", "echo-c", "echo", v6, grpcPort, podEP("fd00::1", "echo-1", "zone-a"))
	want, wantProblems := Service(svc, []*discoveryv1.EndpointSlice{a, b, c}, Options{})
	for _, order := range [][]*discoveryv1.EndpointSlice{{c, b, a}, {b, a, c}, {c, a, b}} {
		for range 3 {
			got, problems := Service(svc, order, Options{})
			if diff := cmp.Diff(got, want); diff != "" {
				t.Errorf("services (-got +want):\n%s", diff)
			}
			if diff := cmp.Diff(problems, wantProblems); diff != "" {
				t.Errorf("problems (-got +want):\n%s", diff)
			}
		}
	}
}

func TestServiceNameOf(t *testing.T) {
	tests := []struct {
		name   string
		labels map[string]string
		want   string
		wantOK bool
	}{
		{"labelled", map[string]string{discoveryv1.LabelServiceName: "echo"}, "echo", true},
		{"no labels", nil, "", false},
		{"empty label", map[string]string{discoveryv1.LabelServiceName: ""}, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := ServiceNameOf(&discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Labels: tt.labels}})
			if got != tt.want || ok != tt.wantOK {
				t.Errorf("ServiceNameOf() = %q, %t; want %q, %t", got, ok, tt.want, tt.wantOK)
			}
		})
	}
}

func TestAll_GroupsAndReports(t *testing.T) {
	echo := service("default", "echo", nil, svcPort{"grpc", 80, ""})
	other := service("prod", "api", nil, svcPort{"", 443, ""})
	services := []*corev1.Service{other, echo, service("default", "echo", nil, svcPort{"grpc", 99, ""})}
	slices := []*discoveryv1.EndpointSlice{
		endpointSlice("default", "echo-a", "echo", v4, grpcPort, podEP("10.0.0.1", "echo-1", "zone-a")),
		endpointSlice("default", "echo-a", "echo", v4, grpcPort, podEP("10.0.0.7", "echo-7", "zone-a")),
		endpointSlice("prod", "api-a", "api", v4, []discoveryv1.EndpointPort{slicePort("", 8443)}, podEP("10.0.1.1", "api-1", "zone-b")),
		endpointSlice("default", "nolabel", "", v4, grpcPort, podEP("10.0.0.5", "x", "zone-a")),
		endpointSlice("default", "ghost-a", "ghost", v4, grpcPort, podEP("10.0.0.6", "y", "zone-a")),
		endpointSlice("prod", "echo-b", "echo", v4, grpcPort, podEP("10.0.0.8", "z", "zone-a")),
	}
	got, problems := All(services, slices, Options{})
	want := []*topology.Service{
		topoSvc("default", "echo", 80, ep("10.0.0.1", 8080, "echo-1", "zone-a")),
		topoSvc("prod", "api", 443, ep("10.0.1.1", 8443, "api-1", "zone-b")),
	}
	if diff := cmp.Diff(got, want); diff != "" {
		t.Errorf("All() services (-got +want):\n%s", diff)
	}
	wantProblems := []Problem{
		{Namespace: "default", Service: "echo", Object: "Service default/echo", Reason: ReasonDuplicateObject, Message: "the Service appears twice; using the first"},
		{Namespace: "default", Service: "echo", Object: "EndpointSlice default/echo-a", Reason: ReasonDuplicateObject, Message: "the EndpointSlice appears twice; using the first"},
		{Namespace: "default", Object: "EndpointSlice default/nolabel", Reason: ReasonMissingServiceLabel, Message: "the EndpointSlice has no kubernetes.io/service-name label; skipping it"},
		{Namespace: "default", Object: "EndpointSlice default/ghost-a", Reason: ReasonOrphanEndpointSlice, Message: "the EndpointSlice belongs to Service default/ghost, which does not exist; skipping it"},
		{Namespace: "prod", Object: "EndpointSlice prod/echo-b", Reason: ReasonOrphanEndpointSlice, Message: "the EndpointSlice belongs to Service prod/echo, which does not exist; skipping it"},
	}
	if diff := cmp.Diff(problems, wantProblems); diff != "" {
		t.Errorf("All() problems (-got +want):\n%s", diff)
	}
}
