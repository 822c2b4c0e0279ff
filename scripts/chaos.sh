#!/usr/bin/env bash
# Crash bursts (issue 16, points 1 and 3): messages both ways across many conversations,
# Matrix, Telegram, Discord and email responders, while Switchboard, then Synapse, then the PostgreSQL
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
. "$REPO/scripts/measured.sh"
measured_run chaos e2e_chaos "scripts/chaos.sh $FORM $SEED" \
    "PostgreSQL from Debian, the Telegram and Discord stand-ins, the test mail server (aiosmtpd in front of Dovecot), all on loopback." \
    SWITCHBOARD_CHAOS="$FORM" SWITCHBOARD_CHAOS_SEED="$SEED"
