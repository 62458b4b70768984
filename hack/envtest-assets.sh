#!/usr/bin/env bash
# envtest-assets.sh provides the local-cluster binaries of Kubernetes VERSION
# (etcd, kube-apiserver, kube-controller-manager, kubectl) in DEST:
#   - when DEST holds all four, it does nothing;
#   - otherwise setup-envtest downloads the envtest archive of VERSION (etcd,
#     kube-apiserver and kubectl, in seconds), and hack/build-controlplane.sh
#     builds what is still missing from source: kube-controller-manager, which
#     no envtest archive carries, or all four when the download fails (no
#     network, or no archive for VERSION yet), about ten minutes on two cores.
#
# usage: hack/envtest-assets.sh DEST VERSION      (make envtest-assets runs it)
# environment:
#   SETUP_ENVTEST       setup-envtest (default bin/tools/setup-envtest, built
#                       from hack/tools when missing)
#   ENVTEST_STORE       setup-envtest's download folder (default bin/envtest)
#   ENVTEST_INDEX       the envtest release index to read (default setup-envtest's)
#   ENVTEST_DOWNLOAD=0  never download: build everything from source
#   BUILD_CONTROLPLANE  the source build (default hack/build-controlplane.sh)
set -euo pipefail

dest=${1:?usage: envtest-assets.sh DEST VERSION}
version=${2:?usage: envtest-assets.sh DEST VERSION}
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
setup=${SETUP_ENVTEST:-$root/bin/tools/setup-envtest}
store=${ENVTEST_STORE:-$root/bin/envtest}
build=${BUILD_CONTROLPLANE:-$here/build-controlplane.sh}

binaries=(etcd kube-apiserver kube-controller-manager kubectl)
# The binaries an envtest archive carries.
archived=(etcd kube-apiserver kubectl)

missing() {
	local b out=()
	for b in "$@"; do
		[[ -x "$dest/$b" && ! -d "$dest/$b" ]] || out+=("$b")
	done
	echo "${out[*]}"
}

if [[ -z "$(missing "${binaries[@]}")" ]]; then
	echo "control-plane binaries for Kubernetes $version: all present in $dest"
	exit 0
fi

# download: setup-envtest fetches VERSION's archive into the store; the
# archived binaries DEST lacks are copied from there. It returns non-zero,
# having said why, when it cannot.
download() {
	if [[ "${ENVTEST_DOWNLOAD:-}" == 0 ]]; then
		echo "ENVTEST_DOWNLOAD=0: not downloading"
		return 1
	fi
	if [[ ! -x "$setup" ]]; then
		echo "building setup-envtest (hack/tools) into $setup..."
		(cd "$root/hack/tools" && go build -o "$setup" sigs.k8s.io/controller-runtime/tools/setup-envtest) || return 1
	fi
	local args=(use "$version" --bin-dir "$store" -p path) dir b
	if [[ -n "${ENVTEST_INDEX:-}" ]]; then
		args+=(--index "$ENVTEST_INDEX")
	fi
	echo "downloading the envtest archive of Kubernetes $version with setup-envtest..."
	dir=$("$setup" "${args[@]}") || return 1
	mkdir -p "$dest"
	for b in $(missing "${archived[@]}"); do
		if [[ ! -x "$dir/$b" ]]; then
			echo "the envtest archive in $dir has no $b"
			return 1
		fi
		cp "$dir/$b" "$dest/$b.tmp" && mv "$dest/$b.tmp" "$dest/$b" || return 1
		echo "$b: from the envtest archive of Kubernetes $version"
	done
}

if download; then
	if rest=$(missing "${binaries[@]}") && [[ -n "$rest" ]]; then
		echo "building from source what the envtest archive lacks: $rest"
	fi
else
	echo "setup-envtest could not provide Kubernetes $version (above): building the missing binaries from source instead"
fi
exec "$build" "$dest" "$version"
