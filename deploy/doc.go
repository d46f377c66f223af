// Package deploy holds Fairway's Kubernetes manifests (kustomize), applied
// with:
//
//	kubectl apply -k deploy/
//
// The optional component components/watch-pods lets the control plane read
// Pods and turns on --watch-pods. The package's test renders the manifests
// with kustomize's Go API, applies them to a real kube-apiserver (which
// validates them) and checks the ServiceAccount's RBAC by impersonating it.
package deploy
