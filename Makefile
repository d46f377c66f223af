# Fairway build and test entry points.
#
#   make test         build the test binaries of kube-apiserver + etcd (cached), run every test
#   make kubebins     build kube-apiserver and etcd into $(FAIRWAY_KUBEBINS) (first run ~5 min)
#   make dev-cluster  run a local etcd + kube-apiserver and print its kubeconfig path

SHELL := /usr/bin/env bash

KUBE_VERSION ?= v1.37.2
FAIRWAY_KUBEBINS ?= $(HOME)/.cache/fairway/kubebins/$(KUBE_VERSION)
export FAIRWAY_KUBEBINS

GO ?= go
GO_TEST_FLAGS ?= -count=1 -timeout 20m

.PHONY: kubebins
kubebins:
	hack/kubebins/build.sh

.PHONY: test
test: kubebins
	$(GO) test $(GO_TEST_FLAGS) ./...

.PHONY: dev-cluster
dev-cluster: kubebins
	$(GO) run ./internal/testenv/cmd/devcluster
