package convert

import (
	"testing"

	"google.golang.org/protobuf/proto"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/fairway-lb/fairway/controlplane/translate"
)

// FuzzService builds a Service and an EndpointSlice from arbitrary strings
// and numbers, including bytes that are not valid UTF-8 (which a YAML file
// cannot carry but a Go caller or a protobuf client can), and converts them:
// whatever comes out passes topology.Service.Validate and all its xDS
// resources marshal.
func FuzzService(f *testing.F) {
	f.Add("default", "echo", "p2c", "echo-1", "zone-a", "node-a", "echo-1", "shard", "s1", "1", int32(80), int32(8080), "10.0.0.1")
	f.Add("b.c", "a", `[{"p2c":{"x":"`+"\xff"+`"}}]`, "h\xff", "z\xff", "n", "", "k", "v\xff", "0", int32(-1), int32(70000), "fd00::1")
	f.Fuzz(func(t *testing.T, ns, name, strategy, hostname, zone, node, pod, labelKey, labelValue, weight string, sPort, ePort int32, addr string) {
		svc := service(ns, name, map[string]string{AnnotationStrategy: strategy}, svcPort{"grpc", sPort, ""})
		e := discoveryv1.Endpoint{Addresses: []string{addr}, Hostname: &hostname, Zone: &zone, NodeName: &node}
		if pod != "" {
			e.TargetRef = podEP(addr, pod, zone).TargetRef
		}
		at := v4
		if len(addr) > 0 && addr[0] == 'f' {
			at = v6
		}
		sl := endpointSlice(ns, "s", name, at, []discoveryv1.EndpointPort{slicePort("grpc", ePort)}, e)
		sl.Labels = map[string]string{discoveryv1.LabelServiceName: name, LabelPrefix + labelKey: labelValue}
		sl = withAnnotations(sl, AnnotationWeight, weight)
		got, _ := Service(svc, []*discoveryv1.EndpointSlice{sl}, Options{})
		for _, s := range got {
			if err := s.Validate(); err != nil {
				t.Fatalf("converted service fails Validate: %v", err)
			}
			res := translate.Resources(s)
			for _, m := range []proto.Message{res.Cluster, res.LoadAssignment, res.RouteConfig, res.Listeners[0], res.Listeners[1]} {
				if _, err := proto.Marshal(m); err != nil {
					t.Fatalf("a %s of %v does not marshal: %v", proto.MessageName(m), s.Key, err)
				}
			}
		}
	})
}
