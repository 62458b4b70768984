#!/usr/bin/env bash
# build-binaries.sh builds meshrelay's four binaries (relay-server, relay-agent,
# relay-webhook, relayctl) as static executables into OUTDIR. The Dockerfile
# and `make build` both run this script, so that `make docker-build-check`
# proves the image's build command works on a machine without a container engine.
#
# usage: hack/build-binaries.sh OUTDIR [VERSION [COMMIT]]
set -euo pipefail

out=${1:?usage: build-binaries.sh OUTDIR [VERSION [COMMIT]]}
version=${2:-dev}
commit=${3:-}
here=$(cd "$(dirname "$0")" && pwd)

pkg=github.com/meshrelay/meshrelay/pkg/version
ldflags="-s -w -X $pkg.Version=$version -X $pkg.Commit=$commit"

mkdir -p "$out"
cd "$here/.."
for bin in relay-server relay-agent relay-webhook relayctl; do
	CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$out/$bin" "./cmd/$bin"
done
# kubectl runs relayctl as `kubectl relay` when it is on the PATH as kubectl-relay.
ln -sf relayctl "$out/kubectl-relay"
