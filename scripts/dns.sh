#!/usr/bin/env bash
# A throwaway DNS server for tests: dnsmasq answering the TXT records of one zone file and
# nothing else (SPF, DKIM and DMARC records for the mail-authentication tests).
#
# Usage:
#   scripts/dns.sh install
#   scripts/dns.sh start DIR PORT ZONEFILE   # writes DIR/env; prints its path
#   scripts/dns.sh stop DIR
#   scripts/dns.sh query PORT NAME           # prints NAME's TXT records (one a line, its
#                                            # strings in quotes), as the server answers
#
# Everything lives in DIR: dnsmasq's pid (DIR/dnsmasq.pid) and log (DIR/dnsmasq.log, every query).
# It listens on 127.0.0.1:PORT, UDP and TCP.
#
# The zone file is the project's own simple format (see
# bridge/src/connector/email/auth/testdata/zone.txt): one record a line,
#   NAME TXT "TEXT"
# with `#` comments and blank lines. TEXT is printable ASCII without double quotes or commas
# (dnsmasq's --txt-record separates a record's strings with commas and takes quotes literally).
# A name may have several records (several lines). A DNS character-string holds at most 255
# bytes: a longer TEXT (a DKIM RSA-2048 key) is cut here into 255-byte strings of one record,
# which DKIM, SPF and DMARC readers join again. (dnsmasq 2.90 would cut it at 255 itself, but
# saying so here keeps the record's shape independent of its version.)
#
# Only those records are answered: no upstream servers (--no-resolv), no /etc/hosts, no
# /etc/dnsmasq.conf. Every top-level domain named in the zone is local (--local=/TLD/), so a
# name under it that the zone lacks gets a definite NXDOMAIN ("no record"), not a refusal that
# a resolver would report as a temporary error.
#
# DIR/env (KEY=VALUE lines, shell-quoted; `set -a; . DIR/env; set +a`):
#   SWITCHBOARD_TEST_DNS          127.0.0.1:PORT
#   SWITCHBOARD_TEST_DNS_SERVER   what runs, with its version, for tests to print
#
# dnsmasq (apt: dnsmasq-base, no system service) runs in the foreground of a setsid'd process;
# started as root, it drops to the user nobody (group nogroup) once the port is bound.
set -euo pipefail

log() { echo "[dns.sh] $*" >&2; }
die() { log "error: $*"; exit 1; }

abspath() {
    local p="$1"
    case "$p" in /*) ;; *) p="$PWD/$p" ;; esac
    python3 -c 'import os,sys; print(os.path.normpath(sys.argv[1]))' "$p"
}

alive() { [ -n "$1" ] && kill -0 "$1" 2>/dev/null; }

cmd_install() {
    command -v dnsmasq >/dev/null 2>&1 && return 0
    log "installing dnsmasq (dnsmasq-base) with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    # The package lists may be missing or stale on a fresh machine: update only when needed.
    apt-get install -y -q --no-install-recommends dnsmasq-base \
        || { apt-get update -q && apt-get install -y -q --no-install-recommends dnsmasq-base; }
    command -v dnsmasq >/dev/null 2>&1 || die "dnsmasq still missing after apt-get install"
}

# zone_args ZONEFILE: the dnsmasq options serving ZONEFILE, one a line.
zone_args() {
    python3 - "$1" <<'EOF'
import re, sys

path = sys.argv[1]
line_re = re.compile(r'^(\S+)\s+TXT\s+"([^"]*)"\s*$')
records, tlds = [], set()
with open(path, encoding="ascii") as f:
    for number, line in enumerate(f, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = line_re.match(line)
        if not m:
            sys.exit(f"{path}:{number}: expected NAME TXT \"TEXT\", got: {line}")
        name, text = m.group(1).rstrip(".").lower(), m.group(2)
        if not re.fullmatch(r"[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)+", name):
            sys.exit(f"{path}:{number}: not a DNS name of two labels or more: {name}")
        if any(not (0x20 <= ord(c) < 0x7f) or c == "," for c in text):
            sys.exit(f"{path}:{number}: the text must be printable ASCII without commas")
        # One record, its strings separated by commas: DNS character-strings of 255 bytes at most.
        chunks = [text[i:i + 255] for i in range(0, len(text), 255)] or [""]
        records.append(f"--txt-record={name}," + ",".join(chunks))
        tlds.add(name.rsplit(".", 1)[1])
if not records:
    sys.exit(f"{path}: no records")
for tld in sorted(tlds):
    print(f"--local=/{tld}/")
print("\n".join(records))
EOF
}

# dns_query PORT NAME: NAME's TXT records over UDP (a plain query of our own, no dig needed);
# exit status 0 with an answer, 1 with NXDOMAIN or no data, 2 when nothing answers.
dns_query() {
    python3 - "$1" "$2" <<'EOF'
import random, socket, struct, sys

port, name = int(sys.argv[1]), sys.argv[2].rstrip(".")
qid = random.randrange(1 << 16)
question = b"".join(bytes([len(l)]) + l.encode() for l in name.split(".")) + b"\0"
question += struct.pack(">HH", 16, 1)  # TXT, IN
query = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0) + question
with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
    s.settimeout(2)
    try:
        s.sendto(query, ("127.0.0.1", port))
        reply, _ = s.recvfrom(65535)
    except OSError:
        sys.exit(2)
rid, flags, qd, an = struct.unpack(">HHHH", reply[:8])
if rid != qid:
    sys.exit(2)
rcode = flags & 0xF
pos = 12 + len(question)
found = False
for _ in range(an):
    # The answer's name is a compression pointer (2 bytes) or labels; skip either.
    while reply[pos] != 0 and reply[pos] & 0xC0 != 0xC0:
        pos += reply[pos] + 1
    pos += 2 if reply[pos] & 0xC0 == 0xC0 else 1
    rtype, _, _, length = struct.unpack(">HHIH", reply[pos:pos + 10])
    pos += 10
    data, pos = reply[pos:pos + length], pos + length
    if rtype != 16:
        continue
    strings, i = [], 0
    while i < len(data):
        strings.append(data[i + 1:i + 1 + data[i]].decode("ascii", "replace"))
        i += 1 + data[i]
    print(" ".join(f'"{s}"' for s in strings))
    found = True
sys.exit(0 if found and rcode == 0 else 1)
EOF
}

cmd_start() {
    [ $# -eq 3 ] || die "usage: $0 start DIR PORT ZONEFILE"
    command -v dnsmasq >/dev/null 2>&1 || die "dnsmasq missing; run: $0 install"
    local dir port zone
    dir="$(abspath "$1")"
    port="$2"
    zone="$(abspath "$3")"
    [ -f "$zone" ] || die "no zone file $zone"
    [ -f "$dir/dnsmasq.pid" ] && die "a DNS server may already run in $dir; run: $0 stop $dir"
    mkdir -p "$dir"

    local args=() probe
    mapfile -t args < <(zone_args "$zone") || true
    [ ${#args[@]} -gt 0 ] || die "could not read $zone"
    # The first name of the zone: asked until it answers.
    probe="$(printf '%s\n' "${args[@]}" | sed -n 's/^--txt-record=\([^,]*\),.*/\1/p' | head -n 1)"
    if [ "$(id -u)" = 0 ]; then
        args+=(--user=nobody --group=nogroup)
        # Logging happens after the drop to nobody.
        touch "$dir/dnsmasq.log"
        chown nobody: "$dir/dnsmasq.log"
    fi

    local version
    version="$(dnsmasq --version | head -n 1 | awk '{print $3}')"
    log "starting dnsmasq $version (DNS on 127.0.0.1:$port, zone $zone, log: $dir/dnsmasq.log)"
    # setsid: the server outlives this script and is not hit by the caller's Ctrl-C.
    # --keep-in-foreground: $! is dnsmasq itself, written to the pid file; dnsmasq's own pid
    # file is off (an empty --pid-file) so nothing is written outside DIR.
    setsid dnsmasq --keep-in-foreground --conf-file=/dev/null --pid-file= \
        --no-resolv --no-hosts --no-poll \
        --listen-address=127.0.0.1 --bind-interfaces --port="$port" \
        --log-queries --log-facility="$dir/dnsmasq.log" \
        "${args[@]}" >"$dir/dnsmasq.out" 2>&1 </dev/null &
    echo $! >"$dir/dnsmasq.pid"

    local deadline=$((SECONDS + 30)) status
    while :; do
        status=0
        dns_query "$port" "$probe" >/dev/null || status=$?
        [ $status -eq 0 ] && break
        if ! alive "$(cat "$dir/dnsmasq.pid")"; then
            tail -n 20 "$dir/dnsmasq.out" "$dir/dnsmasq.log" >&2 || true
            cmd_stop "$dir"
            die "dnsmasq exited"
        fi
        if [ $SECONDS -ge $deadline ]; then
            tail -n 20 "$dir/dnsmasq.out" "$dir/dnsmasq.log" >&2 || true
            cmd_stop "$dir"
            die "no TXT answer for $probe within 30 s (query status $status)"
        fi
        sleep 0.2
    done

    {
        echo "SWITCHBOARD_TEST_DNS='127.0.0.1:$port'"
        echo "SWITCHBOARD_TEST_DNS_SERVER='dnsmasq $version (zone $(basename "$zone"))'"
    } >"$dir/env"
    log "up: DNS 127.0.0.1:$port (settings: $dir/env)"
    echo "$dir/env"
}

cmd_stop() {
    [ $# -eq 1 ] || die "usage: $0 stop DIR"
    local dir pid
    dir="$(abspath "$1")"
    if [ ! -f "$dir/dnsmasq.pid" ]; then
        log "not running in $dir"
        return 0
    fi
    pid="$(cat "$dir/dnsmasq.pid")"
    if alive "$pid"; then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 50); do alive "$pid" || break; sleep 0.1; done
        alive "$pid" && { log "dnsmasq $pid ignored SIGTERM; killing it"; kill -KILL "$pid" 2>/dev/null || true; }
    fi
    rm -f "$dir/dnsmasq.pid"
    log "stopped the DNS server in $dir"
}

cmd_query() {
    [ $# -eq 2 ] || die "usage: $0 query PORT NAME"
    dns_query "$1" "$2"
}

[ $# -ge 1 ] || die "usage: $0 install | start DIR PORT ZONEFILE | stop DIR | query PORT NAME"
sub="$1"; shift
case "$sub" in
    install) cmd_install "$@" ;;
    start) cmd_start "$@" ;;
    stop) cmd_stop "$@" ;;
    query) cmd_query "$@" ;;
    *) die "unknown subcommand: $sub" ;;
esac
