package kube

import (
	"fmt"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// NewClient returns a client for the cluster named by kubeconfig, a kubeconfig
// file path. With "" it follows kubectl's rules: the KUBECONFIG environment
// variable, then ~/.kube/config, then the in-cluster ServiceAccount.
func NewClient(kubeconfig string) (kubernetes.Interface, error) {
	cfg, err := RESTConfig(kubeconfig)
	if err != nil {
		return nil, err
	}
	return NewClientForConfig(cfg)
}

// RESTConfig loads the client configuration as NewClient does.
func RESTConfig(kubeconfig string) (*rest.Config, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = kubeconfig
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("fairway/kube: loading client config: %w", err)
	}
	return cfg, nil
}

// NewClientForConfig returns a client for cfg with the source's user agent and
// client-side rate limits suited to a watcher (the initial lists of a large
// cluster, and Events).
func NewClientForConfig(cfg *rest.Config) (kubernetes.Interface, error) {
	cfg = rest.CopyConfig(cfg)
	cfg.UserAgent = Component
	if cfg.QPS == 0 {
		cfg.QPS = 50
	}
	if cfg.Burst == 0 {
		cfg.Burst = 100
	}
	c, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("fairway/kube: creating client: %w", err)
	}
	return c, nil
}
