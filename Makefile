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
#   make build        build bin/fairway, stamped with $(VERSION) and the commit
#   make image        build the control plane image, linux/amd64 + linux/arm64 ($(PLATFORMS)), into
#                     the OCI layout $(DIST)/oci, tagged $(VERSION); no Docker needed (Go only,
#                     internal/release; ~30 s warm, 6–11 min per platform on a cold build cache).
#                     Load it with e.g. `skopeo copy oci:dist/oci:$(VERSION) docker-daemon:...`
#   make release      VERSION=vX.Y.Z: check that deploy/ and charts/fairway name that tag, then
#                     build and push the multi-arch image $(IMAGE):$(VERSION) (credentials: the
#                     docker config, as `docker login` or `crane auth login` write it) and write
#                     the chart archive $(DIST)/fairway-X.Y.Z.tgz
#   (the Dockerfile builds the same image with `docker buildx`, for those who have Docker)

SHELL := /usr/bin/env bash

KUBE_VERSION ?= v1.37.2
FAIRWAY_KUBEBINS ?= $(HOME)/.cache/fairway/kubebins/$(KUBE_VERSION)
export FAIRWAY_KUBEBINS

GO ?= go
IMAGE ?= ghcr.io/fairway-lb/fairway
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo devel)
REVISION ?= $(shell git rev-parse HEAD 2>/dev/null)
PLATFORMS ?= linux/amd64,linux/arm64
DIST ?= dist
RELEASE_CMD = $(GO) run ./internal/release/cmd/release -version $(VERSION) -revision $(REVISION) \
	-platforms $(PLATFORMS)
LDFLAGS := -X main.version=$(VERSION) -X main.revision=$(REVISION)
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

.PHONY: build
build:
	$(GO) build -ldflags "$(LDFLAGS)" -o bin/fairway ./cmd/fairway

.PHONY: image
image:
	$(RELEASE_CMD) -oci $(DIST)/oci

# A release is a tag vX.Y.Z whose deploy/kustomization.yaml (images: newTag) and
# charts/fairway/Chart.yaml (appVersion) already name it, so that `kubectl apply -k deploy` and
# `helm install fairway charts/fairway` at that tag run that image.
.PHONY: release
release:
	@[[ "$(VERSION)" =~ ^v[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?$$ ]] || \
		{ echo "make release: VERSION=$(VERSION) is not vX.Y.Z"; exit 1; }
	@grep -q "newTag: $(VERSION)$$" deploy/kustomization.yaml || \
		{ echo "make release: deploy/kustomization.yaml does not set newTag: $(VERSION)"; exit 1; }
	@grep -q "^appVersion: $(VERSION)$$" charts/fairway/Chart.yaml || \
		{ echo "make release: charts/fairway/Chart.yaml does not set appVersion: $(VERSION)"; exit 1; }
	@[[ -z "$$(git status --porcelain)" ]] || { echo "make release: uncommitted changes"; exit 1; }
	$(RELEASE_CMD) -push $(IMAGE):$(VERSION) -chart $(DIST)
