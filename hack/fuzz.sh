#!/usr/bin/env bash
# fuzz.sh runs every Fuzz target in the module, one after another, each for
# FUZZTIME, and ends with a table of each target's executions.
#
#   FUZZTIME          a duration (30s, 5m, 1h) or a number of executions
#                     (5000x); default 30s
#   FUZZMINIMIZETIME  the -fuzzminimizetime of each target: how much the
#                     engine spends shrinking each new input, in executions
#                     (100x) or time (60s); default 100x
#
# usage: FUZZTIME=30s hack/fuzz.sh
#
# Each package's test binary is built once with fuzzing instrumentation and
# run from its package folder with the corpus cache go test uses, as go test
# runs it. Two things differ from go test -fuzz -fuzztime:
#   - A duration is enforced by interrupting the binary (SIGINT) when it runs
#     out, which the engine takes as a normal stop. With -fuzztime, the
#     engine's own deadline can race its shutdown and fail a target with
#     "context deadline exceeded" and no failing input (go.dev/issue/75804,
#     in Go 1.26 and earlier); the longer the engine is busy minimizing when
#     time runs out, the likelier.
#   - Minimization is bounded by FUZZMINIMIZETIME. go test's default, 60s per
#     input, stalls a target for seconds on every input that adds coverage
#     when one execution takes milliseconds (a TLS handshake, a YAML
#     stream). To shrink a failing input further, run its target again with
#     FUZZMINIMIZETIME=60s.
set -euo pipefail

fuzztime=${FUZZTIME:-30s}
minimizetime=${FUZZMINIMIZETIME:-100x}
cd "$(dirname "$0")/.."

duration='^[0-9]+[smh]$'
count='^[0-9]+x$'
if [[ ! $fuzztime =~ $duration && ! $fuzztime =~ $count ]]; then
	echo "FUZZTIME=$fuzztime: use a whole number of seconds, minutes or hours (30s, 5m, 1h) or of executions (5000x)" >&2
	exit 2
fi
if [[ ! $minimizetime =~ $duration && ! $minimizetime =~ $count && $minimizetime != 0 ]]; then
	echo "FUZZMINIMIZETIME=$minimizetime: use a number of executions (100x), a duration (60s), or 0 for none" >&2
	exit 2
fi

cache=$(go env GOCACHE)/fuzz
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# run_target fuzzes target with the test binary bin in the folder dir of
# package pkg, writing the engine's output to log as it goes.
run_target() {
	local bin=$1 dir=$2 pkg=$3 target=$4 log=$5
	local args=(-test.run '^$' -test.fuzz "^${target}\$" -test.fuzzcachedir "$cache/$pkg" -test.fuzzminimizetime "$minimizetime")
	if [[ $fuzztime =~ $count ]]; then
		(cd "$dir" && "$bin" "${args[@]}" -test.fuzztime "$fuzztime") 2>&1 | tee "$log"
		return "${PIPESTATUS[0]}"
	fi
	# The binary runs in its own process group with its workers; SIGINT
	# stops them all, and KILL follows if they are not gone 30s later.
	(cd "$dir" && timeout --preserve-status --kill-after 30s --signal INT "$fuzztime" "$bin" "${args[@]}") 2>&1 | tee "$log"
	return "${PIPESTATUS[0]}"
}

total=0
failed=()
rows=()
while read -r pkg dir <&3; do
	grep -qs '^func Fuzz' "$dir"/*_test.go || continue
	if ! listed=$(go test -list '^Fuzz' "$pkg" 2>&1); then
		echo "$listed" >&2
		echo "failed to list the Fuzz targets of $pkg: its tests do not build" >&2
		failed+=("$pkg (build)")
		continue
	fi
	targets=$(grep '^Fuzz' <<<"$listed" || true)
	[[ -n $targets ]] || continue
	bin=$work/$(basename "$dir").test
	if ! go test -c -fuzz . -o "$bin" "$pkg"; then
		echo "failed to build the fuzzing test binary of $pkg" >&2
		failed+=("$pkg (build)")
		continue
	fi
	for target in $targets; do
		total=$((total + 1))
		echo "fuzzing $pkg $target for $fuzztime"
		log=$work/$target.log
		result=ok
		if ! run_target "$bin" "$dir" "$pkg" "$target" "$log"; then
			result=FAIL
			failed+=("$pkg $target")
		fi
		# The engine's last status line: "fuzz: elapsed: 30s, execs: 123456
		# (4115/sec), new interesting: 3 (total: 45)".
		# Before it, the engine runs the corpus it has for a baseline
		# ("gathering baseline coverage: 80/153 completed"); a run that ends
		# there made no new executions.
		last=$(grep -E '^fuzz: elapsed: [^,]+, execs: [0-9]+' "$log" | tail -n 1 || true)
		baseline=$(sed -nE 's/^fuzz: elapsed: [^,]+, gathering baseline coverage: ([0-9]+\/[0-9]+) completed.*/\1/p' "$log" | tail -n 1)
		elapsed=$(sed -nE 's/^fuzz: elapsed: ([^,]+),.*/\1/p' "$log" | tail -n 1)
		execs=$(sed -nE 's/.* execs: ([0-9]+) .*/\1/p' <<<"$last")
		interesting=$(sed -nE 's/.*new interesting: ([0-9]+) \(total: ([0-9]+)\).*/\1 of \2/p' <<<"$last")
		if [[ -z $last ]]; then
			execs=0 interesting="none: the corpus baseline ran ${baseline:-?}"
		fi
		rows+=("$(printf '%-6s  %-48s  %-34s  %12s  %8s  %s' "$result" "${pkg#github.com/meshrelay/meshrelay/}" "$target" "${execs:-?}" "${elapsed:-?}" "${interesting:-?}")")
	done
done 3< <(go list -f '{{.ImportPath}} {{.Dir}}' ./...)

if [[ $total -eq 0 ]]; then
	echo "no Fuzz targets found: expected at least the pkg/pki decoders" >&2
	exit 1
fi
echo
echo "fuzzed $total targets for $fuzztime each (minimization $minimizetime per input):"
printf '%-6s  %-48s  %-34s  %12s  %8s  %s\n' result package target executions elapsed "new inputs (of corpus)"
printf '%s\n' "${rows[@]}"
if [[ ${#failed[@]} -gt 0 ]]; then
	echo
	echo "failed: ${failed[*]}" >&2
	echo "a failing input is under the package's testdata/fuzz/<target>/: run it again with go test -run '<target>/<file>' <package>" >&2
	exit 1
fi
