#!/usr/bin/env bash
# Run Switchboard's whole test suite: the one command for developers and CI.
#
#   scripts/test.sh [extra args for `cargo test`]    e.g. scripts/test.sh -- --nocapture
#
# It builds everything, starts ONE Synapse (with 8 pre-registered appservice slots) and ONE
# PostgreSQL for the whole run, exports where they are, runs `cargo test`, and tears it all
# down again. Set KEEP_TEST_DIR=1 to keep the temp dir (logs, databases) when tests fail.
#
# Environment handed to the tests:
#   SWITCHBOARD_TEST_HS_URL         http://127.0.0.1:PORT of the Synapse
#   SWITCHBOARD_TEST_SERVER_NAME    localhost
#   SWITCHBOARD_TEST_SHARED_SECRET  Synapse's registration_shared_secret (admin register API)
#   SWITCHBOARD_TEST_POSTGRES_URL   postgres://postgres@127.0.0.1:PORT/postgres (trust auth)
#   SWITCHBOARD_TEST_DIR            the run's temp dir; appservice slot i (0..7) has its
#                                   registration at $SWITCHBOARD_TEST_DIR/appservices/i/registration.yaml
#                                   (id sbtest<i>, bot @sbt<i>bot, ghosts @_sbt<i>_*)
#   SWITCHBOARD_TEST_AS_SLOTS       8
#   SWITCHBOARD_TEST_AS_PORT_<i>    the port slot i's registration points Synapse at
#   SWITCHBOARD_BIN                 the built switchboard binary
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
# Build outside the clone so CI's fresh clones reuse earlier builds.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/switchboard-target}"
SLOTS=8
T0=$SECONDS

log() { echo "[test.sh] $*" >&2; }

"$REPO/scripts/widget.sh" setup # chromium + npm packages for tests/e2e_widget.rs; fails if the committed widget bundle is stale

# ---- build ---------------------------------------------------------------------------------
locked=()
[ -f Cargo.lock ] && locked=(--locked) # CI must build exactly the committed lock file
log "cargo build --workspace --all-targets ${locked[*]} (CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
t=$SECONDS
cargo build --workspace --all-targets "${locked[@]}"
log "build took $((SECONDS - t)) s"
export SWITCHBOARD_BIN="$CARGO_TARGET_DIR/debug/switchboard"

# Lints live in Cargo.toml ([workspace.lints]); here they gate the run. SKIP_LINT=1 skips them
# while iterating locally; CI never sets it.
if [ "${SKIP_LINT:-0}" != 1 ]; then
    t=$SECONDS
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets "${locked[@]}" -- -D warnings
    log "lint took $((SECONDS - t)) s"
fi
[ -x "$SWITCHBOARD_BIN" ] || { log "error: $SWITCHBOARD_BIN was not built"; exit 1; }

# ---- temp dir and teardown ----------------------------------------------------------------
T="$(mktemp -d /tmp/switchboard-test.XXXXXX)"
# mktemp makes it 0700; the postgres user (PostgreSQL refuses to run as root) must reach T/pg.
chmod 755 "$T"

# shellcheck disable=SC2317  # invoked from the EXIT trap
cleanup() {
    local status=$?
    trap - EXIT INT TERM
    "$REPO/scripts/synapse.sh" stop "$T/synapse" >/dev/null 2>&1 || true
    "$REPO/scripts/postgres.sh" stop "$T/pg" >/dev/null 2>&1 || true
    if [ "$status" -ne 0 ] && [ "${KEEP_TEST_DIR:-0}" = 1 ]; then
        log "tests failed; kept $T (synapse/homeserver.log, pg/postgres.log, env)"
    else
        rm -rf "$T"
    fi
    log "total $((SECONDS - T0)) s, exit status $status"
    exit "$status"
}
trap cleanup EXIT
# Turn Ctrl-C / kill into a normal exit so cleanup runs once and servers are stopped.
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- ports -----------------------------------------------------------------------------------
# Ask the kernel for free ports, holding all sockets open at once so they are distinct.
read -r HS_PORT PG_PORT AS_PORTS <<<"$(python3 -c '
import socket
socks = [socket.socket() for _ in range(2 + '"$SLOTS"')]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
')"
read -r -a AS_PORT <<<"$AS_PORTS"

# ---- appservice registrations (one per slot, all known to Synapse from the start) ----------
regs=()
for i in $(seq 0 $((SLOTS - 1))); do
    mkdir -p "$T/appservices/$i"
    "$SWITCHBOARD_BIN" generate-registration \
        --id "sbtest$i" \
        --url "http://127.0.0.1:${AS_PORT[$i]}" \
        --bot-localpart "sbt${i}bot" \
        --ghost-prefix "_sbt${i}_" \
        --output "$T/appservices/$i/registration.yaml"
    regs+=("$T/appservices/$i/registration.yaml")
    export "SWITCHBOARD_TEST_AS_PORT_$i=${AS_PORT[$i]}"
done
export SWITCHBOARD_TEST_AS_SLOTS=$SLOTS

# ---- Synapse and PostgreSQL ------------------------------------------------------------------
t=$SECONDS
"$REPO/scripts/synapse.sh" install
"$REPO/scripts/synapse.sh" init "$T/synapse" "$HS_PORT" localhost "${regs[@]}"
"$REPO/scripts/synapse.sh" start "$T/synapse"
PG_URL="$("$REPO/scripts/postgres.sh" start "$T/pg" "$PG_PORT")"
log "services up in $((SECONDS - t)) s"

export SWITCHBOARD_TEST_HS_URL="http://127.0.0.1:$HS_PORT"
export SWITCHBOARD_TEST_SERVER_NAME=localhost
export SWITCHBOARD_TEST_DIR="$T"
SWITCHBOARD_TEST_SHARED_SECRET="$(cat "$T/synapse/shared_secret")"
export SWITCHBOARD_TEST_SHARED_SECRET
export SWITCHBOARD_TEST_POSTGRES_URL="$PG_URL"
# Written down so a kept dir (KEEP_TEST_DIR=1) can be inspected with the same settings.
env | grep -E '^(SWITCHBOARD_|CARGO_TARGET_DIR=)' | sort >"$T/env"

# ---- tests -----------------------------------------------------------------------------------
log "cargo test --workspace --all-targets $*"
t=$SECONDS
status=0
cargo test --workspace --all-targets --no-fail-fast "${locked[@]}" "$@" || status=$?
log "tests took $((SECONDS - t)) s"
exit "$status"
