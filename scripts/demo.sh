#!/usr/bin/env bash
# Set up and run the local Switchboard demo: the one command for a fresh machine.
#
#   scripts/demo.sh
#
# Builds switchboard, installs Synapse into a virtualenv, starts Synapse and Switchboard on
# loopback, creates the responder account, and prints where to go. Ctrl-C stops everything.
#
# State (Synapse database, registration, config, passwords, logs) lives in
# ${DEMO_DIR:-REPO/.demo} and is reused on the next run, so the responder account and
# past conversations survive. Delete that directory for a clean slate.
#
# Environment: DEMO_DIR, HS_PORT (Synapse, default 18008), SB_PORT (Switchboard, default
# 29330), CARGO_TARGET_DIR (default /var/tmp/switchboard-target), SWITCHBOARD_VENV,
# RUST_LOG (default info).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/switchboard-target}"
export RUST_LOG="${RUST_LOG:-info}"
DEMO_DIR="${DEMO_DIR:-$REPO/.demo}"
HS_PORT="${HS_PORT:-18008}"
SB_PORT="${SB_PORT:-29330}"
SERVER_NAME=localhost
VENV="${SWITCHBOARD_VENV:-$REPO/.venv}"
BIN="$CARGO_TARGET_DIR/debug/switchboard"
SB_PID=""

log() { echo "[demo.sh] $*" >&2; }
die() { log "error: $*"; exit 1; }
# port_free, stop_pid
# shellcheck source=scripts/lib/processes.sh
. "$REPO/scripts/lib/processes.sh"

# is_switchboard PID: true if PID is a live switchboard process (guards against recycled pids).
is_switchboard() {
    [ -n "$1" ] && kill -0 "$1" 2>/dev/null \
        && tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -q 'switchboard'
}

# shellcheck disable=SC2317  # invoked from the EXIT trap
cleanup() {
    local status=$?
    trap - EXIT INT TERM
    log "stopping"
    # Our own child: no need to check what it is. Backgrounded, it ignores Ctrl-C itself.
    if [ -n "$SB_PID" ]; then stop_pid "$SB_PID"; fi
    rm -f "$DEMO_DIR/switchboard.pid"
    "$REPO/scripts/synapse.sh" stop "$DEMO_DIR/synapse" || true
    log "stopped (logs are in $DEMO_DIR)"
    exit "$status"
}

# ---- build and install ---------------------------------------------------------------------
log "building switchboard (CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
cargo build -p switchboard
[ -x "$BIN" ] || die "$BIN was not built"
"$REPO/scripts/synapse.sh" install

mkdir -p "$DEMO_DIR"
DEMO_DIR="$(cd "$DEMO_DIR" && pwd)" # absolute: it goes into config files

# A previous run killed without cleanup may have left its servers behind: stop them, so the
# config written below is the one that runs.
if [ -f "$DEMO_DIR/switchboard.pid" ]; then
    old_pid="$(cat "$DEMO_DIR/switchboard.pid")"
    if is_switchboard "$old_pid"; then stop_pid "$old_pid"; fi
    rm -f "$DEMO_DIR/switchboard.pid"
fi
"$REPO/scripts/synapse.sh" stop "$DEMO_DIR/synapse" >/dev/null 2>&1 || true

port_free "$HS_PORT" || die "port $HS_PORT (Synapse) is in use; set HS_PORT to a free port"
port_free "$SB_PORT" || die "port $SB_PORT (Switchboard) is in use; set SB_PORT to a free port"

# ---- appservice registration (generated once: Synapse and the DB know its tokens) -----------
REG="$DEMO_DIR/registration.yaml"
if [ ! -f "$REG" ]; then
    log "generating $REG"
    "$BIN" generate-registration \
        --id switchboard \
        --url "http://127.0.0.1:$SB_PORT" \
        --bot-localpart switchboard \
        --ghost-prefix _switchboard_ \
        --output "$REG"
else
    # Keep the tokens, but follow a changed SB_PORT: Synapse pushes events to this URL.
    "$VENV/bin/python" - "$REG" "http://127.0.0.1:$SB_PORT" <<'EOF'
import re, sys, yaml
path, url = sys.argv[1], sys.argv[2]
text = open(path).read()
if yaml.safe_load(text).get("url") != url:
    text = re.sub(r"^url:.*$", f"url: {url}", text, count=1, flags=re.M)
    assert yaml.safe_load(text)["url"] == url, "could not update url in " + path
    open(path, "w").write(text)
    print(f"[demo.sh] updated url in {path} to {url}", file=sys.stderr)
EOF
fi

# ---- Synapse ---------------------------------------------------------------------------------
# init is safe to repeat: it keeps the signing key, database and shared secret.
"$REPO/scripts/synapse.sh" init "$DEMO_DIR/synapse" "$HS_PORT" "$SERVER_NAME" "$REG"

# ---- Switchboard config ----------------------------------------------------------------------
CONFIG="$DEMO_DIR/config.toml"
MARKER="# Written by scripts/demo.sh on every run. Delete this line to keep your own edits."
if [ ! -f "$CONFIG" ] || [ "$(head -n 1 "$CONFIG")" = "$MARKER" ]; then
    cat >"$CONFIG" <<EOF
$MARKER
[homeserver]
url = "http://127.0.0.1:$HS_PORT"
server_name = "$SERVER_NAME"

[appservice]
registration = "$REG"
listen = "127.0.0.1:$SB_PORT"

[database]
url = "sqlite://$DEMO_DIR/switchboard.db"

[[topics]]
id = "support"
name = "General support"

[[topics]]
id = "sales"
name = "Sales"

# The responder register, seeded from here; see docs/admin-api.md to manage it at run time.
[[responders]]
id = "responder"
display_name = "Demo Responder"
topics = ["*"]
contacts = [{ platform = "matrix", address = "@responder:$SERVER_NAME" }]
EOF
else
    log "keeping your edited $CONFIG (check its ports match HS_PORT=$HS_PORT SB_PORT=$SB_PORT)"
fi

# From here on, whatever happens, stop what we started.
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

"$REPO/scripts/synapse.sh" start "$DEMO_DIR/synapse"

# ---- responder account (password kept so later runs log in with the same one) ----------------
PWFILE="$DEMO_DIR/responder-password"
if [ ! -s "$PWFILE" ]; then
    python3 -c 'import secrets; print(secrets.token_urlsafe(12))' >"$PWFILE"
    chmod 600 "$PWFILE"
fi
RESPONDER_PASSWORD="$(cat "$PWFILE")"
"$REPO/scripts/synapse.sh" register-user "$DEMO_DIR/synapse" responder "$RESPONDER_PASSWORD"

# ---- Switchboard -----------------------------------------------------------------------------
log "starting switchboard (log: $DEMO_DIR/switchboard.log)"
"$BIN" run --config "$CONFIG" </dev/null >>"$DEMO_DIR/switchboard.log" 2>&1 &
SB_PID=$!
echo "$SB_PID" >"$DEMO_DIR/switchboard.pid"
deadline=$((SECONDS + 60))
until curl -fsS -o /dev/null "http://127.0.0.1:$SB_PORT/health" 2>/dev/null; do
    if ! kill -0 "$SB_PID" 2>/dev/null || [ $SECONDS -ge $deadline ]; then
        log "switchboard did not become healthy; last lines of $DEMO_DIR/switchboard.log:"
        tail -n 40 "$DEMO_DIR/switchboard.log" >&2 || true
        exit 1
    fi
    sleep 0.3
done

cat <<EOF

==========================================================================
  Switchboard demo is running.

  Demo page (visitor side):  http://127.0.0.1:$SB_PORT/
  Homeserver (Matrix):       http://127.0.0.1:$HS_PORT
  Responder account:         @responder:$SERVER_NAME
  Responder password:        $RESPONDER_PASSWORD

  Open the demo page and start a chat; log in as the responder with any
  Matrix client pointed at the homeserver URL to answer it.
  Logs: $DEMO_DIR/switchboard.log, $DEMO_DIR/synapse/homeserver.log

  Press Ctrl-C to stop everything.
==========================================================================

EOF

# Stay in the foreground until switchboard exits or Ctrl-C (the trap stops both servers).
status=0
wait "$SB_PID" || status=$?
SB_PID=""
log "switchboard exited with status $status; last lines of its log:"
tail -n 20 "$DEMO_DIR/switchboard.log" >&2 || true
exit "$status"
