#!/usr/bin/env bash
# Several Switchboards on one PostgreSQL behind a real load balancer (issue 17), on loopback:
#
#   scripts/ha-demo.sh
#
# Builds switchboard, installs Synapse, PostgreSQL and HAProxy where missing (apt, PyPI),
# starts PostgreSQL, Synapse, two Switchboard instances ("a" and "b") sharing one database,
# and HAProxy in front of them; creates the responder account and prints where to look.
# Synapse and the visitors reach Switchboard only through HAProxy. Ctrl-C stops everything.
#
# Try: open the demo page, start a chat, answer it as the responder; then stop the instance
# that leads (`kill -9 $(cat DIR/a.pid)`, or b) and see the other take the lead over within a
# few seconds (its log says "leading") while the conversation goes on. Start it again with
# the command the script prints.
#
# The PostgreSQL here is scripts/postgres.sh's scratch cluster (fsync off): a demo, not a
# deployment; see docs/operator-guide.md for one.
#
# State lives in ${HA_DEMO_DIR:-REPO/.ha-demo} and is reused on the next run. Environment:
# HA_DEMO_DIR, HS_PORT (Synapse, default 18108), LB_PORT (HAProxy, default 29430), A_PORT and
# B_PORT (the instances, defaults 29431 and 29432), PG_PORT (default 25432), STATS_PORT
# (HAProxy's stats page, default 29439), CARGO_TARGET_DIR, SWITCHBOARD_VENV, RUST_LOG.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/switchboard-target}"
export RUST_LOG="${RUST_LOG:-info}"
DIR="${HA_DEMO_DIR:-$REPO/.ha-demo}"
HS_PORT="${HS_PORT:-18108}"
LB_PORT="${LB_PORT:-29430}"
A_PORT="${A_PORT:-29431}"
B_PORT="${B_PORT:-29432}"
PG_PORT="${PG_PORT:-25432}"
STATS_PORT="${STATS_PORT:-29439}"
SERVER_NAME=localhost
VENV="${SWITCHBOARD_VENV:-$REPO/.venv}"
BIN="$CARGO_TARGET_DIR/debug/switchboard"
PIDS=()

log() { echo "[ha-demo.sh] $*" >&2; }
die() { log "error: $*"; exit 1; }
# port_free, stop_pid
# shellcheck source=scripts/lib/processes.sh
. "$REPO/scripts/lib/processes.sh"

# shellcheck disable=SC2317  # invoked from the EXIT trap
cleanup() {
    local status=$?
    trap - EXIT INT TERM
    log "stopping"
    for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
    for name in a b; do
        if [ -f "$DIR/$name.pid" ]; then stop_pid "$(cat "$DIR/$name.pid")"; rm -f "$DIR/$name.pid"; fi
    done
    "$REPO/scripts/synapse.sh" stop "$DIR/synapse" || true
    "$REPO/scripts/postgres.sh" stop "$DIR/pg" || true
    log "stopped (logs are in $DIR)"
    exit "$status"
}

# ---- build and install ---------------------------------------------------------------------
log "building switchboard (CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
cargo build -p switchboard
[ -x "$BIN" ] || die "$BIN was not built"
"$REPO/scripts/synapse.sh" install
"$REPO/scripts/haproxy.sh" install
HAPROXY="$("$REPO/scripts/haproxy.sh" path)"

mkdir -p "$DIR"
DIR="$(cd "$DIR" && pwd)"
# PostgreSQL runs as its own user, which must reach its directory.
chmod o+x "$DIR"
for port in "$HS_PORT" "$LB_PORT" "$A_PORT" "$B_PORT" "$PG_PORT" "$STATS_PORT"; do
    port_free "$port" || die "port $port is in use (see the environment variables at the top of $0)"
done

trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- PostgreSQL, with a database for Switchboard -------------------------------------------
"$REPO/scripts/postgres.sh" start "$DIR/pg" "$PG_PORT" >/dev/null
DB_URL="postgres://postgres@127.0.0.1:$PG_PORT/switchboard"
if ! runuser -u postgres -- psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -Atqc \
    "SELECT 1 FROM pg_database WHERE datname = 'switchboard'" | grep -q 1; then
    runuser -u postgres -- psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -qc "CREATE DATABASE switchboard"
fi

# ---- registration: Synapse sends to the load balancer ---------------------------------------
REG="$DIR/registration.yaml"
if [ ! -f "$REG" ]; then
    "$BIN" generate-registration --id switchboard --url "http://127.0.0.1:$LB_PORT" \
        --bot-localpart switchboard --ghost-prefix _switchboard_ --output "$REG"
fi
"$REPO/scripts/synapse.sh" init "$DIR/synapse" "$HS_PORT" "$SERVER_NAME" "$REG"
"$REPO/scripts/synapse.sh" start "$DIR/synapse"
PWFILE="$DIR/responder-password"
if [ ! -s "$PWFILE" ]; then
    python3 -c 'import secrets; print(secrets.token_urlsafe(12))' >"$PWFILE"
    chmod 600 "$PWFILE"
fi
RESPONDER_PASSWORD="$(cat "$PWFILE")"
"$REPO/scripts/synapse.sh" register-user "$DIR/synapse" responder "$RESPONDER_PASSWORD"

# ---- two Switchboards on one database ---------------------------------------------------------
start_instance() { # start_instance NAME PORT
    local name="$1" port="$2"
    cat >"$DIR/$name.toml" <<EOF
# Written by scripts/ha-demo.sh on every run.
[homeserver]
url = "http://127.0.0.1:$HS_PORT"
server_name = "$SERVER_NAME"

[appservice]
registration = "$REG"
listen = "127.0.0.1:$port"

[database]
url = "$DB_URL"

[cluster]
instance = "$name"
lease_seconds = 6

[[topics]]
id = "support"
name = "General support"

[[responders]]
id = "responder"
display_name = "Demo Responder"
topics = ["*"]
contacts = [{ platform = "matrix", address = "@responder:$SERVER_NAME" }]
EOF
    "$BIN" run --config "$DIR/$name.toml" </dev/null >>"$DIR/$name.log" 2>&1 &
    echo $! >"$DIR/$name.pid"
    local deadline=$((SECONDS + 60))
    until curl -fsS -o /dev/null "http://127.0.0.1:$port/health" 2>/dev/null; do
        [ $SECONDS -lt $deadline ] || { tail -n 30 "$DIR/$name.log" >&2; die "instance $name did not start"; }
        sleep 0.3
    done
    log "instance $name on 127.0.0.1:$port (log: $DIR/$name.log)"
}
start_instance a "$A_PORT"
start_instance b "$B_PORT"

# ---- HAProxy in front, checking each instance's readiness -----------------------------------
cat >"$DIR/haproxy.cfg" <<EOF
global
    maxconn 4096

defaults
    mode http
    timeout connect 2s
    timeout client 150s
    timeout server 150s
    retries 3
    option redispatch 1

frontend switchboard
    bind 127.0.0.1:$LB_PORT
    acl homeserver path_beg /_matrix/app/
    use_backend pushes if homeserver
    default_backend instances

# Synapse's pushes, one at a time, to the live instances in turn; they share the transaction
# order guard's state in the database (docs/operator-guide.md).
backend pushes
    balance roundrobin
    option httpchk GET /health
    http-check expect status 200
    default-server inter 1s fall 2 rise 2 maxconn 8
    server a 127.0.0.1:$A_PORT check
    server b 127.0.0.1:$B_PORT check

backend instances
    balance roundrobin
    option httpchk GET /ready
    http-check expect status 200
    default-server inter 1s fall 2 rise 2
    server a 127.0.0.1:$A_PORT check
    server b 127.0.0.1:$B_PORT check

listen stats
    bind 127.0.0.1:$STATS_PORT
    stats enable
    stats uri /
EOF
"$HAPROXY" -db -f "$DIR/haproxy.cfg" >>"$DIR/haproxy.log" 2>&1 &
PIDS+=($!)
deadline=$((SECONDS + 30))
until curl -fsS -o /dev/null "http://127.0.0.1:$LB_PORT/ready" 2>/dev/null; do
    [ $SECONDS -lt $deadline ] || die "HAProxy does not answer on $LB_PORT (log: $DIR/haproxy.log)"
    sleep 0.3
done

LEADER="$(runuser -u postgres -- psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -d switchboard -Atqc \
    "SELECT holder FROM leases WHERE name = 'leader'" || true)"
cat <<EOF

==========================================================================
  Two Switchboards behind HAProxy are running.

  Demo page (through HAProxy):  http://127.0.0.1:$LB_PORT/
  HAProxy's stats:              http://127.0.0.1:$STATS_PORT/
  Instance a:                   http://127.0.0.1:$A_PORT/ready  (pid $(cat "$DIR/a.pid"))
  Instance b:                   http://127.0.0.1:$B_PORT/ready  (pid $(cat "$DIR/b.pid"))
  Leading now:                  ${LEADER:-(nobody yet)}
  Homeserver (Matrix):          http://127.0.0.1:$HS_PORT
  Responder:                    @responder:$SERVER_NAME / $RESPONDER_PASSWORD

  Who leads and who works on what:
    runuser -u postgres -- psql -h 127.0.0.1 -p $PG_PORT -U postgres -d switchboard \\
      -c "SELECT name, holder, epoch FROM leases"
  Kill one:        kill -9 \$(cat $DIR/a.pid)
  Start it again:  $BIN run --config $DIR/a.toml >>$DIR/a.log 2>&1 & echo \$! >$DIR/a.pid
  Logs: $DIR/{a,b,haproxy}.log, $DIR/synapse/homeserver.log

  Press Ctrl-C to stop everything.
==========================================================================

EOF
# In the foreground until Ctrl-C (the trap stops everything).
while true; do sleep 3600; done
