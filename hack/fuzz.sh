#!/usr/bin/env bash
# fuzz.sh runs every Fuzz target in the module, one after another, each for
# FUZZTIME (a go test -fuzztime value such as 30s or 5000x).
#
# usage: FUZZTIME=30s hack/fuzz.sh
set -euo pipefail

fuzztime=${FUZZTIME:-30s}
cd "$(dirname "$0")/.."

total=0
for pkg in $(go list ./...); do
	targets=$(go test -list '^Fuzz' "$pkg" | grep '^Fuzz' || true)
	for target in $targets; do
		total=$((total + 1))
		echo "fuzzing $pkg $target for $fuzztime"
		go test -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" "$pkg"
	done
done
if [[ $total -eq 0 ]]; then
	echo "no Fuzz targets found: expected at least the pkg/pki decoders" >&2
	exit 1
fi
echo "ran $total fuzz targets for $fuzztime each"
