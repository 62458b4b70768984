#!/usr/bin/env bash
# api-breaking.sh checks that the relay API (relay/api, a buf module) stays
# compatible with the newest release: it runs `buf breaking` against that
# release's image in relay/api/releases (written by make release), under
# the rules of buf.yaml. A relay-server of one release serves the agents of
# the release before it only while nothing they send or read was removed,
# renamed, renumbered or retyped (docs/releases.md, version skew).
#
# usage: BUF=bin/tools/buf hack/api-breaking.sh [MODULE]
#   MODULE         the buf module to check (default: the repository root)
#   API_RELEASES   the folder of release images (default: relay/api/releases)
# Exit status: 0 compatible, 1 incompatible, 2 could not check.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
buf=${BUF:-}
module=${1:-$root}
releases=${API_RELEASES:-$root/relay/api/releases}

if [[ -z "$buf" || ! -x "$buf" ]]; then
	echo "api-breaking: BUF='$buf' is not an executable: run make $root/bin/tools/buf and set BUF to it (make verify does both)" >&2
	exit 2
fi
buf=$(cd "$(dirname "$buf")" && pwd)/$(basename "$buf")

# The newest final release (vX.Y.Z, no pre-release suffix) by version order.
newest=
for f in "$releases"/v*.binpb; do
	[[ -e "$f" ]] || continue
	name=$(basename "$f" .binpb)
	[[ "$name" =~ ^v[0-9]+\.[0-9]+\.[0-9]+$ ]] || continue
	newest=$(printf '%s\n%s\n' "$newest" "$name" | sed '/^$/d' | sort -V | tail -n1)
done
if [[ -z "$newest" ]]; then
	echo "api-breaking: no release image (vX.Y.Z.binpb) in $releases: restore it from git, or write the first one with $buf build -o $releases/v0.1.0.binpb" >&2
	exit 2
fi

set +e
out=$(cd "$module" && "$buf" breaking --against "$releases/$newest.binpb" 2>&1)
rc=$?
set -e
case $rc in
0)
	echo "api-breaking: relay/api is compatible with release $newest"
	;;
100)
	echo "$out" >&2
	echo "api-breaking: relay/api breaks compatibility with release $newest (above): relay-agents of $newest and a relay-server built from here (or the reverse) may no longer understand each other." >&2
	echo "  add fields, messages and RPCs instead of removing, renaming, renumbering or retyping them; a deliberate break is a new package (relay/api/v2) served beside v1: see docs/releases.md" >&2
	exit 1
	;;
*)
	echo "$out" >&2
	echo "api-breaking: buf breaking against $releases/$newest.binpb failed to run (exit $rc)" >&2
	exit 2
	;;
esac
