# Fairway build and test entry points.
#
#   make test         build the test binaries of kube-apiserver + etcd, install the Node and
#                     C-core interop clients (all cached), run every test
#   make kubebins     build kube-apiserver and etcd into $(FAIRWAY_KUBEBINS) (first run ~5 min)
#   make nodeclient   npm ci @grpc/grpc-js + @grpc/grpc-js-xds (hack/nodeclient) into
#                     $HOME/.cache/fairway/node/<lock hash> or $(FAIRWAY_NODECLIENT) (first run ~30 s)
#   make pyclient     apt-get install python3-grpcio (gRPC C-core 1.51, Debian) for
#                     /usr/bin/python3 when it cannot import grpc (needs root; ~5 s, once)
#   make dev-cluster  run a local etcd + kube-apiserver and print its kubeconfig path
#   make soak         the xDS server's 10-minute soak: 1,000 churning ADS streams, then goroutines
#                     and heap back to the baseline (make test runs it for 15 s)

SHELL := /usr/bin/env bash

KUBE_VERSION ?= v1.37.2
FAIRWAY_KUBEBINS ?= $(HOME)/.cache/fairway/kubebins/$(KUBE_VERSION)
export FAIRWAY_KUBEBINS

GO ?= go
GO_TEST_FLAGS ?= -count=1 -timeout 20m

.PHONY: kubebins
kubebins:
	hack/kubebins/build.sh

.PHONY: nodeclient
nodeclient:
	hack/nodeclient/install.sh

.PHONY: pyclient
pyclient:
	hack/pyclient/install.sh

.PHONY: test
test: kubebins nodeclient pyclient
	$(GO) test $(GO_TEST_FLAGS) ./...

.PHONY: dev-cluster
dev-cluster: kubebins
	$(GO) run ./internal/testenv/cmd/devcluster

SOAK ?= 10m

.PHONY: soak
soak:
	$(GO) test -count=1 -v -run '^TestServer_Soak$$' -timeout 30m ./controlplane/xdsserver/ -soak $(SOAK)
