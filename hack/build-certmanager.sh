#!/usr/bin/env bash
# build-certmanager.sh builds cert-manager's controller from the module pinned in
# hack/certmanager/go.mod into DEST/cert-manager-controller (static,
# CGO_ENABLED=0), and writes that release's CRDs into DEST/crds for the local
# clusters. A binary or CRD folder already present in DEST is kept, so the build
# runs once per version.
#
# The CRDs come from the module's deploy/crds, which are Helm templates: the
# label values are templated and one line includes more labels. They get the
# values cert-manager's released cert-manager.crds.yaml carries, and the include
# line is dropped, so that the files are plain YAML kubectl and envtest apply.
#
# usage: hack/build-certmanager.sh DEST VERSION
set -euo pipefail

dest=${1:?usage: build-certmanager.sh DEST VERSION}
version=${2:?usage: build-certmanager.sh DEST VERSION}
here=$(cd "$(dirname "$0")" && pwd)
module=github.com/cert-manager/cert-manager

pinned=$(cd "$here/certmanager" && go list -m -f '{{.Version}}' "$module")
if [[ "$pinned" != "$version" ]]; then
	echo "hack/certmanager pins $module $pinned, but $version was asked for: build that version or change hack/certmanager/go.mod" >&2
	exit 1
fi

mkdir -p "$dest"
start=$SECONDS
if [[ -x "$dest/cert-manager-controller" ]]; then
	echo "[1/2] cert-manager-controller: present in $dest, kept"
else
	echo "[1/2] building cert-manager-controller from $module@$version/cmd/controller (a few minutes on two cores the first time)..."
	ldflags="-s -w -X $module/pkg/util.AppVersion=$version"
	(cd "$here/certmanager" && CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$dest/cert-manager-controller.tmp" "$module/cmd/controller")
	mv "$dest/cert-manager-controller.tmp" "$dest/cert-manager-controller"
	echo "[1/2] built cert-manager-controller in $((SECONDS - start))s"
fi

if [[ -d "$dest/crds" ]]; then
	echo "[2/2] CRDs: present in $dest/crds, kept"
else
	src=$(cd "$here/certmanager" && go list -m -f '{{.Dir}}' "$module")/deploy/crds
	tmp="$dest/crds.tmp"
	rm -rf "$tmp"
	mkdir -p "$tmp"
	for f in "$src"/crd-*.yaml; do
		out="$tmp/$(basename "$f")"
		sed -e "/{{- include \"labels\"/d" \
			-e "s/'{{ template \"cert-manager.name\" . }}'/cert-manager/" \
			-e "s/'{{ .Release.Name }}'/cert-manager/" \
			"$f" >"$out"
		if grep -n '{{' "$out" >&2; then
			echo "$f still holds Helm template text after stripping (lines above): update hack/build-certmanager.sh for $version" >&2
			exit 1
		fi
		chmod 0644 "$out"
	done
	mv "$tmp" "$dest/crds"
	echo "[2/2] wrote $(ls "$dest/crds" | wc -l) CRDs of $module@$version into $dest/crds"
fi
echo "cert-manager $version for the local clusters is in $dest ($((SECONDS - start))s)"
