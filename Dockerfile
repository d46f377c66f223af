# syntax=docker/dockerfile:1
# Fairway control plane image, for those who build with Docker. `make image` / `make release`
# build the same image without Docker (internal/release: the binary alone on an empty base,
# /usr/local/bin/fairway, user 65532, the same version stamping):
#   docker buildx build --build-arg VERSION=v0.1.0 --build-arg REVISION=$(git rev-parse HEAD) \
#     -t ghcr.io/fairway-lb/fairway:v0.1.0 .
# .git is not in the build context, so the version and revision come in as build arguments.

FROM --platform=$BUILDPLATFORM golang:1.26 AS build
ARG TARGETOS TARGETARCH
ARG VERSION=devel
ARG REVISION=
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH go build -trimpath \
    -ldflags "-s -w -X main.version=${VERSION} -X main.revision=${REVISION}" -o /out/fairway ./cmd/fairway

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/fairway /usr/local/bin/fairway
USER 65532:65532
EXPOSE 18000 9090
ENTRYPOINT ["/usr/local/bin/fairway"]
