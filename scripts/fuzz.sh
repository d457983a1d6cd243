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
#
# Campaign of 2026-12-05, 11:50-13:20 UTC (go1.26.8, kernel 6.18, 2 cores
# shared with seven other engineers' builds and tests: load average 30-45,
# 12-27 during the chain runs; every run at nice 19 with one worker, so
# each target got a small slice of one core, and the figures are far below
# what an idle machine reaches). Executions as go test -fuzz counts them (minimisation
# excluded), FUZZTIME per target as shown:
#
#   target                                     time     execs  found
#   bpf/FuzzMapLayout                           90s    138601
#   bpf/FuzzParamCanonical                      90s    224165
#   bpf/FuzzParseObject                         90s    135137  metadata error without ErrInvalidObject (fixed)
#   bpf/analyze/FuzzInstructions                90s    372080
#   bpf/dispatcher/FuzzParseConfig              90s    107979
#   bpf/internal/pinmeta/FuzzDecode             90s    552115
#   bpf/rewrite/FuzzRewriteVM                   90s    438355
#   bpf/rewrite/FuzzVerifier                    90s      7320  TCNextGated unreachable block (fixed)
#   internal/kernelvm/FuzzBzPayload             90s    595893  ELF note size allocation, OOM (fixed)
#   internal/kernelvm/FuzzConsole               90s    510352
#   internal/kernelvm/FuzzKernelPackage         90s    495008  non-Debian package name accepted (fixed)
#   internal/kernelvm/FuzzModulesDep            90s    394587
#   verify/FuzzCopySignatures                   90s     51508
#   verify/FuzzParseKeys                        90s     71944
#   verify/FuzzParsePolicy                      90s     77097
#   verify/FuzzParseRekorBundle                 90s     60873
#   verify/FuzzSignatures                       90s     26399
#   registry/FuzzCheckSPDX                      45s     50122
#   registry/FuzzFetchMetadata                  45s     20738
#   registry/FuzzFetchReferrers                 45s     10149
#   registry/FuzzLoad                           45s     27575
#   registry/FuzzParseBundleFile                45s     70756
#   registry/FuzzParseConfig                    45s     39685
#   registry/FuzzParseReference                 45s     56553
#   registry/bpfman/FuzzParseImageConfig        45s    368460
#   registry/bpfman/FuzzReadLayer               45s    378216
#   registry/catalog/FuzzParseIndex             45s     36573
#   registry/catalog/FuzzParseNamespace         45s     72206
#   registry/catalog/FuzzVersions               45s     65298
#   registry/catalog/site/FuzzRenderMarkdown    45s     61756
#   registry/catalog/site/FuzzSlugs             45s     88464
#   chain/FuzzLoadState                         60s     29900  null hook or element panicked every command (fixed)
#   chain/FuzzNamePatterns                      60s     67402
#   chain/FuzzNetnsPath                         60s     87819
#   chain/FuzzParseLock                         60s     84060  (ended by go#75804, no input)
#   chain/FuzzParseManifest                     60s     88355
#   chain/FuzzVersionRange                      60s     96454
#   chain/agent/FuzzSelect                      60s     83399
#   chain/agent/configdir/FuzzLoad              60s     16538
#   chain/agent/kubernetes/FuzzChainSet         60s     39099
#
# FuzzLoadState's first seeds found its bug before the campaign started.
# Targets whose crash ended a run were run again, fixed, for the full time;
# every crasher is a seed in PKG/testdata/fuzz/FuzzX/. Reproduce with
# FUZZTIME=90s make fuzz (about 40 x (FUZZTIME + build) in all; the first
# build of a package with -fuzz instruments all its dependencies, which for
# chain/agent/kubernetes took 45 minutes of this loaded machine).

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
