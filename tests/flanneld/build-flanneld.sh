#!/usr/bin/env bash
# build-flanneld.sh VERSION OUTDIR
#
# Builds flanneld VERSION from the github.com/flannel-io/flannel Go module
# into OUTDIR/flanneld, for tests/interop's mixed clusters (agentd and the
# real flanneld on one etcd). A scratch module requires flannel and points
# the one dependency the module proxy refuses to serve (Tencent Cloud's VPC
# client, used only by flanneld's tencent-vpc backend) at ./vpcstub. cgo is
# on: flanneld's udp backend is C.
#
# A binary already in OUTDIR is kept, so OUTDIR acts as a cache (put VERSION
# in its path). The cold build takes about a minute on 2 CPUs.
set -euo pipefail

version=${1:?usage: build-flanneld.sh VERSION OUTDIR}
out=${2:?usage: build-flanneld.sh VERSION OUTDIR}
[ -x "$out/flanneld" ] && exit 0

go=${GO:-go}
here=$(cd "$(dirname "$0")" && pwd)
scratch=$(mktemp -d "${TMPDIR:-/tmp}/agentd-flanneld-build.XXXXXX")
trap 'rm -rf "$scratch"' EXIT
mkdir -p "$out"

cd "$scratch"
cat >go.mod <<MOD
module agentd.local/flanneldbuild

go 1.26

require github.com/flannel-io/flannel $version

replace github.com/tencentcloud/tencentcloud-sdk-go/tencentcloud/vpc => $here/vpcstub
MOD
echo 'package flanneldbuild' >doc.go
echo "building flanneld $version into $out (cold: about a minute on 2 CPUs)" >&2
CGO_ENABLED=1 GOFLAGS=-mod=mod nice -n 10 $go build -trimpath \
	-ldflags "-s -w -X github.com/flannel-io/flannel/pkg/version.Version=$version" \
	-o "$out/flanneld.tmp" github.com/flannel-io/flannel
mv "$out/flanneld.tmp" "$out/flanneld"
