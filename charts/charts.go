// Package charts holds Fairway's Helm chart (charts/fairway), installed with:
//
//	helm install fairway charts/fairway -n fairway-system --create-namespace
//
// The chart renders the objects of the kustomize base deploy/ (all but the
// Namespace, which Helm creates), with values for what the kustomize
// components add: watchPods (components/watch-pods), networkPolicy.enabled
// (components/network-policy), serviceMonitor.enabled
// (components/servicemonitor), tls.enabled (components/tls) and
// tls.certManager.enabled (components/tls-cert-manager). Its test holds the
// two to the same objects.
//
// Render renders it with the Helm Go library (no binary needed), as
// "helm template" would; Package writes the chart archive of a release, as
// "helm package --version --app-version" would.
package charts

import (
	"fmt"
	"io/fs"
	"strings"

	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
	"helm.sh/helm/v3/pkg/releaseutil"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	fairwaychart "github.com/fairway-lb/fairway/charts/fairway"
)

// Name is the chart's name, and its directory under charts/.
const Name = "fairway"

// KubeVersion is the Kubernetes version Render presents to the chart as
// .Capabilities.KubeVersion.
const KubeVersion = "v1.37.2"

// Load returns the chart, from the files embedded at build time.
func Load() (*chart.Chart, error) {
	var files []*loader.BufferedFile
	err := fs.WalkDir(fairwaychart.Files, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || strings.HasSuffix(p, ".go") {
			return err
		}
		b, err := fs.ReadFile(fairwaychart.Files, p)
		if err != nil {
			return err
		}
		files = append(files, &loader.BufferedFile{Name: p, Data: b})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("fairway/charts: %w", err)
	}
	c, err := loader.LoadFiles(files)
	if err != nil {
		return nil, fmt.Errorf("fairway/charts: load %s: %w", Name, err)
	}
	return c, nil
}

// Render returns the objects the chart renders for a release named release
// in namespace with values (merged over values.yaml and checked against
// values.schema.json), in Helm's install order.
func Render(release, namespace string, values map[string]any) ([]*unstructured.Unstructured, error) {
	c, err := Load()
	if err != nil {
		return nil, err
	}
	caps := chartutil.DefaultCapabilities.Copy()
	kv, err := chartutil.ParseKubeVersion(KubeVersion)
	if err != nil {
		return nil, fmt.Errorf("fairway/charts: %w", err)
	}
	caps.KubeVersion = *kv
	opts := chartutil.ReleaseOptions{Name: release, Namespace: namespace, Revision: 1, IsInstall: true}
	vals, err := chartutil.ToRenderValues(c, values, opts, caps)
	if err != nil {
		return nil, fmt.Errorf("fairway/charts: values: %w", err)
	}
	files, err := engine.Render(c, vals)
	if err != nil {
		return nil, fmt.Errorf("fairway/charts: render: %w", err)
	}
	for name := range files {
		if !strings.HasSuffix(name, ".yaml") {
			delete(files, name) // NOTES.txt, _helpers.tpl
		}
	}
	_, manifests, err := releaseutil.SortManifests(files, nil, releaseutil.InstallOrder)
	if err != nil {
		return nil, fmt.Errorf("fairway/charts: %w", err)
	}
	var objs []*unstructured.Unstructured
	for _, m := range manifests {
		obj := map[string]any{}
		if err := yaml.Unmarshal([]byte(m.Content), &obj); err != nil {
			return nil, fmt.Errorf("fairway/charts: %s: %w", m.Name, err)
		}
		if len(obj) == 0 {
			continue
		}
		objs = append(objs, &unstructured.Unstructured{Object: obj})
	}
	return objs, nil
}

// Package writes the chart archive of release version (vX.Y.Z: chart
// version X.Y.Z, appVersion and default image tag vX.Y.Z) into dir and
// returns its path, dir/fairway-X.Y.Z.tgz.
func Package(dir, version string) (string, error) {
	if !strings.HasPrefix(version, "v") {
		return "", fmt.Errorf("fairway/charts: version %q does not start with v", version)
	}
	c, err := Load()
	if err != nil {
		return "", err
	}
	c.Metadata.Version = strings.TrimPrefix(version, "v")
	c.Metadata.AppVersion = version
	if err := c.Validate(); err != nil {
		return "", fmt.Errorf("fairway/charts: version %s: %w", version, err)
	}
	path, err := chartutil.Save(c, dir)
	if err != nil {
		return "", fmt.Errorf("fairway/charts: package: %w", err)
	}
	return path, nil
}
