#!/usr/bin/env bash
# A throwaway mail server for tests: Dovecot (IMAP, with IDLE) behind a small SMTP front.
#
# Usage:
#   scripts/mail.sh install
#   scripts/mail.sh start DIR [SMTP_PORT [IMAP_PORT]]   # writes DIR/env; prints its path
#   scripts/mail.sh stop DIR
#
# Without ports, start asks the kernel for two free loopback ports; with SMTP_PORT only, IMAP
# listens on SMTP_PORT+1. Started again in a DIR it ran in before (stopped), it comes back as it
# was: the same ports (unless given) and password, and the mailboxes it held, so a test can take
# the mail server away for a while and bring it back under everyone's feet (tests/chaos).
# Everything lives in DIR: Dovecot's config, sockets and pid
# (DIR/run/master.pid), the maildirs (DIR/mail/DOMAIN/USER), the SMTP front's pid (DIR/smtp.pid)
# and the logs (DIR/dovecot.log, DIR/smtp.log).
#
# Users: every address is a mailbox, created on first delivery or login. The IMAP login is the
# full address (lowercased); every mailbox has the one password of the run. Tests share the
# server, so each should use addresses of its own (e.g. alice-<test>@example.test).
# Catch-all: every address at a domain ending in .catchall.test is delivered to inbox@ that
# domain, as an operator's catch-all alias would (Switchboard reads its reply+TOKEN@ and
# bounce+ID@ mail from one mailbox).
#
# DIR/env (KEY=VALUE lines, shell-quoted; `set -a; . DIR/env; set +a`):
#   SWITCHBOARD_TEST_SMTP_PORT      SMTP on 127.0.0.1: any sender, any recipient; AUTH PLAIN and
#                                   LOGIN with the password below are offered, never required
#   SWITCHBOARD_TEST_IMAP_PORT      IMAP4rev1 on 127.0.0.1 (IDLE, MOVE, UIDPLUS, keywords)
#   SWITCHBOARD_TEST_MAIL_PASSWORD  the password of every mailbox (and of SMTP AUTH)
#   SWITCHBOARD_TEST_MAIL_SERVER    what runs, with versions, for tests to print
#   SWITCHBOARD_TEST_MAIL_DIR       DIR (absolute): its faults/ folder, and for stop/start
# Neither port speaks TLS (no STARTTLS either): loopback only, never for real mail.
#
# Faults: a test makes the SMTP front misbehave by writing a file into DIR/faults (written under a
# name starting with a dot, then renamed, so the front never reads half of one). Each holds one
# JSON object, {"kind": K, "from": TEXT, "seconds": S}; the front plays the oldest (by file name)
# whose "from" is part of the envelope sender on the next mail's data, and deletes it:
#   "try_later"  answers 451 4.7.1 and delivers nothing (a server shedding load);
#   "drop"       closes the connection without an answer and delivers nothing;
#   "hang"       answers nothing for S seconds, then delivers and answers 250; a client that
#                gives up meanwhile closes the connection, and nothing is delivered.
# "from" lets a test aim at one sender (Switchboard's bounce+ID@ its domain) and leave the
# others' mail (the test's own responders) alone.
#
# Why this pair: mail-devel (PyPI, SMTP+IMAP in one process, tried first) dropped custom
# keywords ($Foo) silently and its IDLE pushed a new message's EXISTS only 32-35 s after the
# mail was accepted (two tries). Dovecot's IDLE pushed it within 0.5 s. Dovecot speaks no SMTP
# itself, and Postfix needs a system-wide setup, so an aiosmtpd process (PyPI, in the test venv)
# takes mail over SMTP and hands it to Dovecot over LMTP, as an MTA would: Dovecot delivers,
# indexes and notifies IDLE sessions.
#
# Dovecot (apt: dovecot-imapd, dovecot-lmtpd) runs from its own config in DIR as root; mail is
# stored as the `mail` system user, so DIR's parents must be traversable by it (o+x).
set -euo pipefail

AIOSMTPD_VERSION=1.4.6
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${SWITCHBOARD_VENV:-$REPO/.venv}"
PY="$VENV/bin/python"
MAIL_USER=mail

log() { echo "[mail.sh] $*" >&2; }
die() { log "error: $*"; exit 1; }

abspath() {
    local p="$1"
    case "$p" in /*) ;; *) p="$PWD/$p" ;; esac
    python3 -c 'import os,sys; print(os.path.normpath(sys.argv[1]))' "$p"
}

aiosmtpd_version() { # prints the installed aiosmtpd version, or nothing
    [ -x "$PY" ] || return 0
    "$PY" -c 'import importlib.metadata as m; print(m.version("aiosmtpd"))' 2>/dev/null || true
}

dovecot_installed() {
    command -v dovecot >/dev/null 2>&1 && [ -x /usr/lib/dovecot/imap ] && [ -x /usr/lib/dovecot/lmtp ]
}

cmd_install() {
    if ! dovecot_installed; then
        log "installing Dovecot (dovecot-imapd, dovecot-lmtpd) with apt-get"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -q
        # The packages' own service may start on a machine with an init system; ours never
        # touches it (own config, base_dir and ports).
        apt-get install -y -q --no-install-recommends dovecot-imapd dovecot-lmtpd
        dovecot_installed || die "dovecot still missing after apt-get install"
    fi
    if [ "$(aiosmtpd_version)" != "$AIOSMTPD_VERSION" ]; then
        if [ ! -x "$PY" ]; then
            log "creating virtualenv $VENV"
            python3 -m venv "$VENV"
        fi
        log "installing aiosmtpd==$AIOSMTPD_VERSION into $VENV"
        "$PY" -m pip install --disable-pip-version-check -q "aiosmtpd==$AIOSMTPD_VERSION"
        [ "$(aiosmtpd_version)" = "$AIOSMTPD_VERSION" ] || die "aiosmtpd $AIOSMTPD_VERSION did not install"
    fi
}

need_installed() {
    dovecot_installed && [ "$(aiosmtpd_version)" = "$AIOSMTPD_VERSION" ] \
        || die "Dovecot or aiosmtpd $AIOSMTPD_VERSION (in $VENV) missing; run: $0 install"
}

free_ports() { # free_ports N: N distinct free loopback ports
    python3 "$REPO/scripts/free_ports.py" "$1"
}

# greets HOST PORT PREFIX: does a server on PORT greet with a line starting with PREFIX?
greets() {
    python3 - "$1" "$2" "$3" <<'EOF' >/dev/null 2>&1
import socket, sys
with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2) as s:
    line = s.makefile("rb").readline()
sys.exit(0 if line.startswith(sys.argv[3].encode()) else 1)
EOF
}

alive() { [ -n "$1" ] && kill -0 "$1" 2>/dev/null; }

write_dovecot_conf() { # write_dovecot_conf DIR IMAP_PORT PASSWORD
    local dir="$1" port="$2" password="$3"
    cat >"$dir/dovecot.conf" <<EOF
# Written by scripts/mail.sh: a throwaway Dovecot for tests, loopback only, no TLS.
base_dir = $dir/run
state_dir = $dir/state
instance_name = switchboard-test-mail
log_path = $dir/dovecot.log
protocols = imap lmtp
listen = 127.0.0.1
ssl = no
# Plain-text logins over the unencrypted loopback connection.
disable_plaintext_auth = no
auth_mechanisms = plain login
default_internal_user = dovecot
default_login_user = dovenull
# Mail is stored as the 'mail' system user (uid 8 on Debian); Dovecot refuses uids below this.
first_valid_uid = $(id -u "$MAIL_USER")
mail_location = maildir:$dir/mail/%d/%n
postmaster_address = postmaster@localhost
# Every user exists and has the run's one password.
passdb {
  driver = static
  args = password=$password
}
userdb {
  driver = static
  args = uid=$MAIL_USER gid=$MAIL_USER home=$dir/mail/%d/%n allow_all_users=yes
}
service imap-login {
  inet_listener imap {
    address = 127.0.0.1
    port = $port
  }
  inet_listener imaps {
    port = 0
  }
}
# The SMTP front delivers here (DIR/run/lmtp).
service lmtp {
  unix_listener lmtp {
    mode = 0600
  }
}
EOF
}

write_smtp_front() { # write_smtp_front DIR: the SMTP-to-LMTP relay, run with the venv's python
    cat >"$1/smtp_front.py" <<'EOF'
"""SMTP on 127.0.0.1:PORT, handing every accepted mail to Dovecot's LMTP socket.

Written by scripts/mail.sh. AUTH PLAIN/LOGIN with the run's password is offered over plain
text (loopback) and never required, like an MX that also takes submissions.
"""
import asyncio
import json
import logging
import os
import signal
import smtplib
import sys

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

lmtp_path, port, password = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode()
faults_dir = sys.argv[4]
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
log = logging.getLogger("smtp_front")


def authenticator(server, session, envelope, mechanism, auth_data):
    ok = getattr(auth_data, "password", None) == password
    # handled=False: aiosmtpd then answers 535 itself (its default, handled=True, sends nothing).
    return AuthResult(success=ok, handled=ok)


CATCH_ALL = ".catchall.test"


def mailbox_of(rcpt):
    """Where a recipient's mail goes: its own mailbox, except that every address at a domain
    ending in .catchall.test goes to inbox@ that domain, as an operator's catch-all alias
    would (Switchboard reads reply+TOKEN@ and bounce+ID@ mail from one mailbox)."""
    local, _, domain = rcpt.rpartition("@")
    if domain.lower().endswith(CATCH_ALL):
        return "inbox@" + domain.lower()
    return rcpt


def take_fault(mail_from):
    """The oldest fault queued in faults_dir for a sender like mail_from, removed from the
    queue; None when there is none (see scripts/mail.sh, "Faults")."""
    for name in sorted(os.listdir(faults_dir)):
        if name.startswith("."):
            continue
        path = os.path.join(faults_dir, name)
        with open(path) as f:
            fault = json.load(f)
        if fault.get("from", "") in (mail_from or ""):
            os.remove(path)
            return fault
    return None


class Relay:
    async def handle_DATA(self, server, session, envelope):
        fault = take_fault(envelope.mail_from)
        if fault is not None:
            kind = fault["kind"]
            log.warning("fault %s for mail from %s", kind, envelope.mail_from)
            if kind == "try_later":
                return "451 4.7.1 too busy, try again later"
            if kind == "drop":
                server.transport.abort()
                # Aborting the connection cancels this handler; nothing is delivered.
                await asyncio.sleep(3600)
            if kind == "hang":
                # A client that gives up closes the connection, which cancels this handler
                # before it delivers.
                await asyncio.sleep(float(fault.get("seconds", 0)))
            elif kind != "drop":
                log.error("unknown fault %r: delivering normally", kind)

        def deliver():
            with smtplib.LMTP(lmtp_path) as lmtp:
                return lmtp.sendmail(envelope.mail_from,
                                     [mailbox_of(r) for r in envelope.rcpt_tos],
                                     envelope.original_content)
        try:
            refused = await asyncio.to_thread(deliver)
        except smtplib.SMTPRecipientsRefused as e:
            log.warning("LMTP refused every recipient: %s", e.recipients)
            return "550 5.1.1 recipients refused by the mailbox server"
        except (OSError, smtplib.SMTPException) as e:
            log.error("LMTP delivery failed: %r", e)
            return "451 4.3.0 mailbox server unavailable, try again"
        if refused:
            # SMTP has one reply for the whole DATA: the others are delivered, so accept.
            log.warning("LMTP refused some recipients: %s", refused)
        log.info("delivered from %s to %s", envelope.mail_from, envelope.rcpt_tos)
        return "250 2.0.0 delivered"


controller = Controller(Relay(), hostname="127.0.0.1", port=port,
                        authenticator=authenticator, auth_require_tls=False)
controller.start()
log.info("listening on 127.0.0.1:%d, delivering to %s", port, lmtp_path)
signal.sigwait({signal.SIGTERM, signal.SIGINT})
controller.stop()
EOF
}

cmd_start() {
    [ $# -ge 1 ] && [ $# -le 3 ] || die "usage: $0 start DIR [SMTP_PORT [IMAP_PORT]]"
    need_installed
    local dir smtp_port imap_port
    dir="$(abspath "$1")"
    if [ $# -ge 2 ]; then
        smtp_port="$2"
        imap_port="${3:-$((smtp_port + 1))}"
    elif [ ! -f "$dir/env" ]; then
        read -r smtp_port imap_port <<<"$(free_ports 2)"
    fi
    if [ -f "$dir/smtp.pid" ] || [ -f "$dir/run/master.pid" ]; then
        die "a mail server may already run in $dir; run: $0 stop $dir"
    fi
    mkdir -p "$dir/run" "$dir/state" "$dir/mail" "$dir/faults"
    chmod 755 "$dir"
    chown "$MAIL_USER:" "$dir/mail"
    runuser -u "$MAIL_USER" -- test -w "$dir/mail" \
        || die "user $MAIL_USER cannot write $dir/mail: make its parent directories traversable (chmod o+x)"

    local password dovecot_version
    if [ -f "$dir/env" ]; then
        # Started again where it ran before: as it was (see the usage above).
        password="$(sed -n "s/^SWITCHBOARD_TEST_MAIL_PASSWORD='\(.*\)'\$/\1/p" "$dir/env")"
        [ $# -ge 2 ] || {
            smtp_port="$(sed -n "s/^SWITCHBOARD_TEST_SMTP_PORT='\(.*\)'\$/\1/p" "$dir/env")"
            imap_port="$(sed -n "s/^SWITCHBOARD_TEST_IMAP_PORT='\(.*\)'\$/\1/p" "$dir/env")"
        }
        [ -n "$password" ] && [ -n "$smtp_port" ] && [ -n "$imap_port" ] || die "cannot read $dir/env"
    else
        password="$(python3 -c 'import secrets; print(secrets.token_hex(12))')"
    fi
    dovecot_version="$(dovecot --version)"
    write_dovecot_conf "$dir" "$imap_port" "$password"
    write_smtp_front "$dir"

    log "starting Dovecot $dovecot_version (IMAP on 127.0.0.1:$imap_port, log: $dir/dovecot.log)"
    dovecot -c "$dir/dovecot.conf" || { tail -n 20 "$dir/dovecot.log" >&2 || true; die "dovecot did not start"; }
    log "starting aiosmtpd $AIOSMTPD_VERSION (SMTP on 127.0.0.1:$smtp_port, log: $dir/smtp.log)"
    # setsid: the front outlives this script and is not hit by the caller's Ctrl-C.
    setsid "$PY" "$dir/smtp_front.py" "$dir/run/lmtp" "$smtp_port" "$password" "$dir/faults" \
        >>"$dir/smtp.log" 2>&1 </dev/null &
    echo $! >"$dir/smtp.pid"

    local deadline=$((SECONDS + 30)) smtp_ok=0 imap_ok=0
    while :; do
        [ $smtp_ok = 1 ] || { greets 127.0.0.1 "$smtp_port" "220" && smtp_ok=1; } || true
        [ $imap_ok = 1 ] || { greets 127.0.0.1 "$imap_port" "* OK" && imap_ok=1; } || true
        [ $smtp_ok = 1 ] && [ $imap_ok = 1 ] && break
        if ! alive "$(cat "$dir/smtp.pid")"; then
            tail -n 20 "$dir/smtp.log" >&2 || true
            cmd_stop "$dir"
            die "the SMTP front exited"
        fi
        if [ $SECONDS -ge $deadline ]; then
            tail -n 20 "$dir/dovecot.log" "$dir/smtp.log" >&2 || true
            cmd_stop "$dir"
            die "no answer within 30 s (SMTP answered: $smtp_ok, IMAP answered: $imap_ok)"
        fi
        sleep 0.2
    done

    # Single-quoted for the shell: no value here contains a quote.
    {
        echo "SWITCHBOARD_TEST_SMTP_PORT='$smtp_port'"
        echo "SWITCHBOARD_TEST_IMAP_PORT='$imap_port'"
        echo "SWITCHBOARD_TEST_MAIL_PASSWORD='$password'"
        echo "SWITCHBOARD_TEST_MAIL_SERVER='Dovecot $dovecot_version (IMAP, LMTP), aiosmtpd $AIOSMTPD_VERSION (SMTP front)'"
        echo "SWITCHBOARD_TEST_MAIL_DIR='$dir'"
    } >"$dir/env"
    log "up: SMTP 127.0.0.1:$smtp_port, IMAP 127.0.0.1:$imap_port (settings: $dir/env)"
    echo "$dir/env"
}

cmd_stop() {
    [ $# -eq 1 ] || die "usage: $0 stop DIR"
    local dir pid stopped=0
    dir="$(abspath "$1")"
    if [ -f "$dir/smtp.pid" ]; then
        pid="$(cat "$dir/smtp.pid")"
        if alive "$pid"; then
            kill -TERM "$pid" 2>/dev/null || true
            for _ in $(seq 50); do alive "$pid" || break; sleep 0.1; done
            alive "$pid" && { log "SMTP front $pid ignored SIGTERM; killing it"; kill -KILL "$pid" 2>/dev/null || true; }
        fi
        rm -f "$dir/smtp.pid"
        stopped=1
    fi
    if [ -f "$dir/run/master.pid" ]; then
        pid="$(cat "$dir/run/master.pid")"
        if alive "$pid"; then
            # SIGTERM makes the master stop its children and remove master.pid.
            kill -TERM "$pid" 2>/dev/null || true
            for _ in $(seq 50); do alive "$pid" || break; sleep 0.1; done
            alive "$pid" && { log "Dovecot master $pid ignored SIGTERM; killing it"; kill -KILL "$pid" 2>/dev/null || true; }
        fi
        rm -f "$dir/run/master.pid"
        stopped=1
    fi
    if [ $stopped = 1 ]; then log "stopped the mail server in $dir"; else log "not running in $dir"; fi
}

[ $# -ge 1 ] || die "usage: $0 install | start DIR [SMTP_PORT [IMAP_PORT]] | stop DIR"
sub="$1"; shift
case "$sub" in
    install) cmd_install "$@" ;;
    start) cmd_start "$@" ;;
    stop) cmd_stop "$@" ;;
    *) die "unknown subcommand: $sub" ;;
esac
