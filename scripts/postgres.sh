#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for tests.
#
# Usage:
#   scripts/postgres.sh start DIR PORT   # prints postgres://postgres@127.0.0.1:PORT/postgres
#   scripts/postgres.sh stop DIR
#
# The cluster lives in DIR (data in DIR/data, socket in DIR/sock, log in DIR/postgres.log),
# listens on 127.0.0.1:PORT only, trusts every local connection and runs with fsync off:
# fast and disposable, never for real data. Commits stay synchronous, though: what a commit
# acknowledged then survives a SIGKILL of the whole cluster (its WAL is in the page cache, not
# only in PostgreSQL's own memory), which tests/e2e_chaos.rs relies on; without fsync it is
# only a machine crash that could lose it.
#
# PostgreSQL refuses to run as root, and we run as root (CI too), so the server runs as the
# `postgres` system user via runuser. DIR's parent directories must be traversable by that
# user (scripts/test.sh makes its temp dir world-traversable for this reason).
set -euo pipefail

log() { echo "[postgres.sh] $*" >&2; }
die() { log "error: $*"; exit 1; }

PG_USER=postgres

abspath() {
    local p="$1"
    case "$p" in /*) ;; *) p="$PWD/$p" ;; esac
    python3 -c 'import os,sys; print(os.path.normpath(sys.argv[1]))' "$p"
}

# find_bindir: print the directory holding initdb and pg_ctl; empty if none.
find_bindir() {
    local d
    if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
        dirname "$(readlink -f "$(command -v initdb)")"
        return 0
    fi
    # Debian keeps the server binaries off PATH, one directory per major version; take the newest.
    for d in $(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V -r); do
        if [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ]; then
            echo "$d"
            return 0
        fi
    done
}

ensure_bindir() {
    BINDIR="$(find_bindir)"
    if [ -z "$BINDIR" ]; then
        log "PostgreSQL server binaries not found; installing Debian's postgresql package"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -q
        apt-get install -y -q postgresql
        BINDIR="$(find_bindir)"
        [ -n "$BINDIR" ] || die "initdb/pg_ctl still not found after apt-get install postgresql"
    fi
    PSQL="$BINDIR/psql"
    [ -x "$PSQL" ] || PSQL="$(command -v psql || true)"
}

ensure_user() {
    if ! id -u "$PG_USER" >/dev/null 2>&1; then
        log "creating system user $PG_USER"
        useradd --system --no-create-home --shell /usr/sbin/nologin "$PG_USER"
    fi
}

# as_pg CMD...: run CMD as the postgres user from / (its cwd may not be readable by it).
as_pg() { (cd / && runuser -u "$PG_USER" -- "$@"); }

cmd_start() {
    [ $# -eq 2 ] || die "usage: $0 start DIR PORT"
    local dir port
    dir="$(abspath "$1")"; port="$2"
    ensure_bindir
    ensure_user
    mkdir -p "$dir"
    chown "$PG_USER:" "$dir"
    chmod 700 "$dir"
    as_pg test -w "$dir" \
        || die "user $PG_USER cannot write $dir: make its parent directories traversable (chmod o+x)"
    if [ ! -f "$dir/data/PG_VERSION" ]; then
        log "initdb in $dir/data"
        # -A trust: tests connect without a password. --no-sync: it is a scratch cluster.
        as_pg "$BINDIR/initdb" -D "$dir/data" -A trust -U postgres -E UTF8 --locale=C --no-sync \
            >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; die "initdb failed"; }
        as_pg mkdir -p "$dir/sock"
        cat >>"$dir/data/postgresql.conf" <<EOF

# --- scripts/postgres.sh: throwaway test cluster ---
listen_addresses = '127.0.0.1'
unix_socket_directories = '$dir/sock'
fsync = off
full_page_writes = off
max_connections = 300
EOF
    fi
    # A postmaster killed outright (tests/e2e_chaos.rs does it on purpose) leaves its
    # postmaster.pid behind, and where nothing reaps orphans (the init of some containers) it
    # lingers as a zombie, which pg_ctl takes for a running server: such a lock is stale.
    local pm state
    if [ -f "$dir/data/postmaster.pid" ]; then
        pm="$(head -n 1 "$dir/data/postmaster.pid")"
        state="$(awk '{print $3}' "/proc/$pm/stat" 2>/dev/null || true)"
        if [ -z "$state" ] || [ "$state" = Z ]; then
            log "removing the stale lock files of dead postmaster $pm"
            rm -f "$dir/data/postmaster.pid" "$dir"/sock/.s.PGSQL.*
        fi
    fi
    if as_pg "$BINDIR/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
        log "already running in $dir"
    else
        log "starting PostgreSQL on 127.0.0.1:$port (log: $dir/postgres.log)"
        # The port is given on the command line so a reused cluster follows PORT.
        as_pg "$BINDIR/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -o "-p $port" -w -t 60 start \
            >/dev/null || { tail -n 30 "$dir/postgres.log" >&2 || true; die "pg_ctl start failed"; }
    fi
    # pg_ctl -w already waited; make sure TCP answers too, since that is what tests use.
    local deadline=$((SECONDS + 30))
    until as_pg "$PSQL" -h 127.0.0.1 -p "$port" -U postgres -d postgres -Atqc 'select 1' >/dev/null 2>&1; do
        if [ $SECONDS -ge $deadline ]; then
            tail -n 30 "$dir/postgres.log" >&2 || true
            die "PostgreSQL on 127.0.0.1:$port does not answer queries"
        fi
        sleep 0.2
    done
    echo "postgres://postgres@127.0.0.1:$port/postgres"
}

cmd_stop() {
    [ $# -eq 1 ] || die "usage: $0 stop DIR"
    local dir
    dir="$(abspath "$1")"
    [ -f "$dir/data/postmaster.pid" ] || { log "not running in $dir"; return 0; }
    ensure_bindir
    log "stopping PostgreSQL in $dir"
    if ! as_pg "$BINDIR/pg_ctl" -D "$dir/data" -m fast -w -t 30 stop >/dev/null 2>&1; then
        # Last resort: SIGKILL the postmaster named in its pid file (first line).
        local pid
        pid="$(head -n 1 "$dir/data/postmaster.pid" 2>/dev/null || true)"
        if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
            log "pg_ctl stop failed; killing postmaster $pid"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
}

[ $# -ge 1 ] || die "usage: $0 start DIR PORT | stop DIR"
sub="$1"; shift
case "$sub" in
    start) cmd_start "$@" ;;
    stop) cmd_stop "$@" ;;
    *) die "unknown subcommand: $sub" ;;
esac
