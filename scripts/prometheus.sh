#!/usr/bin/env bash
# Debian's Prometheus server, for the metrics test (tests/e2e_metrics.rs): the real scraper
# and query engine operators run, at whatever version apt serves.
#
# Usage:
#   scripts/prometheus.sh install    # apt-get install prometheus, if missing
#   scripts/prometheus.sh path       # prints the server's path
#   scripts/prometheus.sh version    # prints e.g. "prometheus 2.42.0"
#
# The test starts its own server from that path, with its own config, data directory and
# port (nothing of the package's service is used; on a machine with an init system the
# package may start one on :9090, which the test never talks to).
set -euo pipefail

log() { echo "[prometheus.sh] $*" >&2; }
die() { log "error: $*"; exit 1; }

installed() { command -v prometheus >/dev/null 2>&1; }

case "${1:-}" in
    install)
        if ! installed; then
            log "installing prometheus with apt-get"
            export DEBIAN_FRONTEND=noninteractive
            apt-get update -q
            # Without recommends: the node exporter and the rest are not needed here.
            apt-get install -y -q --no-install-recommends prometheus
            installed || die "prometheus still missing after apt-get install"
        fi
        ;;
    path)
        installed || die "prometheus missing; run: $0 install"
        command -v prometheus
        ;;
    version)
        installed || die "prometheus missing; run: $0 install"
        prometheus --version 2>&1 | sed -n 's/^prometheus, version \([^ ]*\).*/prometheus \1/p'
        ;;
    *)
        die "usage: $0 install|path|version"
        ;;
esac
