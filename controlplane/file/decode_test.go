package file

import (
	"os"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/fairway-lb/fairway/controlplane/convert"
	"github.com/fairway-lb/fairway/controlplane/topology"
)

// names lists the decoded objects as "Kind ns/name".
func names(o Objects) []string {
	var out []string
	for _, s := range o.Services {
		out = append(out, "Service "+s.Namespace+"/"+s.Name)
	}
	for _, s := range o.EndpointSlices {
		out = append(out, "EndpointSlice "+s.Namespace+"/"+s.Name)
	}
	return out
}

func TestDecode_Documents(t *testing.T) {
	tests := []struct {
		name        string
		in          string
		want        []string
		wantSkipped []string
		wantErr     string
	}{
		{
			name: "separated documents, leading separator and comments",
			in: "# a comment\n---\napiVersion: v1\nkind: Service\nmetadata: {name: a, namespace: ns}\n---\n# only a comment\n---\n" +
				"apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: a-1, namespace: ns}\naddressType: IPv4\nendpoints: []\n---\n",
			want: []string{"Service ns/a", "EndpointSlice ns/a-1"},
		},
		{
			name: "kubectl List with items, default namespace",
			in: `apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Service
  metadata: {name: a}
- apiVersion: discovery.k8s.io/v1
  kind: EndpointSlice
  metadata: {name: a-1}
  addressType: IPv4
  endpoints: []
- apiVersion: v1
  kind: ConfigMap
  metadata: {name: c, namespace: x}
`,
			want:        []string{"Service default/a", "EndpointSlice default/a-1"},
			wantSkipped: []string{"v1 ConfigMap x/c"},
		},
		{
			name: "typed list and JSON",
			in:   `{"apiVersion": "v1", "kind": "ServiceList", "items": [{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "j", "namespace": "n"}}]}`,
			want: []string{"Service n/j"},
		},
		{
			name:        "other kinds and versions are skipped",
			in:          "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d, namespace: prod}\n---\napiVersion: discovery.k8s.io/v1beta1\nkind: EndpointSlice\nmetadata: {name: old, namespace: prod}\n",
			wantSkipped: []string{"apps/v1 Deployment prod/d", "discovery.k8s.io/v1beta1 EndpointSlice prod/old"},
		},
		{name: "empty list", in: "apiVersion: v1\nkind: List\nitems: []\n"},
		{
			name:    "malformed YAML names its document",
			in:      "apiVersion: v1\nkind: Service\nmetadata: {name: a}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: b\n",
			wantErr: "fairway/file: document 2: ",
		},
		{
			name:    "document without a kind",
			in:      "apiVersion: v1\nkind: Service\nmetadata: {name: a}\n---\nmetadata: {name: b}\n",
			wantErr: "fairway/file: document 2: no kind",
		},
		{
			name:    "scalar document",
			in:      "just words\n",
			wantErr: "fairway/file: document 1: not a Kubernetes object",
		},
		{
			name:    "object that does not fit its kind names the list item",
			in:      "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Service\n  metadata: {name: ok}\n- apiVersion: v1\n  kind: Service\n  metadata: {name: bad}\n  spec: {ports: [{port: eighty}]}\n",
			wantErr: "fairway/file: document 1: item 1: Service /bad: ",
		},
		{
			name:    "bad separator",
			in:      "apiVersion: v1\nkind: Service\nmetadata: {name: a}\n--- junk\n",
			wantErr: "fairway/file: document 1: invalid Yaml document separator",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Decode([]byte(tt.in))
			if tt.wantErr != "" {
				if err == nil || !strings.HasPrefix(err.Error(), tt.wantErr) {
					t.Fatalf("Decode() error = %v, want prefix %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Decode() error = %v", err)
			}
			if diff := cmp.Diff(names(got), tt.want); diff != "" {
				t.Errorf("Decode() objects (-got +want):\n%s", diff)
			}
			if diff := cmp.Diff(got.Skipped, tt.wantSkipped); diff != "" {
				t.Errorf("Decode() skipped (-got +want):\n%s", diff)
			}
		})
	}
}

// TestDecode_Example checks that examples/echo.yaml is what its comment says.
func TestDecode_Example(t *testing.T) {
	data, err := os.ReadFile("../../examples/echo.yaml")
	if err != nil {
		t.Fatal(err)
	}
	objs, err := Decode(data)
	if err != nil {
		t.Fatalf("Decode() error = %v", err)
	}
	services, problems := convert.All(objs.Services, objs.EndpointSlices, convert.Options{})
	if len(problems) != 0 {
		t.Errorf("problems: %v", problems)
	}
	var eps []topology.Endpoint
	for i, zone := range []string{"zone-a", "zone-a", "zone-b", "zone-b", "zone-c", "zone-c"} {
		n := string(rune('1' + i))
		eps = append(eps, topology.Endpoint{
			Address: "127.0.0." + n, Port: 8080, Zone: zone, Node: "node-" + zone[len(zone)-1:], Hostname: "echo-" + n,
			Ready: true, Serving: true, Weight: 1,
		})
	}
	want := []*topology.Service{{
		Key:       topology.ServiceKey{Namespace: "default", Name: "echo", Port: 8080},
		Policy:    topology.DefaultPolicy(),
		Endpoints: eps,
	}}
	if diff := cmp.Diff(services, want); diff != "" {
		t.Errorf("examples/echo.yaml (-got +want):\n%s", diff)
	}
}
