#!/usr/bin/env bash
# build-controlplane.sh builds the local-cluster binaries (etcd, kube-apiserver,
# kube-controller-manager, kubectl) from the Go modules pinned in
# hack/controlplane/go.mod into DEST, one binary at a time with progress.
# A binary already present in DEST is kept, so an interrupted build resumes.
#
# usage: hack/build-controlplane.sh DEST K8S_VERSION
set -euo pipefail

dest=${1:?usage: build-controlplane.sh DEST K8S_VERSION}
version=${2:?usage: build-controlplane.sh DEST K8S_VERSION}
here=$(cd "$(dirname "$0")" && pwd)

pinned=$(cd "$here/controlplane" && go list -m -f '{{.Version}}' k8s.io/kubernetes)
if [[ "$pinned" != "v$version" ]]; then
	echo "hack/controlplane pins k8s.io/kubernetes $pinned but go.mod's k8s.io/api asks for $version:" >&2
	echo "  set k8s.io/kubernetes v$version and the k8s.io/* replace lines to v0.${version#*.} in hack/controlplane/go.mod" >&2
	exit 1
fi

major=${version%%.*}
minor=${version#*.}; minor=${minor%%.*}
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
	ldflags+=" -X $pkg.gitVersion=v$version -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
	ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done

mkdir -p "$dest"
declare -A pkgs=(
	[etcd]=go.etcd.io/etcd/server/v3
	[kube-apiserver]=k8s.io/kubernetes/cmd/kube-apiserver
	[kube-controller-manager]=k8s.io/kubernetes/cmd/kube-controller-manager
	[kubectl]=k8s.io/kubernetes/cmd/kubectl
)
order=(etcd kube-apiserver kube-controller-manager kubectl)
start=$SECONDS
n=0
for name in "${order[@]}"; do
	n=$((n + 1))
	if [[ -x "$dest/$name" ]]; then
		echo "[$n/4] $name: present in $dest, kept"
		continue
	fi
	echo "[$n/4] building $name from ${pkgs[$name]} (a cold build of all four takes about ten minutes on two cores)..."
	t0=$SECONDS
	(cd "$here/controlplane" && CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$dest/$name.tmp" "${pkgs[$name]}")
	mv "$dest/$name.tmp" "$dest/$name"
	echo "[$n/4] built $name in $((SECONDS - t0))s"
done
echo "control-plane binaries for Kubernetes $version are in $dest ($((SECONDS - start))s)"
