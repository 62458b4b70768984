#!/usr/bin/env bash
# release.sh writes the files of release VERSION into DIST: the install
# manifests of each overlay rendered with kustomize and every meshrelay image
# pinned to VERSION (and to RELEASE_DIGEST when set), the packaged Helm chart,
# and SHA256SUMS of them all. For a final release (vX.Y.Z) it also writes the
# relay API's image relay/api/releases/VERSION.binpb, the baseline make verify
# checks later changes against. It never tags, pushes or publishes anything:
# it prints the commands that do. docs/releases.md tells the whole procedure.
#
# usage: hack/release.sh VERSION            (make release VERSION=vX.Y.Z runs it)
# environment:
#   KUBECTL         kubectl, whose kustomize renders the overlays (required)
#   BUF             buf, for the relay API's image and compatibility (required)
#   HELM            helm, to package charts/meshrelay (required when it exists)
#   DIST            where the files go (default: dist)
#   RELEASE_DIGEST  sha256:<64 hex> of the pushed image: pins image:VERSION@digest
#   ALLOW_DIRTY=1   release from a tree with uncommitted changes (for tests)
#   API_RELEASES    folder of the relay API's release images (default: relay/api/releases)
#   KREW_MANIFEST   the krew manifest template (default: plugins/relay.yaml)
#   RELEASE_PLATFORMS  os/arch list to build kubectl-relay for (default: every
#                   platform the krew manifest names; "none" builds none); the
#                   manifest is written only when all it names are built
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
image=ghcr.io/meshrelay/meshrelay
version=${1:-}
dist=${DIST:-$root/dist}
releases=${API_RELEASES:-$root/relay/api/releases}
digest=${RELEASE_DIGEST:-}

fail() {
	echo "release: $*" >&2
	exit 1
}

# tool NAME VAR: the absolute path of the executable VAR names, or a failure
# saying how to get it.
tool() {
	local name=$1 path=${!2:-}
	if [[ -z "$path" || ! -x "$path" || -d "$path" ]]; then
		fail "$2='$path' is not an executable $name: run make release, which builds the pinned $name and sets $2"
	fi
	echo "$(cd "$(dirname "$path")" && pwd)/$(basename "$path")"
}

# The version is an image tag, a label value and a chart version at once:
# semver with a leading v and an optional pre-release, no build metadata
# (an image tag cannot hold "+").
num='(0|[1-9][0-9]*)'
ident='(0|[1-9][0-9]*|[0-9]*[A-Za-z-][0-9A-Za-z-]*)'
if [[ -z "$version" ]]; then
	fail "no VERSION: make release VERSION=vX.Y.Z"
fi
if ! [[ "$version" =~ ^v$num\.$num\.$num(-$ident(\.$ident)*)?$ ]] || ((${#version} > 63)); then
	fail "VERSION=$version is not a release version: use semver with a leading v, such as v1.2.3 or v1.3.0-rc.1 (no build metadata, at most 63 characters)"
fi
final=
if [[ "$version" =~ ^v$num\.$num\.$num$ ]]; then
	final=1
fi
if [[ -n "$digest" && ! "$digest" =~ ^sha256:[0-9a-f]{64}$ ]]; then
	fail "RELEASE_DIGEST=$digest is not an image digest: give sha256:<64 lowercase hex digits>, as docker buildx imagetools inspect $image:$version prints it"
fi

kubectl=$(tool kubectl KUBECTL)
buf=$(tool buf BUF)
chart=
if [[ -f "$root/charts/meshrelay/Chart.yaml" ]]; then
	chart=$root/charts/meshrelay
	helm=$(tool helm HELM)
fi

cd "$root"
if ! git rev-parse --git-dir >/dev/null 2>&1; then
	fail "$root is not a git checkout: a release is cut from a commit"
fi
dirty=$(git status --porcelain)
if [[ -n "$dirty" && "${ALLOW_DIRTY:-}" != 1 ]]; then
	fail "the tree has uncommitted changes; commit or remove them (a release is made from a commit), or set ALLOW_DIRTY=1 for a trial run:
$dirty"
fi
if [[ -n "$dirty" ]]; then
	echo "release: ALLOW_DIRTY=1: a trial run from a tree with uncommitted changes, not a release to publish"
fi
head=$(git rev-parse HEAD)
if tagged=$(git rev-parse -q --verify "refs/tags/$version^{commit}"); then
	if [[ "$tagged" != "$head" ]]; then
		fail "$version is already tagged at $tagged, not at HEAD $head: a released version never changes; cut the next version"
	fi
fi

# The relay API must stay compatible with the last release (docs/releases.md).
rc=0
API_RELEASES=$releases BUF=$buf "$root/hack/api-breaking.sh" || rc=$?
case $rc in
0) ;;
1) fail "the relay API is not compatible with the last release (above): no release" ;;
*) fail "could not check the relay API against the last release (above): no release" ;;
esac

ref="$image:$version"
if [[ -n "$digest" ]]; then
	ref+="@$digest"
fi

# Everything is made in $work/dist first and moved into DIST at the end,
# so that a failed release leaves DIST as it was. kustomize renders a
# kustomization in bin/ (ignored by git) over each overlay: it loads bases
# by relative path only.
mkdir -p "$root/bin"
work=$(mktemp -d "$root/bin/release.XXXXXX")
trap 'rm -rf "$work"' EXIT
stage=$work/dist
mkdir "$stage"
files=()

# render DIR NAME: manifests/DIR with every meshrelay image pinned to ref and
# the version label set to the version, into meshrelay-NAME.yaml.
render() {
	local dir=$1 name=$2 out=$stage/meshrelay-$2.yaml
	mkdir -p "$work/$name"
	{
		echo "apiVersion: kustomize.config.k8s.io/v1beta1"
		echo "kind: Kustomization"
		echo "resources:"
		echo "  - ../../../manifests/$dir"
		echo "images:"
		echo "  - name: $image"
		echo "    newTag: $version"
		if [[ -n "$digest" ]]; then
			echo "    digest: $digest"
		fi
		echo "labels:"
		echo "  - pairs:"
		echo "      app.kubernetes.io/version: $version"
		echo "    includeSelectors: false"
		echo "    includeTemplates: true"
	} >"$work/$name/kustomization.yaml"
	{
		echo "# meshrelay $version: manifests/$dir, rendered by make release."
		if [[ "$dir" == */workload ]]; then
			echo "# It holds the example settings of manifests/$dir/settings.env"
			echo "# (cluster-1): before applying it to a workload cluster, set that cluster's"
			echo "# MESHRELAY_CLUSTER, MESHRELAY_SERVER_ADDRESS and MESHRELAY_AUTHORITY in both"
			echo "# meshrelay-settings ConfigMaps (and its name in the Certificate's dnsNames,"
			echo "# where there is one), or install the chart with --set cluster=<name>."
		fi
		"$kubectl" kustomize "$work/$name"
	} >"$out" || fail "failed to render manifests/$dir with kubectl kustomize"
	check_images "$out"
	files+=("$(basename "$out")")
}

# check_images FILE [WHAT]: fails unless every image in FILE is ref and
# nothing is left at latest.
check_images() {
	local file=$1 what=${2:-$(basename "$1")} bad
	bad=$(grep -nE '^[[:space:]]*(- )?image:' "$file" | grep -vF "image: $ref" || true)
	if [[ -n "$bad" ]]; then
		fail "$what has images other than $ref:
$bad"
	fi
	bad=$(grep -nE ':latest\b|app\.kubernetes\.io/version: "?latest' "$file" || true)
	if [[ -n "$bad" ]]; then
		fail "$what still says latest:
$bad"
	fi
}

render crds crds
for overlay in management workload cert-manager/management cert-manager/workload vault/management vault/workload; do
	render "overlays/$overlay" "${overlay//\//-}"
done

# The chart's appVersion is the version without its v; its image tag
# defaults to v<appVersion>. RELEASE_DIGEST goes into image.digest of a copy.
if [[ -n "$chart" ]]; then
	if [[ -n "$digest" ]]; then
		cp -R "$chart" "$work/chart"
		chart=$work/chart
		awk -v d="$digest" '
			/^image:/ { inimage = 1; print; next }
			/^[^ #]/ { inimage = 0 }
			inimage && /^  digest:/ { print "  digest: \"" d "\""; pinned = 1; next }
			{ print }
			END { exit !pinned }
		' "$root/charts/meshrelay/values.yaml" >"$chart/values.yaml" ||
			fail "charts/meshrelay/values.yaml has no image.digest value to pin RELEASE_DIGEST in"
	fi
	tgz=meshrelay-${version#v}.tgz
	"$helm" package "$chart" --version "${version#v}" --app-version "${version#v}" --destination "$stage" >/dev/null ||
		fail "failed to package charts/meshrelay with helm"
	"$helm" template meshrelay "$stage/$tgz" >"$work/chart.yaml" || fail "the packaged chart does not render with its defaults"
	check_images "$work/chart.yaml" "$tgz (helm template with its defaults)"
	files+=("$tgz")
else
	echo "release: no charts/meshrelay in this tree: no chart packaged"
fi

# sha256 FILE...: <sha256>  <file> lines.
sha256() {
	if command -v sha256sum >/dev/null; then
		sha256sum "$@"
	else
		shasum -a 256 "$@"
	fi
}

# The kubectl plugin: relayctl as kubectl-relay, with LICENSE, in
# kubectl-relay_VERSION_OS_ARCH.tar.gz for each platform of the krew manifest
# plugins/relay.yaml, which is written as relay.yaml with the version and each
# archive's SHA-256 in its placeholders.
krew=${KREW_MANIFEST:-$root/plugins/relay.yaml}
if [[ -f "$krew" ]]; then
	named=$(grep -o '{{SHA256_[a-z0-9]*_[a-z0-9]*}}' "$krew" | sed 's|{{SHA256_\(.*\)_\(.*\)}}|\1/\2|' | sort -u)
	platforms=${RELEASE_PLATFORMS:-$named}
	[[ "$platforms" != none ]] || platforms=
	[[ -f "$root/LICENSE" ]] || fail "no LICENSE to put beside kubectl-relay in its archives"
	# The version stamp of hack/build-binaries.sh, for one binary and platform.
	ldflags="-s -w -X github.com/meshrelay/meshrelay/pkg/version.Version=$version -X github.com/meshrelay/meshrelay/pkg/version.Commit=$head"
	tarflags=()
	if tar --version 2>/dev/null | grep -q 'GNU tar'; then
		tarflags=(--owner=0 --group=0 --numeric-owner --mtime=@0)
	fi
	# Its comments describe the template: left out.
	manifest=$(sed '/^[[:space:]]*#/d' "$krew")
	manifest=${manifest//'{{VERSION}}'/$version}
	for p in $platforms; do
		os=${p%/*} arch=${p#*/}
		dir=$work/krew/${os}_$arch
		archive=kubectl-relay_${version}_${os}_${arch}.tar.gz
		mkdir -p "$dir"
		echo "release: building kubectl-relay for $os/$arch"
		CGO_ENABLED=0 GOOS=$os GOARCH=$arch go build -trimpath -ldflags "$ldflags" -o "$dir/kubectl-relay" ./cmd/relayctl ||
			fail "failed to build kubectl-relay for $os/$arch"
		cp "$root/LICENSE" "$dir/LICENSE"
		tar "${tarflags[@]}" -C "$dir" -cf - kubectl-relay LICENSE | gzip -n >"$stage/$archive" ||
			fail "failed to write $archive"
		files+=("$archive")
		sum=$(cd "$stage" && sha256 "$archive")
		manifest=${manifest//"{{SHA256_${os}_${arch}}}"/${sum%% *}}
	done
	if [[ "$manifest" == *'{{'* ]]; then
		echo "release: the krew manifest is not written: RELEASE_PLATFORMS=${RELEASE_PLATFORMS:-} leaves out platforms it names ($(echo $named))"
	else
		printf '# krew plugin manifest of kubectl relay %s, written by make release.\n%s\n' "$version" "$manifest" >"$stage/relay.yaml"
		files+=(relay.yaml)
	fi
fi

(cd "$stage" && sha256 "${files[@]}" >SHA256SUMS)
files+=(SHA256SUMS)

if [[ -n "$final" ]]; then
	"$buf" build -o "$work/api.binpb" || fail "failed to build the relay API's image with buf"
fi

mkdir -p "$dist"
rm -f "$dist"/meshrelay-*.yaml "$dist"/meshrelay-*.tgz "$dist"/kubectl-relay_*.tar.gz "$dist/relay.yaml" "$dist/SHA256SUMS"
for f in "${files[@]}"; do
	mv "$stage/$f" "$dist/$f"
	echo "release: wrote $dist/$f"
done

baseline=
if [[ -n "$final" ]]; then
	baseline=$releases/$version.binpb
	if [[ -f "$baseline" ]] && cmp -s "$work/api.binpb" "$baseline"; then
		echo "release: $baseline is up to date"
		baseline=
	else
		mkdir -p "$releases"
		cp "$work/api.binpb" "$baseline"
		echo "release: wrote $baseline, the relay API of $version that later changes are checked against"
	fi
else
	echo "release: $version is a pre-release: the relay API baseline is written by final releases only"
fi

echo
echo "Release $version is in $dist (images: $ref). Next (docs/releases.md, cutting a release):"
if [[ -n "$baseline" ]]; then
	echo "  git add ${baseline#"$root"/} && git commit -m \"relay API: the $version baseline\""
	echo "  make release VERSION=$version   # again, on that commit: then it prints the tag to make"
	exit 0
fi
echo "  git tag -a $version -m \"meshrelay $version\" $head"
echo "  git push origin $version"
if [[ -z "$digest" ]]; then
	echo "  build and push $image:$version from the tag, then pin its digest:"
	echo "  make release VERSION=$version RELEASE_DIGEST=sha256:<digest>"
fi
