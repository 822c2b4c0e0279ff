#!/usr/bin/env bash
# Coverage-guided fuzzing of every parser that reads input from outside (issue 16 point 5):
# the targets of `switchboard_bridge::fuzzing`, built by cargo-fuzz with libFuzzer and
# AddressSanitizer on the nightly toolchain, each run for RUNS executions, its corpus then
# minimised, and the figures written to docs/reliability.md (between the fuzz markers).
#
#   scripts/fuzz.sh [RUNS] [TARGET...]     RUNS default 10000000; all targets by default
#   FUZZ_SECONDS=N scripts/fuzz.sh ...      also stop each target after N seconds
#   FUZZ_JOBS=N scripts/fuzz.sh ...         run N targets at a time (default: one per core)
#   FUZZ_SANITIZER=none scripts/fuzz.sh ... build without AddressSanitizer (default: address)
#   FUZZ_MAX_LEN=N scripts/fuzz.sh ...      largest input libFuzzer makes (default 65536)
#   FUZZ_WORKERS=N scripts/fuzz.sh ...      run each target as N fuzzers sharing its corpus
#
# Each target's row in docs/reliability.md is its latest run: a campaign over some targets
# rewrites their rows and keeps the others', each row saying when, on which commit and with
# which settings it ran.
#
# Without AddressSanitizer the targets run several times faster (10⁷ executions of the
# slowest, matrix_to_platforms, still take two hours or more on this machine); our code is
# safe Rust, so what AddressSanitizer adds is a check of the unsafe code in our dependencies
# (html5ever, tendril, serde_json). Panics (every invariant the targets assert), timeouts
# and running out of memory are findings either way.
#
# Installs cargo-fuzz (crates.io) when it is missing. Needs a nightly toolchain: this
# machine image has one (`rustup toolchain list`); elsewhere `rustup toolchain install
# nightly` first. Any finding (a crash, a timeout, a leak) stops nothing: every target runs,
# the findings are listed with their input under fuzz/artifacts/, and the script exits 1.
# Copy a fixed finding to fuzz/regressions/<target>/ so bridge/tests/fuzz_corpora.rs replays
# it on stable Rust for ever. Targets run one per core at a time (FUZZ_JOBS).
#
# FUZZ_WORKERS=N puts N cores on one target in one campaign: libFuzzer's parallel mode
# (-jobs=N -workers=N) runs N fuzzer processes at once on the same corpus directory, each
# reloading what the others add to it, each for RUNS/N executions; the run's executions are
# the sum of theirs. (Fork mode, -fork=N, was tried first: with a corpus of thousands of
# inputs its children, each started on a small slice of it, made a third of a plain
# process's executions a second.)
#
# Beside other work, run it at a low priority with `nice`, never at idle priority (`chrt -i`):
# libFuzzer's -timeout counts wall time, and a fuzzer that a build starves of CPU for ten
# seconds reports the input it was on as a timeout, a finding that is not one.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO/fuzz"
RUNS="${1:-10000000}"
JOBS="${FUZZ_JOBS:-$(nproc)}"
SANITIZER="${FUZZ_SANITIZER:-address}"
MAX_LEN="${FUZZ_MAX_LEN:-65536}"
WORKERS="${FUZZ_WORKERS:-1}"
shift || true
if [ $# -gt 0 ]; then
    TARGETS=("$@")
else
    mapfile -t TARGETS < <(ls fuzz_targets | sed 's/\.rs$//')
fi

if [ "$WORKERS" -gt 1 ] && [ "$JOBS" -gt 1 ] && [ "${#TARGETS[@]}" -gt 1 ]; then
    # The workers' logs are fuzz-<job>.log in fuzz/: two targets' workers would share them.
    echo "scripts/fuzz.sh: FUZZ_WORKERS needs FUZZ_JOBS=1 (one target at a time)" >&2
    exit 2
fi
if ! rustup toolchain list | grep -q '^nightly'; then
    echo "scripts/fuzz.sh: no nightly toolchain; run: rustup toolchain install nightly" >&2
    exit 2
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    cargo install --locked cargo-fuzz
fi

LOGS="$(mktemp -d)"
trap 'rm -rf "$LOGS"' EXIT
echo "[fuzz] building the targets"
cargo +nightly fuzz build -O --sanitizer "$SANITIZER" 2>&1 | tail -3

run_one() {
    local target="$1" runs="$2" logs="$3"
    mkdir -p "corpus/$target" "artifacts/$target"
    local start=$SECONDS status=0
    # Findings are counted from this run on: older ones, once fixed, live in regressions/.
    touch "$logs/$target.start"
    # -max_len: by default the largest body any of these entry points accepts whole (a
    # homeserver transaction event is limited to 64 KiB); -timeout: a single input taking
    # this long is a finding.
    local cap=()
    [ -n "${FUZZ_SECONDS:-}" ] && cap=(-max_total_time="$FUZZ_SECONDS")
    if [ "$WORKERS" -gt 1 ]; then
        # Each worker's whole output is copied into this log when it ends (libFuzzer's
        # fuzz-<job>.log in fuzz/, removed below).
        cap+=(-jobs="$WORKERS" -workers="$WORKERS")
        runs=$(((runs + WORKERS - 1) / WORKERS))
    fi
    cargo +nightly fuzz run -O --sanitizer "$SANITIZER" "$target" "corpus/$target" -- \
        -runs="$runs" "${cap[@]}" -max_len="$MAX_LEN" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 >"$logs/$target.log" 2>&1 || status=$?
    rm -f fuzz-[0-9]*.log
    echo "$status $((SECONDS - start))" >"$logs/$target.result"
    echo "[fuzz] $target: exit $status after $((SECONDS - start)) s"
}
export -f run_one

export SANITIZER MAX_LEN WORKERS
printf '%s\n' "${TARGETS[@]}" |
    xargs -P "$JOBS" -I{} bash -c 'run_one "$1" "$2" "$3"' _ {} "$RUNS" "$LOGS"

# Keep only the inputs that add coverage: the corpus is committed and replayed by the tests.
for target in "${TARGETS[@]}"; do
    cargo +nightly fuzz cmin -O --sanitizer "$SANITIZER" "$target" "corpus/$target" >"$LOGS/$target.cmin" 2>&1 || true
done

NIGHTLY="$(rustc +nightly --version)"
if [ "$SANITIZER" = none ]; then
    SANITIZED="without a sanitizer"
else
    SANITIZED="with sanitizer $SANITIZER"
fi
FUZZ_VERSION="$(cargo +nightly fuzz --version)"
CPU="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')"
COMMIT="$(git -C "$REPO" rev-parse --short=12 HEAD 2>/dev/null || echo unknown)"
FOUND=0
SETTINGS="$(date -u +%Y-%m-%d), $COMMIT, $RUNS runs${FUZZ_SECONDS:+ or $FUZZ_SECONDS s}, $SANITIZED, max_len $MAX_LEN, $JOBS at a time$([ "$WORKERS" -gt 1 ] && echo ", $WORKERS workers each")"
for target in "${TARGETS[@]}"; do
    read -r status secs <"$LOGS/$target.result"
    log="$LOGS/$target.log"
    # One final statistics block per worker: the run's executions are their sum.
    execs="$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$' |
        awk '{ n += $1 } END { if (NR) print n }')"
    speed="$([ -n "$execs" ] && [ "$secs" -gt 0 ] && echo $((execs / secs)) || true)"
    edges="$(grep -oE 'cov: [0-9]+' "$log" | tail -1 | grep -oE '[0-9]+')"
    findings="$(find "artifacts/$target" -type f -newer "$LOGS/$target.start" | wc -l)"
    corpus="$(find "corpus/$target" -type f | wc -l)"
    if [ "$status" != 0 ] || [ "$findings" != 0 ]; then
        FOUND=1
        findings="**$findings** (exit $status; see fuzz/artifacts/$target)"
    fi
    echo "| \`$target\` | ${execs:-?} | $secs | ${speed:-?} | $findings | $corpus | ${edges:-?} | $SETTINGS |"
done >"$LOGS/rows.md"
cat "$LOGS/rows.md"

# The block keeps the rows of the targets this campaign did not run.
python3 "$REPO/scripts/fuzz-table.py" "$REPO/docs/reliability.md" "$LOGS/rows.md" \
    "$(nproc) cores ($CPU), $NIGHTLY, $FUZZ_VERSION" >"$LOGS/table.md"
python3 "$REPO/scripts/doc-block.py" "$REPO/docs/reliability.md" fuzz "$LOGS/table.md"
echo "[fuzz] docs/reliability.md updated"
exit "$FOUND"
