// Package deploy holds Fairway's Kubernetes manifests (kustomize), applied
// with:
//
//	kubectl apply -k deploy/
//
// The optional component components/watch-pods lets the control plane read
// Pods and turns on --watch-pods; components/network-policy and
// components/servicemonitor add a NetworkPolicy and a ServiceMonitor;
// components/tls serves xDS over TLS from the Secret TLSSecret, which
// components/tls-cert-manager has cert-manager issue and renew. The Helm chart
// in charts/fairway renders the same objects.
//
// Render builds the same objects in Go (with kustomize's API, no binary
// needed), so tests can apply them to a real kube-apiserver
// (internal/testenv's Env.Apply) and run the control plane with exactly the
// ServiceAccount permissions shipped here (ServiceAccountUser).
package deploy

import (
	"embed"
	"fmt"
	"io/fs"
	"path"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

const (
	// Namespace is the namespace the control plane runs in.
	Namespace = "fairway-system"
	// ServiceAccount is the control plane's ServiceAccount in Namespace.
	ServiceAccount = "fairway-controlplane"
	// ServiceAccountUser is the user name the apiserver gives the
	// ServiceAccount, for impersonation.
	ServiceAccountUser = "system:serviceaccount:" + Namespace + ":" + ServiceAccount
)

// ComponentWatchPods names the component that grants get/list/watch on Pods
// and adds --watch-pods to the control plane's arguments.
const ComponentWatchPods = "watch-pods"

// ComponentNetworkPolicy names the component that adds a NetworkPolicy
// admitting only the xDS and admin ports.
const ComponentNetworkPolicy = "network-policy"

// ComponentServiceMonitor names the component that adds a Prometheus
// Operator ServiceMonitor for the admin port's /metrics.
const ComponentServiceMonitor = "servicemonitor"

// ComponentTLS names the component that mounts the kubernetes.io/tls Secret
// TLSSecret at TLSMountPath and serves xDS over TLS with its tls.crt and
// tls.key (--tls-cert-file, --tls-key-file).
const ComponentTLS = "tls"

// ComponentTLSCertManager names the component that adds a cert-manager
// Certificate for the xDS Service's names, issued into TLSSecret by the
// ClusterIssuer fairway-xds-ca. It goes with ComponentTLS.
const ComponentTLSCertManager = "tls-cert-manager"

const (
	// TLSSecret is the Secret that ComponentTLS mounts.
	TLSSecret = "fairway-xds-tls"
	// TLSMountPath is the folder where ComponentTLS mounts TLSSecret.
	TLSMountPath = "/etc/fairway/tls"
)

//go:embed *.yaml components
var manifests embed.FS

// Render returns the objects of "kustomize build deploy/" in order, with the
// named components (such as ComponentWatchPods) added as an overlay would.
func Render(components ...string) ([]*unstructured.Unstructured, error) {
	mem := filesys.MakeFsInMemory()
	err := fs.WalkDir(manifests, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := manifests.ReadFile(p)
		if err != nil {
			return err
		}
		if err := mem.MkdirAll(path.Join("/deploy", path.Dir(p))); err != nil {
			return err
		}
		return mem.WriteFile(path.Join("/deploy", p), b)
	})
	if err != nil {
		return nil, fmt.Errorf("fairway/deploy: %w", err)
	}
	dir := "/deploy"
	if len(components) > 0 {
		overlay := "resources: [../deploy]\ncomponents:\n"
		for _, c := range components {
			if _, err := fs.Stat(manifests, path.Join("components", c, "kustomization.yaml")); err != nil {
				return nil, fmt.Errorf("fairway/deploy: unknown component %q", c)
			}
			overlay += "  - ../deploy/components/" + c + "\n"
		}
		dir = "/overlay"
		if err := mem.MkdirAll(dir); err != nil {
			return nil, fmt.Errorf("fairway/deploy: %w", err)
		}
		if err := mem.WriteFile(path.Join(dir, "kustomization.yaml"), []byte(overlay)); err != nil {
			return nil, fmt.Errorf("fairway/deploy: %w", err)
		}
	}
	m, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(mem, dir)
	if err != nil {
		return nil, fmt.Errorf("fairway/deploy: kustomize build: %w", err)
	}
	var objs []*unstructured.Unstructured
	for _, r := range m.Resources() {
		obj, err := r.Map()
		if err != nil {
			return nil, fmt.Errorf("fairway/deploy: %w", err)
		}
		objs = append(objs, &unstructured.Unstructured{Object: obj})
	}
	return objs, nil
}
