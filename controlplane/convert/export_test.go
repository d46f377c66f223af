package convert

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/fairway-lb/fairway/controlplane/topology"
)

func TestService_ExportTo(t *testing.T) {
	limited := func(ns ...string) topology.Export { return topology.Export{Limited: true, Namespaces: ns} }
	invalid := func(msg string) []Problem {
		return []Problem{{Namespace: "shop", Service: "web", Object: "Service shop/web", Reason: ReasonInvalidAnnotation, Message: msg}}
	}
	tests := []struct {
		name         string
		annotation   *string
		def          topology.Export
		want         topology.Export
		wantProblems []Problem
	}{
		{name: "no annotation, default every namespace", want: topology.ExportAll()},
		{name: "no annotation, default own namespace", def: topology.ExportOwn(), want: topology.ExportOwn()},
		{name: "star", annotation: ptr("*"), def: topology.ExportOwn(), want: topology.ExportAll()},
		{name: "dot", annotation: ptr("."), want: topology.ExportOwn()},
		{name: "list, sorted and unique, own dropped", annotation: ptr(" finance, ., billing ,finance,shop"), want: limited("billing", "finance")},
		{name: "star wins over names", annotation: ptr("finance,*"), def: topology.ExportOwn(), want: topology.ExportAll()},
		{name: "empty value counts as absent", annotation: ptr("  "), def: topology.ExportOwn(), want: topology.ExportOwn()},
		{
			name: "invalid namespace: default used", annotation: ptr("finance,Bad_NS"), def: topology.ExportOwn(), want: topology.ExportOwn(),
			wantProblems: invalid(`annotation fairway.io/export-to: invalid value "finance,Bad_NS" (fairway/convert: "Bad_NS" is not a namespace: a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')); using default .`),
		},
		{
			name: "only commas: default used", annotation: ptr(", ,"), want: topology.ExportAll(),
			wantProblems: invalid(`annotation fairway.io/export-to: invalid value ", ," (fairway/convert: no namespace given); using default *`),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			svc := &corev1.Service{
				ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web"},
				Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "a", Port: 80}, {Name: "b", Port: 81}}},
			}
			if tt.annotation != nil {
				svc.Annotations = map[string]string{AnnotationExportTo: *tt.annotation}
			}
			got, problems := Service(svc, nil, Options{DefaultExport: tt.def})
			if len(got) != 2 {
				t.Fatalf("Service returned %d services, want 2", len(got))
			}
			for _, s := range got {
				if diff := cmp.Diff(s.Export, tt.want); diff != "" {
					t.Errorf("port %d: Export (-got +want):\n%s", s.Key.Port, diff)
				}
			}
			if diff := cmp.Diff(problems, tt.wantProblems); diff != "" {
				t.Errorf("problems (-got +want):\n%s", diff)
			}
		})
	}
}

func TestExport_Visible(t *testing.T) {
	e, err := ParseExportTo("finance")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		ns   string
		want bool
	}{{"shop", true}, {"finance", true}, {"billing", false}, {"", false}} {
		if got := e.Visible("shop", c.ns); got != c.want {
			t.Errorf("export-to finance of a shop Service: Visible(%q) = %v, want %v", c.ns, got, c.want)
		}
	}
	if !topology.ExportAll().Visible("shop", "billing") || topology.ExportOwn().Visible("shop", "billing") {
		t.Error("ExportAll must be visible everywhere, ExportOwn only in its own namespace")
	}
}

func TestParseDefaultExportTo(t *testing.T) {
	for v, want := range map[string]topology.Export{"*": topology.ExportAll(), ".": topology.ExportOwn()} {
		got, err := ParseDefaultExportTo(v)
		if err != nil || !got.Equal(want) {
			t.Errorf("ParseDefaultExportTo(%q) = %v, %v; want %v", v, got, err, want)
		}
	}
	for _, v := range []string{"", "shop", "*,."} {
		if _, err := ParseDefaultExportTo(v); err == nil {
			t.Errorf("ParseDefaultExportTo(%q) succeeded, want an error", v)
		}
	}
}
