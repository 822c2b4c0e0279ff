#!/usr/bin/env bash
# Relay benchmark: message latency through Switchboard on a real Synapse and the Telegram
# stand-in, release build. Rewrites the relay section of docs/benchmarks.md.
#
#   scripts/bench.sh [N]      N samples per path (default 30)
#
# It starts the same services as the test suite (scripts/test.sh with SWITCHBOARD_TEST_COMMAND)
# and runs examples/bench_relay.rs against them. A measurement, not a test: nothing is asserted.
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
python3 - "$REPO/docs/benchmarks.md" "$OUT" "$N" "$(nproc)" "$synapse_version" <<'PY'
import datetime, pathlib, sys
doc, out, n, cores, synapse = sys.argv[1:]
table = pathlib.Path(out).read_text().strip()
block = (
    "<!-- relay-bench:start -->\n"
    f"Measured {datetime.date.today()} by `scripts/bench.sh {n}`: release build, {cores} cores, "
    f"Synapse {synapse} (SQLite) and the Telegram stand-in on loopback, Switchboard on SQLite.\n\n"
    f"{table}\n"
    "<!-- relay-bench:end -->"
)
path = pathlib.Path(doc)
text = path.read_text()
start, end = "<!-- relay-bench:start -->", "<!-- relay-bench:end -->"
if start in text:
    before, rest = text.split(start, 1)
    text = before + block + rest.split(end, 1)[1]
else:
    text = text.rstrip("\n") + "\n\n## Relay\n\n" + (
        "How long a message takes through Switchboard, end to end: `scripts/bench.sh [N]` starts "
        "the test suite's services (Synapse, the Telegram stand-in), runs `examples/bench_relay.rs` "
        "against a release build and rewrites the block below. Each sample runs from the moment the "
        "sender's request goes out until the other side has the message. Visitor → Telegram samples "
        "are spaced over a second apart because Switchboard paces itself to Telegram's limit of about "
        "one message per second per chat: these are latencies, not throughput.\n\n"
    ) + block + "\n"
path.write_text(text)
print(block)
PY
