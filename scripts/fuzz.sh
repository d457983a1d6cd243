#!/usr/bin/env bash
# Fuzzing campaign: every Fuzz target in the module, one at a time, for
# FUZZTIME each, then a table of target -> executions. Targets are found by
# scanning the *_test.go files for `func FuzzX(`, so a new target joins the
# campaign without being listed anywhere.
#
#   scripts/fuzz.sh                 # all targets, FUZZTIME (default 30s) each
#   FUZZTIME=2m scripts/fuzz.sh     # longer
#   FUZZ_MATCH='registry|verify' scripts/fuzz.sh   # targets whose
#                                   # "package/FuzzName" matches an ERE
#   FUZZ_PARALLEL=1                 # fuzz workers per target (go test -parallel)
#   FUZZ_NICE=19                    # niceness of the runs
#   FUZZ_MINIMIZETIME=100x          # go test -fuzzminimizetime: the default
#                                   # (60s per new input) spends short runs
#                                   # minimising big inputs (ELF objects),
#                                   # and go test counts none of those execs
#
# Go 1.26 may end a run with "context deadline exceeded" and no failing
# input (a race in its fuzz coordinator at the -fuzztime deadline,
# golang/go#75804, fixed in Go 1.27); such a run counts as ok and is marked
# "ok (go#75804)". A failure counts when go test wrote a failing input or
# failed otherwise.
#
# A crash leaves the failing input in PKG/testdata/fuzz/FuzzX/ (go test
# writes it there); commit it as a seed with the fix, so that plain go test
# (make test) replays it forever. The run goes on with the next target and
# exits 1 at the end when any target failed.
set -uo pipefail
cd "$(dirname "$0")/.."

FUZZTIME=${FUZZTIME:-30s}
FUZZ_MATCH=${FUZZ_MATCH:-.}
FUZZ_PARALLEL=${FUZZ_PARALLEL:-1}
FUZZ_NICE=${FUZZ_NICE:-19}
FUZZ_MINIMIZETIME=${FUZZ_MINIMIZETIME:-100x}
GO=${GO:-go}
LOGDIR=${FUZZ_LOGDIR:-$(mktemp -d -t kfm-fuzz.XXXXXX)}
mkdir -p "$LOGDIR"

module=$($GO list -m)
# "dir FuzzName" for every target, sorted.
targets=$(grep -rEo --include='*_test.go' '^func Fuzz[A-Za-z0-9_]*\(' . |
	sed -E 's#^\./(.*)/[^/]*_test\.go:func (Fuzz[A-Za-z0-9_]*)\($#\1 \2#' | sort -u)

results=()
failed=0
while read -r dir name; do
	[ -n "$dir" ] || continue
	id="$dir/$name"
	[[ $id =~ $FUZZ_MATCH ]] || continue
	log="$LOGDIR/$(echo "$id" | tr / _).log"
	echo "fuzz: $id for $FUZZTIME (log $log)" >&2
	nice -n "$FUZZ_NICE" $GO test -run '^$' -fuzz "^${name}\$" -fuzztime "$FUZZTIME" \
		-fuzzminimizetime "$FUZZ_MINIMIZETIME" -timeout 0 \
		-parallel "$FUZZ_PARALLEL" "$module/$dir" >"$log" 2>&1
	rc=$?
	# go test -fuzz prints "fuzz: elapsed: 30s, execs: 12345 (411/sec), ..."
	# every few seconds; the last one is the total.
	execs=$(grep -Eo 'execs: [0-9]+' "$log" | tail -1 | awk '{print $2}')
	# The average rate over the whole run (elapsed as 1h2m3s).
	secs=$(grep -Eo 'elapsed: [0-9hms]+' "$log" | tail -1 | awk '{print $2}' |
		awk '{ t=0; s=$1; while (match(s, /^[0-9]+[hms]/)) { n=substr(s, 1, RLENGTH-1); u=substr(s, RLENGTH, 1);
			t += n * (u=="h" ? 3600 : u=="m" ? 60 : 1); s=substr(s, RLENGTH+1) } print t }')
	rate=0
	[ -n "$execs" ] && [ "${secs:-0}" -gt 0 ] && rate=$((execs / secs))
	status=ok
	if [ $rc -ne 0 ] && ! grep -q 'Failing input written' "$log" &&
		grep -q '^    context deadline exceeded$' "$log" && [ -n "$execs" ]; then
		status="ok (go#75804)"
	elif [ $rc -ne 0 ]; then
		status=FAIL
		failed=1
		crasher=$(grep -Eo 'testdata/fuzz/[^ ]+' "$log" | head -1)
		[ -n "$crasher" ] && status="FAIL: $dir/$crasher"
	fi
	results+=("$(printf '%-52s %12s %8s  %s' "$id" "${execs:-0}" "${rate:-0}" "$status")")
done <<<"$targets"

printf '\nfuzz: %s per target, %s worker(s), nice %s, %s, load %s\n' "$FUZZTIME" "$FUZZ_PARALLEL" "$FUZZ_NICE" \
	"$(date -u +%Y-%m-%dT%H:%MZ)" "$(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-52s %12s %8s  %s\n' target execs /sec result
printf '%s\n' "${results[@]}"
exit $failed
