#!/usr/bin/env bash
# Debian's HAProxy, the load balancer in front of several Switchboard instances
# (tests/chaos/cluster.rs, the benchmark, scripts/ha-demo.sh): the real one operators run, at whatever version
# apt serves.
#
# Usage:
#   scripts/haproxy.sh install    # apt-get install haproxy, if missing
#   scripts/haproxy.sh path       # prints the binary's path
#   scripts/haproxy.sh version    # prints e.g. "haproxy 2.6.12"
#
# The tests and the demo start their own haproxy from that path with their own config (in
# the foreground, `-db`); nothing of the package's service is used.
set -euo pipefail

log() { echo "[haproxy.sh] $*" >&2; }
die() { log "error: $*"; exit 1; }

find_haproxy() { command -v haproxy 2>/dev/null || { [ -x /usr/sbin/haproxy ] && echo /usr/sbin/haproxy; }; }

case "${1:-}" in
    install)
        if [ -z "$(find_haproxy)" ]; then
            log "installing haproxy with apt-get"
            export DEBIAN_FRONTEND=noninteractive
            apt-get update -q
            apt-get install -y -q --no-install-recommends haproxy
            [ -n "$(find_haproxy)" ] || die "haproxy still missing after apt-get install"
        fi
        ;;
    path)
        [ -n "$(find_haproxy)" ] || die "haproxy missing; run: $0 install"
        find_haproxy
        ;;
    version)
        [ -n "$(find_haproxy)" ] || die "haproxy missing; run: $0 install"
        "$(find_haproxy)" -v | sed -n 's/^HAProxy version \([^ ]*\).*/haproxy \1/p'
        ;;
    *)
        die "usage: $0 install|path|version"
        ;;
esac
