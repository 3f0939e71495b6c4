#!/usr/bin/env bash
# Build the upstream Kubernetes commands the local cluster needs from the Go
# module proxy, into a cache outside the repo keyed by version. Rebuilds only
# the binaries that are missing. Prints progress: a cold build takes minutes.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
. "$here/versions.env"
cache=${DAEMONPOOL_CACHE:-$HOME/.cache/daemonpool}
out="$cache/k8s-$K8S_VERSION/bin"
mod="$cache/k8s-$K8S_VERSION/mod"
cmds=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl kubeadm)
# Bump when the build recipe changes: cached binaries of an older recipe are rebuilt.
recipe="v2-version-ldflags"
if [ "$(cat "$out/.recipe" 2>/dev/null)" != "$recipe" ]; then rm -f "$out"/kube* ; fi
missing=()
for c in "${cmds[@]}"; do [ -x "$out/$c" ] || missing+=("$c"); done
if [ ${#missing[@]} -eq 0 ]; then echo "k8s $K8S_VERSION binaries cached in $out"; exit 0; fi
command -v go >/dev/null || { echo "build-k8s: go is not on PATH; install Go 1.26" >&2; exit 1; }
case "$(go env GOVERSION)" in
  go1.26*) ;;
  *) echo "build-k8s: Kubernetes $K8S_VERSION needs Go 1.26, found $(go env GOVERSION)" >&2; exit 1 ;;
esac
mkdir -p "$out" "$mod"
cd "$mod"
if [ ! -f go.sum ] || ! grep -q "k8s.io/kubernetes v$K8S_VERSION" go.mod 2>/dev/null; then
  echo "build-k8s: resolving k8s.io/kubernetes v$K8S_VERSION (module proxy)"
  gomod=$(GOFLAGS=-mod=mod go mod download -json "k8s.io/kubernetes@v$K8S_VERSION" | python3 -c 'import json,sys;print(json.load(sys.stdin)["GoMod"])')
  staging=$(awk '/^replace \(/{f=1;next} f&&/^\)/{f=0} f&&/=> \.\/staging/{print $1}' "$gomod")
  minor=${K8S_VERSION#*.}
  {
    echo "module daemonpool.dev/k8sbuild"
    echo
    echo "go 1.26.0"
    echo
    echo "require k8s.io/kubernetes v$K8S_VERSION"
    echo
    echo "replace ("
    for m in $staging; do echo "	$m => $m v0.$minor"; done
    echo ")"
  } > go.mod
  printf 'package main\n\nimport (\n' > tools.go
  for c in "${cmds[@]}"; do printf '\t_ "k8s.io/kubernetes/cmd/%s"\n' "$c" >> tools.go; done
  printf ')\n\nfunc main() {}\n' >> tools.go
  GOFLAGS=-mod=mod go mod tidy
fi
# Stamp the version as the upstream build does: helm and kubectl read it (else v0.0.0-master).
minor=${K8S_VERSION#*.}; minor=${minor%%.*}
vflags=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  vflags="$vflags -X $pkg.gitVersion=v$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done
n=0
for c in "${missing[@]}"; do
  n=$((n+1))
  start=$(date +%s)
  echo "build-k8s: [$n/${#missing[@]}] building $c (cold: up to ~4 min each) ..."
  CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -ldflags "-s -w $vflags" -o "$out/$c.tmp" "k8s.io/kubernetes/cmd/$c" &
  pid=$!
  while kill -0 $pid 2>/dev/null; do sleep 15; kill -0 $pid 2>/dev/null && echo "build-k8s:   ... $c still building ($(( $(date +%s) - start ))s)"; done
  wait $pid
  mv "$out/$c.tmp" "$out/$c"
  echo "build-k8s: [$n/${#missing[@]}] $c done in $(( $(date +%s) - start ))s"
done
echo "$recipe" > "$out/.recipe"
echo "k8s $K8S_VERSION binaries in $out"
