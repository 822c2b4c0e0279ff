#!/usr/bin/env bash
# Run Switchboard's whole test suite: the one command for developers and CI.
#
#   scripts/test.sh [extra args for `cargo test`]    e.g. scripts/test.sh -- --nocapture
#
# It builds everything, starts TWO Synapses for the whole run, side by side: the main one (guest
# access on, 12 pre-registered appservice slots) and a guest-less one (guest access off; 2
# slots, for visitor accounts), plus ONE
# PostgreSQL, exports where they are, runs `cargo test`, and tears it all down again. Set
# KEEP_TEST_DIR=1 to keep the temp dir (logs, databases) when tests fail.
#
# Environment handed to the tests:
#   SWITCHBOARD_TEST_HS_URL         http://127.0.0.1:PORT of the Synapse
#   SWITCHBOARD_TEST_SERVER_NAME    localhost
#   SWITCHBOARD_TEST_SHARED_SECRET  Synapse's registration_shared_secret (admin register API)
#   SWITCHBOARD_TEST_POSTGRES_URL   postgres://postgres@127.0.0.1:PORT/postgres (trust auth)
#   SWITCHBOARD_TEST_DIR            the run's temp dir; appservice slot i (0..11) has its
#                                   registration at $SWITCHBOARD_TEST_DIR/appservices/i/registration.yaml
#                                   (id sbtest<i>, bot @sbt<i>bot, ghosts @_sbt<i>_*)
#   SWITCHBOARD_TEST_AS_SLOTS       12
#   SWITCHBOARD_TEST_AS_PORT_<i>    the port slot i's registration points Synapse at
#   SWITCHBOARD_BIN                 the built switchboard binary
# and for the mail server (scripts/mail.sh: Dovecot behind an SMTP front, loopback, no TLS; every
# address is a mailbox, the IMAP login is the address, all share one password):
#   SWITCHBOARD_TEST_SMTP_PORT, SWITCHBOARD_TEST_IMAP_PORT, SWITCHBOARD_TEST_MAIL_PASSWORD,
#   SWITCHBOARD_TEST_MAIL_SERVER (what runs, with versions)
# and for the DNS server (scripts/dns.sh: dnsmasq serving only the TXT records of
# bridge/src/connector/email/auth/testdata/zone.txt, for SPF/DKIM/DMARC):
#   SWITCHBOARD_TEST_DNS            127.0.0.1:PORT (UDP and TCP)
#   SWITCHBOARD_TEST_DNS_SERVER     what runs, with its version
#   SWITCHBOARD_TEST_PROMETHEUS     the Prometheus server (scripts/prometheus.sh: Debian's package)
#   SWITCHBOARD_TEST_HAPROXY        the load balancer (scripts/haproxy.sh: Debian's package)
# and for the guest-less Synapse (server name noguest.localhost):
#   SWITCHBOARD_TEST_NOGUEST_HS_URL         http://127.0.0.1:PORT
#   SWITCHBOARD_TEST_NOGUEST_SERVER_NAME    noguest.localhost
#   SWITCHBOARD_TEST_NOGUEST_SHARED_SECRET  its registration_shared_secret
#   SWITCHBOARD_TEST_NOGUEST_AS_SLOTS       2
#   SWITCHBOARD_TEST_NOGUEST_AS_PORT_<i>    slot i (0..1): registration at
#                                   $SWITCHBOARD_TEST_DIR/noguest/appservices/i/registration.yaml
#                                   (id sbnoguest<i>, bot @sbng<i>bot, ghosts @_sbng<i>_*)
# and for the Synapse that delegates auth to MAS (MAS itself not running; server mas.localhost):
#   SWITCHBOARD_TEST_MAS_HS_URL, SWITCHBOARD_TEST_MAS_SERVER_NAME, SWITCHBOARD_TEST_MAS_AS_PORT_0
#                                   one slot: $SWITCHBOARD_TEST_DIR/mas/appservices/0/registration.yaml
#                                   (id sbmas0, bot @sbmas0bot, ghosts @_sbmas0_*), used by e2e_mas
# Each test binary uses its own slots (grep `Slot::load`): main 0-6 the older e2e files (2 and 3
# also e2e_outbox), 7
# e2e_multi_platform, 8 e2e_handoff's named transfer and e2e_chaos (and scripts/bench.sh,
# which runs on its own; e2e_chaos also kills the main Synapse and the PostgreSQL cluster with
# SIGKILL and starts them again with their scripts), 9 the widget in a browser, 10 e2e_visitor_accounts, 11
# e2e_visitor_proxy; noguest 0 e2e_visitor_accounts, e2e_visitor_proxy and the widget's proxied
# run (binaries run one at a time; within one binary, one test per slot), 1 the widget's
# accounts run.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
# Build outside the clone so CI's fresh clones reuse earlier builds.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/switchboard-target}"
SLOTS=12
NOGUEST_SLOTS=2
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
    "$REPO/scripts/synapse.sh" stop "$T/noguest/synapse" >/dev/null 2>&1 || true
    "$REPO/scripts/synapse.sh" stop "$T/mas/synapse" >/dev/null 2>&1 || true
    "$REPO/scripts/postgres.sh" stop "$T/pg" >/dev/null 2>&1 || true
    "$REPO/scripts/mail.sh" stop "$T/mail" >/dev/null 2>&1 || true
    "$REPO/scripts/dns.sh" stop "$T/dns" >/dev/null 2>&1 || true
    if [ "$status" -ne 0 ] && [ "${KEEP_TEST_DIR:-0}" = 1 ]; then
        log "tests failed; kept $T (synapse/homeserver.log, noguest/synapse/homeserver.log, pg/postgres.log, mail/*.log, dns/dnsmasq.log, env)"
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
# Free ports below the ephemeral range, so that a released slot port is never taken by an
# outgoing connection before its next Switchboard binds it (scripts/free_ports.py says why).
read -r HS_PORT NG_HS_PORT MAS_HS_PORT MAS_AS_PORT PG_PORT SMTP_PORT IMAP_PORT DNS_PORT AS_PORTS <<<"$(
    python3 "$REPO/scripts/free_ports.py" $((8 + SLOTS + NOGUEST_SLOTS)))"
read -r -a AS_PORT <<<"$AS_PORTS"

# ---- appservice registrations (one per slot, all known to their Synapse from the start) ------
# gen_registration DIR PORT ID BOT PREFIX
gen_registration() {
    mkdir -p "$1"
    "$SWITCHBOARD_BIN" generate-registration --id "$3" --url "http://127.0.0.1:$2" \
        --bot-localpart "$4" --ghost-prefix "$5" --output "$1/registration.yaml"
    # Typing notices reach appservices only with receive_ephemeral.
    grep -q '^receive_ephemeral: true' "$1/registration.yaml" \
        || { log "error: generate-registration wrote no 'receive_ephemeral: true'"; exit 1; }
}
regs=()
for i in $(seq 0 $((SLOTS - 1))); do
    gen_registration "$T/appservices/$i" "${AS_PORT[$i]}" "sbtest$i" "sbt${i}bot" "_sbt${i}_"
    regs+=("$T/appservices/$i/registration.yaml")
    export "SWITCHBOARD_TEST_AS_PORT_$i=${AS_PORT[$i]}"
done
export SWITCHBOARD_TEST_AS_SLOTS=$SLOTS
ng_regs=()
for i in $(seq 0 $((NOGUEST_SLOTS - 1))); do
    port="${AS_PORT[$((SLOTS + i))]}"
    gen_registration "$T/noguest/appservices/$i" "$port" "sbnoguest$i" "sbng${i}bot" "_sbng${i}_"
    ng_regs+=("$T/noguest/appservices/$i/registration.yaml")
    export "SWITCHBOARD_TEST_NOGUEST_AS_PORT_$i=$port"
done
export SWITCHBOARD_TEST_NOGUEST_AS_SLOTS=$NOGUEST_SLOTS
# One slot on the Synapse that delegates auth to MAS (see scripts/synapse.sh: MAS not running).
gen_registration "$T/mas/appservices/0" "$MAS_AS_PORT" "sbmas0" "sbmas0bot" "_sbmas0_"
export SWITCHBOARD_TEST_MAS_AS_PORT_0=$MAS_AS_PORT

# ---- Synapses and PostgreSQL, started side by side ----------------------------------------
t=$SECONDS
"$REPO/scripts/synapse.sh" install
"$REPO/scripts/synapse.sh" init "$T/synapse" "$HS_PORT" localhost "${regs[@]}"
SYNAPSE_ALLOW_GUESTS=0 "$REPO/scripts/synapse.sh" init "$T/noguest/synapse" "$NG_HS_PORT" \
    noguest.localhost "${ng_regs[@]}"
SYNAPSE_MAS=1 "$REPO/scripts/synapse.sh" init "$T/mas/synapse" "$MAS_HS_PORT" \
    mas.localhost "$T/mas/appservices/0/registration.yaml"
"$REPO/scripts/synapse.sh" start "$T/synapse" &
hs_pid=$!
"$REPO/scripts/synapse.sh" start "$T/mas/synapse" &
mas_pid=$!
"$REPO/scripts/synapse.sh" start "$T/noguest/synapse" &
ng_pid=$!
PG_URL="$("$REPO/scripts/postgres.sh" start "$T/pg" "$PG_PORT")"
hs_status=0 ng_status=0 mas_status=0
wait "$hs_pid" || hs_status=$?
wait "$ng_pid" || ng_status=$?
wait "$mas_pid" || mas_status=$?
[ "$hs_status" -eq 0 ] || { log "error: the main Synapse did not start"; exit 1; }
[ "$ng_status" -eq 0 ] || { log "error: the guest-less Synapse did not start"; exit 1; }
[ "$mas_status" -eq 0 ] || { log "error: the MAS-delegating Synapse did not start"; exit 1; }
log "services up in $((SECONDS - t)) s"

# ---- mail server (tests/mail_server.rs, the email connector) -------------------------------
# Dovecot (IMAP with IDLE) behind an aiosmtpd SMTP front, all in $T/mail; stopped by cleanup.
# It exports SWITCHBOARD_TEST_SMTP_PORT, _IMAP_PORT, _MAIL_PASSWORD and _MAIL_SERVER.
"$REPO/scripts/mail.sh" install
"$REPO/scripts/mail.sh" start "$T/mail" "$SMTP_PORT" "$IMAP_PORT" >/dev/null
set -a
# shellcheck disable=SC1091  # written by scripts/mail.sh start
. "$T/mail/env"
set +a
# ---- end of mail server --------------------------------------------------------------------

# ---- DNS server (the email connector's SPF/DKIM/DMARC checks, email/auth/tests.rs) ---------
# dnsmasq in $T/dns answering only the test zone; stopped by cleanup. It exports
# SWITCHBOARD_TEST_DNS and SWITCHBOARD_TEST_DNS_SERVER. (DNS_PORT was checked free for TCP;
# dnsmasq binds UDP on it too.)
"$REPO/scripts/dns.sh" install
"$REPO/scripts/dns.sh" start "$T/dns" "$DNS_PORT" \
    "$REPO/bridge/src/connector/email/auth/testdata/zone.txt" >/dev/null
set -a
# shellcheck disable=SC1091  # written by scripts/dns.sh start
. "$T/dns/env"
set +a
# ---- end of DNS server ---------------------------------------------------------------------

# ---- Prometheus (tests/e2e_metrics.rs scrapes Switchboard with the real server) ------------
# Debian's package; the test runs its own instance from this path. Its version is logged.
"$REPO/scripts/prometheus.sh" install
SWITCHBOARD_TEST_PROMETHEUS="$("$REPO/scripts/prometheus.sh" path)"
export SWITCHBOARD_TEST_PROMETHEUS
log "prometheus: $("$REPO/scripts/prometheus.sh" version)"
# ---- end of Prometheus ---------------------------------------------------------------------

# ---- HAProxy (tests/chaos/cluster.rs puts two Switchboards behind the real load balancer) -
"$REPO/scripts/haproxy.sh" install
SWITCHBOARD_TEST_HAPROXY="$("$REPO/scripts/haproxy.sh" path)"
export SWITCHBOARD_TEST_HAPROXY
log "haproxy: $("$REPO/scripts/haproxy.sh" version)"
# ---- end of HAProxy ------------------------------------------------------------------------

export SWITCHBOARD_TEST_HS_URL="http://127.0.0.1:$HS_PORT"
export SWITCHBOARD_TEST_SERVER_NAME=localhost
export SWITCHBOARD_TEST_DIR="$T"
SWITCHBOARD_TEST_SHARED_SECRET="$(cat "$T/synapse/shared_secret")"
export SWITCHBOARD_TEST_SHARED_SECRET
export SWITCHBOARD_TEST_NOGUEST_HS_URL="http://127.0.0.1:$NG_HS_PORT"
export SWITCHBOARD_TEST_NOGUEST_SERVER_NAME=noguest.localhost
SWITCHBOARD_TEST_NOGUEST_SHARED_SECRET="$(cat "$T/noguest/synapse/shared_secret")"
export SWITCHBOARD_TEST_NOGUEST_SHARED_SECRET
export SWITCHBOARD_TEST_MAS_HS_URL="http://127.0.0.1:$MAS_HS_PORT"
export SWITCHBOARD_TEST_MAS_SERVER_NAME=mas.localhost
export SWITCHBOARD_TEST_POSTGRES_URL="$PG_URL"
# Written down so a kept dir (KEEP_TEST_DIR=1) can be inspected with the same settings.
env | grep -E '^(SWITCHBOARD_|CARGO_TARGET_DIR=)' | sort >"$T/env"

# scripts/bench.sh reuses this setup: with SWITCHBOARD_TEST_COMMAND set, that command runs
# against the services instead of the test suite.
if [ -n "${SWITCHBOARD_TEST_COMMAND:-}" ]; then
    log "running: $SWITCHBOARD_TEST_COMMAND"
    status=0
    bash -c "$SWITCHBOARD_TEST_COMMAND" || status=$?
    exit "$status"
fi

# ---- tests -----------------------------------------------------------------------------------
log "cargo test --workspace --all-targets $*"
t=$SECONDS
status=0
cargo test --workspace --all-targets --no-fail-fast "${locked[@]}" "$@" || status=$?
log "tests took $((SECONDS - t)) s"
exit "$status"
