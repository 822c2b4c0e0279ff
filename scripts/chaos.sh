#!/usr/bin/env bash
# Crash bursts (issue 16, points 1 and 3): messages both ways across many conversations,
# Matrix, Telegram and Discord responders, while Switchboard, then Synapse, then the PostgreSQL
# under Switchboard is killed with SIGKILL at random points and started again, and last Synapse
# is kept down for five minutes while everyone keeps writing; every conversation is then counted
# where its people read it: lost, doubled, out of order. The figures go into docs/reliability.md
# (between the chaos markers).
#
#   scripts/chaos.sh [long|short] [SEED]
#
# long (the default): 20 conversations, 50 messages each way in each (1 000 each way per
# victim), five kills of Switchboard, three of Synapse, five of PostgreSQL. short: the form the
# test suite runs (tests/e2e_chaos.rs). SEED repeats an earlier run's kill points and pacing.
# Exits non-zero if anything was lost, doubled or reordered, after writing the figures.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
FORM="${1:-long}"
SEED="${2:-$(date +%s)}"
case "$FORM" in long | short) ;; *) echo "usage: $0 [long|short] [SEED]" >&2; exit 2 ;; esac
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/switchboard-target}"
OUT="$(mktemp)"
trap 'rm -f "$OUT"' EXIT

# The same services as the test suite; only the chaos test runs against them.
status=0
SKIP_LINT=1 SWITCHBOARD_CHAOS="$FORM" SWITCHBOARD_CHAOS_SEED="$SEED" SWITCHBOARD_CHAOS_REPORT="$OUT" \
    SWITCHBOARD_TEST_COMMAND="cargo test --locked --workspace --test e2e_chaos -- --nocapture" \
    bash scripts/test.sh || status=$?
[ -s "$OUT" ] || { echo "[chaos] the run wrote no figures (exit $status)" >&2; exit 1; }

commit="$(git rev-parse --short=12 HEAD)$(git diff --quiet HEAD -- bridge appservice src || echo ' plus uncommitted changes')"
synapse="$("${SWITCHBOARD_VENV:-$REPO/.venv}/bin/python" -c 'import importlib.metadata as m; print(m.version("matrix-synapse"))' 2>/dev/null || echo '?')"
CPU="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')"
BLOCK="$(mktemp)"
trap 'rm -f "$OUT" "$BLOCK"' EXIT
{
    echo "Measured $(date +%F) by \`scripts/chaos.sh $FORM $SEED\` on commit $commit: debug build, $(nproc) cores ($CPU), Synapse $synapse (SQLite), PostgreSQL from Debian, the Telegram and Discord stand-ins, all on loopback."
    echo
    cat "$OUT"
} > "$BLOCK"
python3 "$REPO/scripts/doc-block.py" "$REPO/docs/reliability.md" chaos "$BLOCK"
echo "[chaos] docs/reliability.md updated (exit $status)"
exit "$status"
