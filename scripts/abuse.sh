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
. "$REPO/scripts/measured.sh"
measured_run abuse e2e_abuse "scripts/abuse.sh $FORM" \
    "the Telegram stand-in, Switchboard on SQLite, all on loopback; the flooding clients run in the same test process on the same cores." \
    SWITCHBOARD_ABUSE="$FORM"
