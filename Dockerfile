# syntax=docker/dockerfile:1
# One image holds vnode's programs (vnode-kubelet, vnode-approver, the edge
# tunnel, eci-emulator and the vnode CLI); each manifest picks its command.
# Built elsewhere (no Docker engine runs where vnode is developed):
#   docker build -t vnode:dev .

FROM golang:1.26-bookworm AS build
WORKDIR /src
# Modules first, so source edits do not refetch them.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/root/go/pkg/mod go mod download
COPY . .
# The version every binary reports (--version, the Node's kubelet version).
ARG VERSION=devel
# Static binaries; vnode-local (the developer's local cluster runner) stays out.
RUN --mount=type=cache,target=/root/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    set -eu; mkdir -p /out; \
    for d in cmd/*/; do \
      name=$(basename "$d"); \
      [ "$name" = vnode-local ] && continue; \
      CGO_ENABLED=0 go build -trimpath -ldflags="-s -w -X github.com/vnode-project/vnode/internal/version.release=${VERSION}" -o "/out/$name" "./$d"; \
    done

# distroless: no shell, no package manager; runs as uid 65532.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/ /usr/local/bin/
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/vnode-kubelet"]
