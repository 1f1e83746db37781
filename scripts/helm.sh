#!/usr/bin/env bash
# Prints the path of a helm binary: the one on PATH, else helm built once from the Go
# module proxy into ~/.cache/llmbus/bin (the module and build caches live there too).
set -euo pipefail
HELM_VERSION=v3.22.0
if command -v helm >/dev/null 2>&1; then
  command -v helm
  exit 0
fi
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/llmbus"
BIN="$CACHE/bin/helm-$HELM_VERSION"
if [ ! -x "$BIN" ]; then
  command -v go >/dev/null || { echo "helm.sh: neither helm nor go is installed" >&2; exit 1; }
  echo "helm.sh: building helm $HELM_VERSION from the Go module proxy (once, a few minutes)" >&2
  mkdir -p "$CACHE/bin" "$CACHE/go"
  tmp="$(mktemp -d)"
  GOPATH="$CACHE/go" GOMODCACHE="$CACHE/go/mod" GOCACHE="$CACHE/go/build" GOBIN="$tmp" \
    CGO_ENABLED=0 go install -ldflags "-s -w" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" >&2
  mv "$tmp/helm" "$BIN"
  rmdir "$tmp"
fi
echo "$BIN"
