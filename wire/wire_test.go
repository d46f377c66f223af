package wire

import (
	"testing"

	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/google/go-cmp/cmp"
)

func TestParseResourceName_RoundTrip(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    ServiceKey
		wantErr bool
	}{
		{in: "echo.default:8080", want: ServiceKey{Namespace: "default", Name: "echo", Port: 8080}},
		{in: "echo.default.svc.cluster.local:8080", want: ServiceKey{Namespace: "default", Name: "echo", Port: 8080}},
		{in: "echo.default.svc.cluster.local.:80", want: ServiceKey{Namespace: "default", Name: "echo", Port: 80}},
		{in: "echo:8080", wantErr: true},
		{in: "echo.default", wantErr: true},
		{in: "echo.default:0", wantErr: true},
		{in: "echo.default:70000", wantErr: true},
		{in: "a.b.c:80", wantErr: true},
		{in: ".default:80", wantErr: true},
	} {
		got, err := ParseResourceName(tc.in)
		if (err != nil) != tc.wantErr {
			t.Errorf("ParseResourceName(%q) error = %v, want error %v", tc.in, err, tc.wantErr)
			continue
		}
		if tc.wantErr {
			continue
		}
		if got != tc.want {
			t.Errorf("ParseResourceName(%q) = %+v, want %+v", tc.in, got, tc.want)
		}
		if back, err := ParseResourceName(got.ResourceName()); err != nil || back != got {
			t.Errorf("ParseResourceName(%q) = %+v, %v; want %+v", got.ResourceName(), back, err, got)
		}
		if back, err := ParseResourceName(got.FQDNResourceName()); err != nil || back != got {
			t.Errorf("ParseResourceName(%q) = %+v, %v; want %+v", got.FQDNResourceName(), back, err, got)
		}
	}
}

func TestParseChain_Shape(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    string // FormatChain of the links
		wantErr bool
	}{
		{in: `[]`, want: `[]`},
		{in: `[{"p2c": {}}]`, want: `[{"p2c":{}}]`},
		{in: `[{"p2c": null}]`, want: `[{"p2c":{}}]`},
		{in: ` [ {"outlier": {"max_ejection_percent": 50}}, {"p2c": {"latency_aware": true}} ] `,
			want: `[{"outlier":{"max_ejection_percent":50}},{"p2c":{"latency_aware":true}}]`},
		{in: `{"p2c": {}}`, wantErr: true},
		{in: `[{"p2c": 3}]`, wantErr: true},
		{in: `[{"p2c": []}]`, wantErr: true},
		{in: `[{"P2C": {}}]`, wantErr: true},
		{in: `[{"a": {}, "b": {}}]`, wantErr: true},
		{in: `[{}]`, wantErr: true},
		{in: `not json`, wantErr: true},
	} {
		links, err := ParseChain([]byte(tc.in))
		if (err != nil) != tc.wantErr {
			t.Errorf("ParseChain(%s) error = %v, want error %v", tc.in, err, tc.wantErr)
			continue
		}
		if tc.wantErr {
			continue
		}
		if diff := cmp.Diff(FormatChain(links), tc.want); diff != "" {
			t.Errorf("FormatChain(ParseChain(%s)) (-got +want):\n%s", tc.in, diff)
		}
	}
}

func TestTypeURLs_AreGoControlPlanes(t *testing.T) {
	if ClusterType != resourcev3.ClusterType {
		t.Errorf("ClusterType = %q, want %q", ClusterType, resourcev3.ClusterType)
	}
	if EndpointType != resourcev3.EndpointType {
		t.Errorf("EndpointType = %q, want %q", EndpointType, resourcev3.EndpointType)
	}
}
