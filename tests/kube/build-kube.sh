#!/usr/bin/env bash
# build-kube.sh VERSION OUTDIR [COMPONENT...]
#
# Builds Kubernetes server binaries (default: kube-apiserver) from the
# k8s.io/kubernetes Go module into OUTDIR, for tests that need a real API
# server and no package or image of one is available. k8s.io/kubernetes
# cannot be required as-is: its go.mod points every k8s.io/X staging module at
# ./staging/src/k8s.io/X, which does not exist in the module zip. A scratch
# module therefore requires it and maps each staging module to the published
# k8s.io/X v0.<minor>.<patch> instead.
#
# A binary already present in OUTDIR is kept, so OUTDIR acts as a cache keyed
# by the caller (put VERSION in its path). The cold build of kube-apiserver
# takes about 15 minutes on 2 CPUs; it runs under nice.
set -euo pipefail

version=${1:?usage: build-kube.sh VERSION OUTDIR [COMPONENT...]}
out=${2:?usage: build-kube.sh VERSION OUTDIR [COMPONENT...]}
shift 2
components=("$@")
[ ${#components[@]} -gt 0 ] || components=(kube-apiserver)

todo=()
for c in "${components[@]}"; do
	[ -x "$out/$c" ] || todo+=("$c")
done
if [ ${#todo[@]} -eq 0 ]; then
	exit 0
fi

go=${GO:-go}
staging=v0.${version#v1.}
scratch=$(mktemp -d "${TMPDIR:-/tmp}/agentd-kube-build.XXXXXX")
trap 'rm -rf "$scratch"' EXIT
mkdir -p "$out"

cd "$scratch"
$go mod init agentd.local/kubebuild >/dev/null 2>&1
modfile=$($go mod download -json "k8s.io/kubernetes@$version" | sed -n 's/.*"GoMod": "\(.*\)",/\1/p')
{
	echo "require k8s.io/kubernetes $version"
	echo "replace ("
	sed -n 's#^\s*\(k8s.io/[a-z0-9-]*\) => ./staging/src/.*#\t\1 => \1 '"$staging"'#p' "$modfile"
	echo ")"
} >>go.mod
for c in "${todo[@]}"; do
	echo "import _ \"k8s.io/kubernetes/cmd/$c\"" 
done | { echo "package kubebuild"; cat; } >tools.go
GOFLAGS=-mod=mod $go mod tidy >/dev/null

for c in "${todo[@]}"; do
	echo "building $c $version into $out (cold: about 15 minutes on 2 CPUs)" >&2
	CGO_ENABLED=0 nice -n 10 $go build -trimpath \
		-ldflags "-s -w -X k8s.io/component-base/version.gitVersion=$version" \
		-o "$out/$c.tmp" "k8s.io/kubernetes/cmd/$c"
	mv "$out/$c.tmp" "$out/$c"
done
