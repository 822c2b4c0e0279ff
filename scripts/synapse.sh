#!/usr/bin/env bash
# Manage a local Synapse homeserver for Switchboard's tests and demo.
#
# Usage:
#   scripts/synapse.sh install
#   scripts/synapse.sh init DIR PORT SERVER_NAME REG_FILE...   (SYNAPSE_ALLOW_GUESTS=0: no guests;
#                                                               SYNAPSE_MAS=1: auth delegated to MAS)
#   scripts/synapse.sh start DIR
#   scripts/synapse.sh stop DIR
#   scripts/synapse.sh register-user DIR USER PASSWORD [admin]
#   scripts/synapse.sh url DIR          # prints http://127.0.0.1:PORT
#
# Synapse is installed from PyPI into a virtualenv at ${SWITCHBOARD_VENV:-REPO/.venv}
# (CI points SWITCHBOARD_VENV outside the clone so the install is reused between runs).
# Everything Synapse writes (database, media, logs, keys, pid) lives in DIR.
#
# init writes allow_guest_access: true unless SYNAPSE_ALLOW_GUESTS=0, which makes a homeserver
# like those run without guests, for visitor accounts. SYNAPSE_MAS=1 configures Synapse as it
# runs behind Matrix Authentication Service (matrix_authentication_service.enabled: no guests,
# no password login, no open registration, appservice registrations only with inhibit_login).
# MAS itself is not run: its endpoint points at a closed port. Everything an appservice does
# (its as_token, identity assertion, registering users without a login) never reaches MAS, so
# the flows Switchboard supports there can be tested; anything that would need MAS fails.
set -euo pipefail

SYNAPSE_VERSION=1.163.2
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${SWITCHBOARD_VENV:-$REPO/.venv}"
PY="$VENV/bin/python"

log() { echo "[synapse.sh] $*" >&2; }
die() { log "error: $*"; exit 1; }

abspath() { # abspath PATH: absolute path of PATH (which may not exist yet)
    local p="$1"
    case "$p" in /*) ;; *) p="$PWD/$p" ;; esac
    # Normalise "." and ".." without requiring the path to exist.
    python3 -c 'import os,sys; print(os.path.normpath(sys.argv[1]))' "$p"
}

installed_version() { # prints the installed matrix-synapse version, or nothing
    [ -x "$PY" ] || return 0
    "$PY" - <<'EOF' 2>/dev/null || true
import importlib.metadata as m
print(m.version("matrix-synapse"))
EOF
}

cmd_install() {
    if [ "$(installed_version)" = "$SYNAPSE_VERSION" ]; then
        log "matrix-synapse $SYNAPSE_VERSION already installed in $VENV"
        return 0
    fi
    # A venv whose interpreter no longer runs (e.g. the base Python was removed) cannot be
    # repaired by pip: start it again from scratch.
    if [ -e "$VENV" ] && ! "$PY" -c 'import sys' >/dev/null 2>&1; then
        log "virtualenv $VENV is broken; recreating it"
        rm -rf "$VENV"
    fi
    if [ ! -x "$PY" ]; then
        if ! command -v python3 >/dev/null 2>&1 || ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
            # Debian's python3 ships venv/ensurepip separately.
            log "python3 with venv support missing; installing it with apt-get"
            export DEBIAN_FRONTEND=noninteractive
            apt-get update -q
            apt-get install -y -q python3 python3-venv
        fi
        log "creating virtualenv $VENV"
        python3 -m venv "$VENV"
    fi
    local start=$SECONDS
    log "installing matrix-synapse==$SYNAPSE_VERSION into $VENV (about 20 s)"
    "$PY" -m pip install --disable-pip-version-check -q "matrix-synapse==$SYNAPSE_VERSION"
    [ "$(installed_version)" = "$SYNAPSE_VERSION" ] || die "matrix-synapse $SYNAPSE_VERSION did not install"
    log "installed in $((SECONDS - start)) s"
}

need_venv() {
    [ "$(installed_version)" = "$SYNAPSE_VERSION" ] \
        || die "matrix-synapse $SYNAPSE_VERSION is not installed in $VENV; run: $0 install"
}

cmd_init() {
    [ $# -ge 3 ] || die "usage: $0 init DIR PORT SERVER_NAME REG_FILE..."
    need_venv
    local dir port server_name
    dir="$(abspath "$1")"; port="$2"; server_name="$3"; shift 3
    local regs=() r
    for r in "$@"; do
        r="$(abspath "$r")"
        [ -f "$r" ] || die "registration file not found: $r"
        regs+=("$r")
    done
    mkdir -p "$dir"
    # generate-config only once: it also creates the signing key, and a second run on an
    # existing DIR (the demo reuses its state dir) must keep the key and the database.
    if [ ! -f "$dir/homeserver.yaml" ]; then
        log "generating $dir/homeserver.yaml for $server_name"
        (cd "$dir" && "$PY" -m synapse.app.homeserver \
            --server-name "$server_name" \
            --config-path "$dir/homeserver.yaml" \
            --data-directory "$dir" \
            --generate-config --report-stats=no >/dev/null)
    fi
    # The shared secret lets register_new_matrix_user (and the tests) create users.
    # Keep an existing one so re-running init does not invalidate it.
    if [ ! -s "$dir/shared_secret" ]; then
        "$PY" -c 'import secrets; print(secrets.token_hex(32))' >"$dir/shared_secret"
        chmod 600 "$dir/shared_secret"
    fi
    # Rewrite the settings we care about on every init, so a changed PORT or registration
    # list takes effect on a reused DIR.
    "$PY" - "$dir" "$port" "$server_name" "${regs[@]}" <<'EOF'
import glob, os, sys, yaml

dir_, port, server_name, regs = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4:]
path = os.path.join(dir_, "homeserver.yaml")
with open(path) as f:
    cfg = yaml.safe_load(f)
with open(os.path.join(dir_, "shared_secret")) as f:
    secret = f.read().strip()

cfg["server_name"] = server_name
cfg["public_baseurl"] = f"http://127.0.0.1:{port}/"
# Loopback only, plain HTTP, client API only: nothing here is meant to federate.
cfg["listeners"] = [{
    "port": port,
    "bind_addresses": ["127.0.0.1"],
    "type": "http",
    "tls": False,
    "x_forwarded": False,
    "resources": [{"names": ["client"], "compress": False}],
}]
cfg["database"] = {"name": "sqlite3", "args": {"database": os.path.join(dir_, "homeserver.db")}}
cfg["media_store_path"] = os.path.join(dir_, "media_store")
cfg["pid_file"] = os.path.join(dir_, "homeserver.pid")
cfg["signing_key_path"] = cfg.get("signing_key_path") or os.path.join(dir_, f"{server_name}.signing.key")

# Visitors are Matrix guests (unless SYNAPSE_ALLOW_GUESTS=0: then Switchboard registers visitor
# accounts); responders and tests register with the shared secret or openly.
cfg["allow_guest_access"] = os.environ.get("SYNAPSE_ALLOW_GUESTS", "1") != "0"
cfg["enable_registration"] = True
cfg["enable_registration_without_verification"] = True
cfg["registration_shared_secret"] = secret
cfg["app_service_config_files"] = regs

if os.environ.get("SYNAPSE_MAS") == "1":
    cfg["matrix_authentication_service"] = {
        "enabled": True,
        "endpoint": "http://127.0.0.1:9/",  # nothing listens: nothing here may need MAS
        "secret": secret,
    }
    # What Synapse insists on when auth is delegated (synapse/config/mas.py).
    cfg["allow_guest_access"] = False
    cfg["enable_registration"] = False
    cfg.pop("enable_registration_without_verification", None)
    cfg.pop("registration_shared_secret", None)
    cfg["password_config"] = {"enabled": False}

# No outside world: no key servers, no stats, no presence traffic.
cfg["trusted_key_servers"] = []
cfg["suppress_key_server_warning"] = True
cfg["report_stats"] = False
cfg["presence"] = {"enabled": False}

# Tests hammer the server from many clients at once; never let rate limits be the
# reason a test fails. Shapes follow synapse/config/ratelimiting.py (1.163).
rl = {"per_second": 1000, "burst_count": 1000}
cfg["rc_message"] = dict(rl)
cfg["rc_registration"] = dict(rl)
cfg["rc_registration_token_validity"] = dict(rl)
cfg["rc_login"] = {"address": dict(rl), "account": dict(rl), "failed_attempts": dict(rl)}
cfg["rc_joins"] = {"local": dict(rl), "remote": dict(rl)}
cfg["rc_joins_per_room"] = dict(rl)
cfg["rc_invites"] = {"per_room": dict(rl), "per_user": dict(rl), "per_issuer": dict(rl)}
cfg["rc_3pid_validation"] = dict(rl)
cfg["rc_admin_redaction"] = dict(rl)
cfg["rc_room_creation"] = dict(rl)
cfg["rc_presence"] = {"per_user": dict(rl)}
cfg["rc_delayed_event_mgmt"] = dict(rl)
cfg["rc_reports"] = dict(rl)
cfg["rc_media_create"] = dict(rl)
cfg["rc_key_requests"] = dict(rl)
cfg["rc_third_party_invite"] = dict(rl)
cfg["rc_user_directory"] = dict(rl)
cfg["rc_profile"] = dict(rl)

# Point the generated log config's file handler into DIR, at INFO.
log_config = cfg.get("log_config") or os.path.join(dir_, f"{server_name}.log.config")
cfg["log_config"] = log_config
with open(log_config) as f:
    lc = yaml.safe_load(f)
for name, h in lc.get("handlers", {}).items():
    if "filename" in h:
        h["filename"] = os.path.join(dir_, "homeserver.log")
for lg in lc.get("loggers", {}).values():
    if isinstance(lg, dict) and lg.get("level") not in (None, "WARNING", "ERROR"):
        lg["level"] = "INFO"
lc.setdefault("root", {})["level"] = "INFO"
with open(log_config, "w") as f:
    yaml.safe_dump(lc, f, sort_keys=False)

with open(path, "w") as f:
    yaml.safe_dump(cfg, f, sort_keys=False)
EOF
    log "configured $dir/homeserver.yaml: http://127.0.0.1:$port, server name $server_name, ${#regs[@]} appservice(s), guests $([ "${SYNAPSE_ALLOW_GUESTS:-1}" = 0 ] && echo off || echo on)$([ "${SYNAPSE_MAS:-0}" = 1 ] && echo ', auth delegated to MAS (not running)')"
}

hs_port() { # hs_port DIR: the port of the first listener in DIR/homeserver.yaml
    "$PY" - "$1/homeserver.yaml" <<'EOF'
import sys, yaml
with open(sys.argv[1]) as f:
    print(yaml.safe_load(f)["listeners"][0]["port"])
EOF
}

# pid_alive PID: true if PID is a running Synapse (guards against a recycled pid).
pid_alive() {
    [ -n "$1" ] && kill -0 "$1" 2>/dev/null \
        && tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -q 'synapse.app.homeserver'
}

cmd_url() {
    [ $# -eq 1 ] || die "usage: $0 url DIR"
    echo "http://127.0.0.1:$(hs_port "$(abspath "$1")")"
}

cmd_start() {
    [ $# -eq 1 ] || die "usage: $0 start DIR"
    need_venv
    local dir port url pid
    dir="$(abspath "$1")"
    [ -f "$dir/homeserver.yaml" ] || die "$dir/homeserver.yaml missing; run: $0 init first"
    port="$(hs_port "$dir")"
    url="http://127.0.0.1:$port"
    if [ -f "$dir/synapse.pid" ] && pid_alive "$(cat "$dir/synapse.pid")"; then
        log "Synapse already running (pid $(cat "$dir/synapse.pid")) at $url"
        return 0
    fi
    # Fail clearly if something else holds the port: otherwise the readiness poll below
    # could be answered by that other server (e.g. a leftover Synapse) instead of ours.
    if ! python3 -c 'import socket,sys; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("127.0.0.1", int(sys.argv[1])))' "$port" 2>/dev/null; then
        die "port $port on 127.0.0.1 is already in use; stop whatever listens there or pick another port"
    fi
    # Synapse refuses to start while its own pid_file names a live process; a stale one
    # (from a killed run) is harmless to remove.
    rm -f "$dir/homeserver.pid"
    log "starting Synapse at $url (log: $dir/homeserver.log, output: $dir/synapse.out)"
    (cd "$dir" && exec "$PY" -m synapse.app.homeserver -c "$dir/homeserver.yaml" \
        </dev/null >"$dir/synapse.out" 2>&1) &
    pid=$!
    echo "$pid" >"$dir/synapse.pid"
    local deadline=$((SECONDS + ${SYNAPSE_START_TIMEOUT:-60}))
    until curl -fsS -o /dev/null "$url/_matrix/client/versions" 2>/dev/null; do
        if ! kill -0 "$pid" 2>/dev/null || [ $SECONDS -ge $deadline ]; then
            if kill -0 "$pid" 2>/dev/null; then
                log "Synapse not ready after ${SYNAPSE_START_TIMEOUT:-60} s"
                kill -KILL "$pid" 2>/dev/null || true
            else
                log "Synapse exited during startup"
            fi
            rm -f "$dir/synapse.pid"
            echo "----- $dir/synapse.out (tail) -----" >&2
            tail -n 30 "$dir/synapse.out" >&2 || true
            echo "----- $dir/homeserver.log (tail) -----" >&2
            tail -n 30 "$dir/homeserver.log" >&2 2>/dev/null || true
            exit 1
        fi
        sleep 0.3
    done
    log "Synapse ready (pid $pid) in $((SECONDS - deadline + ${SYNAPSE_START_TIMEOUT:-60})) s"
}

cmd_stop() {
    [ $# -eq 1 ] || die "usage: $0 stop DIR"
    local dir pid
    dir="$(abspath "$1")"
    [ -f "$dir/synapse.pid" ] || { log "no $dir/synapse.pid: not running"; return 0; }
    pid="$(cat "$dir/synapse.pid")"
    if pid_alive "$pid"; then
        log "stopping Synapse (pid $pid)"
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 100); do # up to 10 s for a clean shutdown
            pid_alive "$pid" || break
            sleep 0.1
        done
        if pid_alive "$pid"; then
            log "Synapse did not exit after SIGTERM; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    rm -f "$dir/synapse.pid"
}

cmd_register_user() {
    if [ $# -lt 3 ] || [ $# -gt 4 ]; then die "usage: $0 register-user DIR USER PASSWORD [admin]"; fi
    need_venv
    local dir user password admin_flag=--no-admin out rc
    dir="$(abspath "$1")"; user="$2"; password="$3"
    [ "${4:-}" = "admin" ] && admin_flag=--admin
    # -c reads registration_shared_secret from the config; the URL must be given, or the
    # tool defaults to https://localhost:8448. </dev/null: never prompt.
    set +e
    out="$("$VENV/bin/register_new_matrix_user" -c "$dir/homeserver.yaml" \
        -u "$user" -p "$password" "$admin_flag" "$(cmd_url "$dir")" </dev/null 2>&1)"
    rc=$?
    set -e
    if [ $rc -ne 0 ]; then
        if grep -q "User ID already taken" <<<"$out"; then
            log "user $user already exists"
            return 0
        fi
        echo "$out" >&2
        die "register_new_matrix_user failed for $user"
    fi
    log "registered user $user"
}

[ $# -ge 1 ] || die "usage: $0 install|init|start|stop|register-user|url ..."
sub="$1"; shift
case "$sub" in
    install) cmd_install "$@" ;;
    init) cmd_init "$@" ;;
    start) cmd_start "$@" ;;
    stop) cmd_stop "$@" ;;
    register-user) cmd_register_user "$@" ;;
    url) cmd_url "$@" ;;
    *) die "unknown subcommand: $sub" ;;
esac
