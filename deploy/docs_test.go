package deploy_test

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/fairway-lb/fairway/deploy"
)

// docAddress is NAME.NAMESPACE[.svc[.cluster.local]]:PORT in prose or code,
// or an Envoy socket_address {address: HOST, port_value: PORT}.
var docAddress = regexp.MustCompile(
	`\b([a-z0-9][-a-z0-9]*)\.([a-z0-9][-a-z0-9]*)(?:\.svc(?:\.cluster\.local)?)?:([0-9]+)\b` +
		`|address: *([a-z0-9][-a-z0-9]*)\.([a-z0-9][-a-z0-9]*)(?:\.svc(?:\.cluster\.local)?)?, *port_value: *([0-9]+)`)

var numeric = regexp.MustCompile(`^[0-9]+$`)

// Every xDS address of the control plane that the docs, the client package
// and the examples name (any NAME.NAMESPACE on the grpc-xds port of a Service
// in deploy/) is a Service of deploy/ with that port.
func TestDocs_ControlPlaneAddressesExistInDeploy(t *testing.T) {
	objs, err := deploy.Render()
	if err != nil {
		t.Fatal(err)
	}
	services := map[string]bool{} // "name.namespace:port"
	ports := map[string]bool{}
	for _, o := range objs {
		if o.GetKind() != "Service" {
			continue
		}
		raw, _, _ := unstructured.NestedFieldNoCopy(o.Object, "spec", "ports")
		list, _ := raw.([]any)
		for _, p := range list {
			if p.(map[string]any)["name"] != "grpc-xds" {
				continue
			}
			port := fmt.Sprint(p.(map[string]any)["port"])
			services[o.GetName()+"."+o.GetNamespace()+":"+port] = true
			ports[port] = true
		}
	}
	if len(services) == 0 {
		t.Fatal("deploy/ renders no Service with a grpc-xds port")
	}

	var files []string
	for _, root := range []string{"../README.md", "../docs", "../client", "../examples"} {
		err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err == nil && !d.IsDir() && (strings.HasSuffix(p, ".md") || strings.HasSuffix(p, ".go") || strings.HasSuffix(p, ".yaml")) {
				files = append(files, p)
			}
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	checked := 0
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range docAddress.FindAllStringSubmatch(string(b), -1) {
			name, ns, port := m[1], m[2], m[3]
			if name == "" {
				name, ns, port = m[4], m[5], m[6]
			}
			// Skip other ports, applications' Services in "default" and the
			// tail of an IP address ("127.0.0.1:18000").
			if !ports[port] || ns == "default" || numeric.MatchString(name+ns) {
				continue
			}
			checked++
			if addr := name + "." + ns + ":" + port; !services[addr] {
				t.Errorf("%s names %q, which is no Service port of deploy/ (%v)", f, m[0], keys(services))
			}
		}
	}
	if checked == 0 {
		t.Error("no control-plane address found in the docs: the test checks nothing")
	}
}

func keys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}
