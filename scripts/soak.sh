#!/usr/bin/env bash
# The soak (issue 16, point 4): 500 conversations held at once by Telegram responders, every
# visitor writing about once a minute and every message answered, while Switchboard's memory,
# threads, file descriptors, sockets, live tasks and database connections are read window by
# window and every message is timed; afterwards every message is counted where it arrived.
# The figures go into docs/reliability.md (between the soak markers).
#
#   scripts/soak.sh [long|short] [SEED]
#
# long (the default): thirty minutes. short: the form the test suite runs (tests/e2e_soak.rs,
# five minutes). Exits non-zero if a message was lost, doubled or reordered, or memory,
# descriptors, tasks or latency grew past the bounds tests/soak/mod.rs states, after writing
# the figures.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
FORM="${1:-long}"
SEED="${2:-$(date +%s)}"
case "$FORM" in long | short) ;; *) echo "usage: $0 [long|short] [SEED]" >&2; exit 2 ;; esac
. "$REPO/scripts/measured.sh"
measured_run soak e2e_soak "scripts/soak.sh $FORM $SEED" \
    "the Telegram stand-in, Switchboard on SQLite, all on loopback; the visitors and responders run in the test process on the same cores." \
    SWITCHBOARD_SOAK="$FORM" SWITCHBOARD_SOAK_SEED="$SEED"
