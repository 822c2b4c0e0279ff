#!/usr/bin/env bash
# The abuse flood (issue 16, point 6): the visitor API flooded from many client addresses
# (loopback, one request in flight each) while a well-behaved visitor keeps talking with a
# Telegram responder; every answer counted by kind and status, the well-behaved visitor's
# messages timed, Switchboard's memory sampled. The figures go into docs/reliability.md
# (between the abuse markers).
#
#   scripts/abuse.sh [long|short]
#
# long (the default): 200 addresses for two minutes. short: the form the test suite runs
# (tests/e2e_abuse.rs, 40 addresses for 20 s). Exits non-zero if the flood did harm (a wrong
# answer, a limit not kept, a message of the well-behaved visitor lost), after writing the
# figures.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
FORM="${1:-long}"
case "$FORM" in long | short) ;; *) echo "usage: $0 [long|short]" >&2; exit 2 ;; esac
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/switchboard-target}"
OUT="$(mktemp)"
BLOCK="$(mktemp)"
trap 'rm -f "$OUT" "$BLOCK"' EXIT

# The same services as the test suite; only the abuse test runs against them.
status=0
SKIP_LINT=1 SWITCHBOARD_ABUSE="$FORM" SWITCHBOARD_ABUSE_REPORT="$OUT" \
    SWITCHBOARD_TEST_COMMAND="cargo test --locked --workspace --test e2e_abuse -- --nocapture" \
    bash scripts/test.sh || status=$?
[ -s "$OUT" ] || { echo "[abuse] the run wrote no figures (exit $status)" >&2; exit 1; }

commit="$(git rev-parse --short=12 HEAD)$(git diff --quiet HEAD -- bridge appservice src || echo ' plus uncommitted changes')"
synapse="$("${SWITCHBOARD_VENV:-$REPO/.venv}/bin/python" -c 'import importlib.metadata as m; print(m.version("matrix-synapse"))' 2>/dev/null || echo '?')"
CPU="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')"
{
    echo "Measured $(date +%F) by \`scripts/abuse.sh $FORM\` on commit $commit: debug build, $(nproc) cores ($CPU), Synapse $synapse (SQLite), the Telegram stand-in, Switchboard on SQLite, all on loopback; the flooding clients run in the same test process on the same cores."
    echo
    cat "$OUT"
} > "$BLOCK"
python3 "$REPO/scripts/doc-block.py" "$REPO/docs/reliability.md" abuse "$BLOCK"
echo "[abuse] docs/reliability.md updated (exit $status)"
exit "$status"
