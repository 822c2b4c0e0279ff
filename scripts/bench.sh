#!/usr/bin/env bash
# The benchmark of issue 11, in one run, side by side: Synapse's own client → client floor,
# bridged latency both ways for a Matrix, a Telegram, a Discord and an email responder, ingest
# throughput (acknowledged and processed) of a 40 000-event flood, a quiet conversation's
# latency under a second flood, Switchboard's CPU per relayed message and its memory with 1k
# and 10k stored conversations; then (issue 17) a flood with one and with two instances on one
# PostgreSQL behind HAProxy, and failovers. Release build. Rewrites the relay section of
# docs/benchmarks.md.
#
#   scripts/bench.sh [N]      N samples per unpaced latency path (default 30; paths paced to
#                             Telegram's one message a second per chat, and the email paths,
#                             take at most 20)
#
# It starts the same services as the test suite (scripts/test.sh with SWITCHBOARD_TEST_COMMAND)
# and runs examples/bench_relay/ against them. A measurement, not a test: nothing is asserted.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/switchboard-target}"
N="${1:-30}"
OUT="$(mktemp)"
trap 'rm -f "$OUT"' EXIT

cargo build --release --locked --bin switchboard --example bench_relay
REL="$CARGO_TARGET_DIR/release"
SKIP_LINT=1 SWITCHBOARD_TEST_COMMAND="SWITCHBOARD_BIN='$REL/switchboard' '$REL/examples/bench_relay' $N >'$OUT'" \
    bash scripts/test.sh

synapse_version="$("${SWITCHBOARD_VENV:-$REPO/.venv}/bin/python" -c 'import importlib.metadata as m; print(m.version("matrix-synapse"))' 2>/dev/null || echo '?')"
commit="$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- bridge appservice src || echo ' plus uncommitted changes')"
python3 - "$REPO/docs/benchmarks.md" "$OUT" "$N" "$(nproc)" "$synapse_version" "$commit" <<'PY'
import datetime, pathlib, sys
doc, out, n, cores, synapse, commit = sys.argv[1:]
table = pathlib.Path(out).read_text().strip()
block = (
    "<!-- relay-bench:start -->\n"
    f"Measured {datetime.date.today()} by `scripts/bench.sh {n}` on {commit}: release build, "
    f"{cores} cores, Synapse {synapse} (SQLite), the Telegram and Discord stand-ins, the test "
    "mail server (aiosmtpd in front of Dovecot) and Switchboard (SQLite; the several-instances "
    "rows on the test PostgreSQL behind Debian's HAProxy) on loopback, all in one run.\n\n"
    f"{table}\n"
    "<!-- relay-bench:end -->"
)
path = pathlib.Path(doc)
text = path.read_text()
start, end = "<!-- relay-bench:start -->", "<!-- relay-bench:end -->"
if start not in text:
    sys.exit(f"{doc} has no {start} block to rewrite")
before, rest = text.split(start, 1)
path.write_text(before + block + rest.split(end, 1)[1])
print(block)
PY
