# syntax=docker/dockerfile:1
# Fairway control plane image: docker build -t ghcr.io/fairway-lb/fairway:latest .

FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o /out/fairway ./cmd/fairway

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/fairway /usr/local/bin/fairway
USER 65532:65532
EXPOSE 18000 9090
ENTRYPOINT ["/usr/local/bin/fairway"]
