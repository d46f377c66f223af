package file

import (
	"os"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/fairway-lb/fairway/controlplane/convert"
	"github.com/fairway-lb/fairway/controlplane/topology"
	"github.com/fairway-lb/fairway/controlplane/translate"
	"github.com/fairway-lb/fairway/wire"
)

// FuzzDecodeToXDS feeds a file through the whole control-plane path: Decode,
// convert.All, translate, proto marshaling. Whatever the file, nothing
// panics, every converted service passes topology.Service.Validate, every
// resource marshals, and every resource name reads back as its service's key
// with wire.ParseResourceName, one service per name.
func FuzzDecodeToXDS(f *testing.F) {
	for _, seed := range []string{
		svcYAML("echo", "10.0.0.1", "10.0.0.2"),
		svcYAML("a", "10.0.0.1") + "---\n" + svcYAML("b", "fd00::1"),
		`apiVersion: v1
kind: Service
metadata:
  name: echo
  annotations: {fairway.io/strategy: '[{"shard":{"label":"tenant"}},{"p2c":{}}]', fairway.io/slow-start-window: 30s}
spec: {ports: [{name: grpc, port: 80}, {name: dns, port: 53, protocol: UDP}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: echo-1
  labels: {kubernetes.io/service-name: echo, label.fairway.io/tenant: t1}
  annotations: {fairway.io/endpoint-weights: "echo-1=3,10.0.0.2=2"}
addressType: IPv4
ports: [{name: grpc, port: 8080}]
endpoints:
- {addresses: [10.0.0.1], zone: zone-a, nodeName: node-a, targetRef: {kind: Pod, name: echo-1}}
- {addresses: [10.0.0.2], hostname: h2, conditions: {ready: false, serving: true, terminating: true}}
`,
		`{"apiVersion": "v1", "kind": "List", "items": [{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"}, "spec": {"ports": [{"port": 70000}]}}]}`,
	} {
		f.Add([]byte(seed))
	}
	if b, err := os.ReadFile("../../examples/echo.yaml"); err == nil {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		objs, err := Decode(data)
		if err != nil {
			return
		}
		services, _ := convert.All(objs.Services, objs.EndpointSlices, convert.Options{})
		seen := map[string]bool{}
		for _, svc := range services {
			if err := svc.Validate(); err != nil {
				t.Fatalf("converted service fails Validate: %v", err)
			}
			if seen[svc.Key.ResourceName()] {
				t.Fatalf("two services named %s", svc.Key.ResourceName())
			}
			seen[svc.Key.ResourceName()] = true
			checkResources(t, svc)
		}
	})
}

// checkResources translates svc and checks that every resource marshals and
// is named after svc.Key.
func checkResources(t *testing.T, svc *topology.Service) {
	t.Helper()
	zones := map[string]float64{}
	for _, ep := range svc.Endpoints {
		zones[ep.Zone] = 1 / float64(len(svc.Endpoints))
	}
	res := translate.Resources(svc)
	cluster := translate.Cluster(svc, translate.WithCallerZones(zones))
	msgs := []proto.Message{cluster, res.Cluster, res.LoadAssignment, res.RouteConfig, res.Listeners[0], res.Listeners[1]}
	for _, m := range msgs {
		if _, err := proto.Marshal(m); err != nil {
			t.Fatalf("a %s of %v does not marshal: %v", proto.MessageName(m), svc.Key, err)
		}
	}
	for _, name := range []string{res.Cluster.GetName(), res.LoadAssignment.GetClusterName(), res.RouteConfig.GetName(), res.Listeners[0].GetName(), res.Listeners[1].GetName()} {
		if k, err := wire.ParseResourceName(name); err != nil || k != svc.Key {
			t.Fatalf("resource name %q of %v reads back as %v, %v", name, svc.Key, k, err)
		}
	}
}
