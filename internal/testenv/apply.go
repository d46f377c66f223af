package testenv

import (
	"context"
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/restmapper"
)

// ApplyFieldManager is the field manager of Env.Apply.
const ApplyFieldManager = "fairway-testenv"

// Apply server-side applies objs in order as the admin user, like
// "kubectl apply --server-side --force-conflicts". Each object is first
// applied as a dry run, so the apiserver rejects unknown or misspelled fields
// before anything is written.
func (e *Env) Apply(ctx context.Context, objs ...*unstructured.Unstructured) error {
	dc, err := discovery.NewDiscoveryClientForConfig(e.Config)
	if err != nil {
		return fmt.Errorf("fairway/testenv: %w", err)
	}
	groups, err := restmapper.GetAPIGroupResources(dc)
	if err != nil {
		return fmt.Errorf("fairway/testenv: discovery: %w", err)
	}
	mapper := restmapper.NewDiscoveryRESTMapper(groups)
	dyn, err := dynamic.NewForConfig(e.Config)
	if err != nil {
		return fmt.Errorf("fairway/testenv: %w", err)
	}
	for _, obj := range objs {
		gvk := obj.GroupVersionKind()
		mapping, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		if err != nil {
			return fmt.Errorf("fairway/testenv: apply %s %s: %w", gvk.Kind, obj.GetName(), err)
		}
		var ri dynamic.ResourceInterface = dyn.Resource(mapping.Resource)
		if ns := obj.GetNamespace(); ns != "" {
			ri = dyn.Resource(mapping.Resource).Namespace(ns)
		}
		for _, dryRun := range [][]string{{metav1.DryRunAll}, nil} {
			opts := metav1.ApplyOptions{FieldManager: ApplyFieldManager, Force: true, DryRun: dryRun}
			if _, err := ri.Apply(ctx, obj.GetName(), obj, opts); err != nil {
				return fmt.Errorf("fairway/testenv: apply %s %s: %w", gvk.Kind, obj.GetName(), err)
			}
		}
	}
	return nil
}
