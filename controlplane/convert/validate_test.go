package convert

import (
	"fmt"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/fairway-lb/fairway/controlplane/topology"
)

// TestService_RejectsWhatKubernetesWould checks that every value the API
// server would reject, and every string that is not valid UTF-8, is a
// Problem and leaves out the smallest unit holding it (issue 10, findings 1
// and 6), while the rest is served.
func TestService_RejectsWhatKubernetesWould(t *testing.T) {
	good := podEP("10.0.0.1", "echo-1", "zone-a")
	withEP := func(f func(e *discoveryv1.Endpoint)) discoveryv1.Endpoint {
		e := podEP("10.0.0.2", "echo-2", "zone-a")
		f(&e)
		return e
	}
	echo := service("default", "echo", nil, svcPort{"grpc", 80, ""})
	served := []*topology.Service{topoSvc("default", "echo", 80, ep("10.0.0.1", 8080, "echo-1", "zone-a"))}
	tests := []struct {
		name        string
		svc         *corev1.Service
		slice       *discoveryv1.EndpointSlice
		pod         map[string]string // labels of every pod (Options.Pod)
		want        []*topology.Service
		wantReasons []string
	}{
		{
			name:        "strategy annotation not UTF-8: default strategy",
			svc:         service("default", "echo", map[string]string{AnnotationStrategy: `[{"p2c":{"x":"` + "\xff" + `"}}]`}, svcPort{"grpc", 80, ""}),
			want:        served,
			wantReasons: []string{ReasonInvalidAnnotation},
		},
		{
			name:        "hostname not UTF-8",
			slice:       endpointSlice("default", "s", "echo", v4, grpcPort, good, withEP(func(e *discoveryv1.Endpoint) { e.TargetRef = nil; e.Hostname = ptr("h\xff") })),
			want:        served,
			wantReasons: []string{ReasonInvalidEndpoint},
		},
		{
			name:        "hostname not an RFC 1123 label",
			slice:       endpointSlice("default", "s", "echo", v4, grpcPort, good, withEP(func(e *discoveryv1.Endpoint) { e.Hostname = ptr("a.b") })),
			want:        served,
			wantReasons: []string{ReasonInvalidEndpoint},
		},
		{
			name:        "pod name not UTF-8",
			slice:       endpointSlice("default", "s", "echo", v4, grpcPort, good, withEP(func(e *discoveryv1.Endpoint) { e.TargetRef.Name = "echo-\xff" })),
			want:        served,
			wantReasons: []string{ReasonInvalidEndpoint},
		},
		{
			name:        "node name not a DNS subdomain",
			slice:       endpointSlice("default", "s", "echo", v4, grpcPort, good, withEP(func(e *discoveryv1.Endpoint) { e.NodeName = ptr("node\xff") })),
			want:        served,
			wantReasons: []string{ReasonInvalidEndpoint},
		},
		{
			name:        "zone not UTF-8",
			slice:       endpointSlice("default", "s", "echo", v4, grpcPort, good, withEP(func(e *discoveryv1.Endpoint) { e.Zone = ptr("zone-\xff") })),
			want:        served,
			wantReasons: []string{ReasonInvalidEndpoint},
		},
		{
			name:        "slice labels not valid: left out, the valid one kept",
			slice:       withLabels(endpointSlice("default", "s", "echo", v4, grpcPort, good), LabelPrefix+"shard", "s1", LabelPrefix+"bad", "v\xff", LabelPrefix+"a:b", "x"),
			want:        []*topology.Service{topoSvc("default", "echo", 80, labels(ep("10.0.0.1", 8080, "echo-1", "zone-a"), "shard", "s1"))},
			wantReasons: []string{ReasonInvalidLabel, ReasonInvalidLabel},
		},
		{
			name:        "pod labels not valid: left out",
			pod:         map[string]string{"app": "echo", "bad\xff": "x"},
			want:        []*topology.Service{topoSvc("default", "echo", 80, labels(ep("10.0.0.1", 8080, "echo-1", "zone-a"), "app", "echo"))},
			wantReasons: []string{ReasonInvalidLabel},
		},
		{
			name: "endpoint ports out of range: ignored",
			svc:  service("default", "echo", nil, svcPort{"grpc", 80, ""}, svcPort{"a", 81, ""}, svcPort{"b", 82, ""}, svcPort{"c", 83, ""}),
			slice: endpointSlice("default", "s", "echo", v4,
				[]discoveryv1.EndpointPort{slicePort("grpc", 8080), slicePort("a", 70000), slicePort("b", -5), slicePort("c", 0)}, good),
			want:        []*topology.Service{served[0], topoSvc("default", "echo", 81), topoSvc("default", "echo", 82), topoSvc("default", "echo", 83)},
			wantReasons: []string{ReasonInvalidPort, ReasonInvalidPort, ReasonInvalidPort},
		},
		{
			name:        "service ports out of range: skipped",
			svc:         service("default", "echo", nil, svcPort{"grpc", 80, ""}, svcPort{"a", 0, ""}, svcPort{"b", -1, ""}, svcPort{"c", 70000, ""}),
			want:        served,
			wantReasons: []string{ReasonInvalidPort, ReasonInvalidPort, ReasonInvalidPort},
		},
	}
	for _, bad := range []struct{ ns, name string }{
		{"default", ""}, {"default", "a:b"}, {"default", "a.b"}, {"b.c", "a"}, {"default", "Echo"},
		{"default", "echo\xff"}, {"", "echo"}, {"default", "-echo"},
	} {
		tests = append(tests, struct {
			name        string
			svc         *corev1.Service
			slice       *discoveryv1.EndpointSlice
			pod         map[string]string
			want        []*topology.Service
			wantReasons []string
		}{
			name:        fmt.Sprintf("service %q/%q skipped", bad.ns, bad.name),
			svc:         service(bad.ns, bad.name, nil, svcPort{"grpc", 80, ""}),
			slice:       endpointSlice(bad.ns, "s", bad.name, v4, grpcPort, good),
			wantReasons: []string{ReasonInvalidName},
		})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			svc := tt.svc
			if svc == nil {
				svc = echo
			}
			slice := tt.slice
			if slice == nil {
				slice = endpointSlice("default", "s", "echo", v4, grpcPort, good)
			}
			var opts Options
			if tt.pod != nil {
				opts.Pod = func(string, string) (map[string]string, map[string]string, bool) { return tt.pod, nil, true }
			}
			got, problems := Service(svc, []*discoveryv1.EndpointSlice{slice}, opts)
			if diff := cmp.Diff(got, tt.want); diff != "" {
				t.Errorf("services (-got +want):\n%s", diff)
			}
			var reasons []string
			for _, p := range problems {
				reasons = append(reasons, p.Reason)
				t.Logf("problem: %s", p)
			}
			if diff := cmp.Diff(reasons, tt.wantReasons); diff != "" {
				t.Errorf("problem reasons (-got +want):\n%s", diff)
			}
			for _, s := range got {
				if err := s.Validate(); err != nil {
					t.Errorf("converted service fails Validate: %v", err)
				}
			}
		})
	}
}

// TestAll_NamesCannotCollide checks the collision of issue 10, finding 6:
// a.b/c and a/b.c both gave the resource name a.b.c:80.
func TestAll_NamesCannotCollide(t *testing.T) {
	services := []*corev1.Service{
		service("c", "a.b", nil, svcPort{"", 80, ""}),
		service("b.c", "a", nil, svcPort{"", 80, ""}),
	}
	got, problems := All(services, nil, Options{})
	if len(got) != 0 {
		t.Errorf("All() = %v, want no services", got)
	}
	if len(problems) != 2 || problems[0].Reason != ReasonInvalidName || problems[1].Reason != ReasonInvalidName {
		t.Errorf("All() problems = %v, want two %s", problems, ReasonInvalidName)
	}
}
