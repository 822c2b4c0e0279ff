# Shared by the scripts that measure Switchboard against the test suite's services and write
# the figures into docs/reliability.md (chaos.sh, abuse.sh, soak.sh). Source it, then call
#
#   measured_run NAME TEST SHOWN WHAT [VAR=VALUE ...]
#
# It runs only tests/TEST.rs under scripts/test.sh (the same services as the suite) with the
# VAR=VALUEs and SWITCHBOARD_<NAME>_REPORT set to a file the test writes its figures to, then
# puts "Measured DATE by `SHOWN` on commit C: debug build, CORES (CPU), Synapse V (SQLite),
# WHAT" and the figures between the NAME markers of docs/reliability.md. It returns the
# test's exit status, or 1 when the test wrote no figures.

measured_run() {
    local name="$1" test="$2" shown="$3" what="$4"
    shift 4
    local repo upper out block status=0
    repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
    upper="$(echo "$name" | tr '[:lower:]' '[:upper:]')"
    export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/switchboard-target}"
    out="$(mktemp)"
    block="$(mktemp)"
    env "$@" SKIP_LINT=1 "SWITCHBOARD_${upper}_REPORT=$out" \
        SWITCHBOARD_TEST_COMMAND="cargo test --locked --workspace --test $test -- --nocapture" \
        bash "$repo/scripts/test.sh" || status=$?
    if [ ! -s "$out" ]; then
        echo "[$name] the run wrote no figures (exit $status)" >&2
        rm -f "$out" "$block"
        return 1
    fi
    local commit synapse cpu
    commit="$(git -C "$repo" rev-parse --short=12 HEAD)$(git -C "$repo" diff --quiet HEAD -- bridge appservice src || echo ' plus uncommitted changes')"
    synapse="$("${SWITCHBOARD_VENV:-$repo/.venv}/bin/python" -c 'import importlib.metadata as m; print(m.version("matrix-synapse"))' 2>/dev/null || echo '?')"
    cpu="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')"
    {
        echo "Measured $(date +%F) by \`$shown\` on commit $commit: debug build, $(nproc) cores ($cpu), Synapse $synapse (SQLite), $what"
        echo
        cat "$out"
    } > "$block"
    python3 "$repo/scripts/doc-block.py" "$repo/docs/reliability.md" "$name" "$block"
    rm -f "$out" "$block"
    echo "[$name] docs/reliability.md updated (exit $status)"
    return "$status"
}
