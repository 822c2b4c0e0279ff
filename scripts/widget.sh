#!/usr/bin/env bash
# The web widget's build, its browser-test tooling and its benchmark.
#
#   scripts/widget.sh setup    install what the browser tests need (Debian's chromium if
#                              /usr/bin/chromium is missing; the npm dev dependencies, pinned by
#                              the committed package-lock.json files) and fail if the committed
#                              bundle differs from a fresh build. scripts/test.sh runs this.
#   scripts/widget.sh build    rebuild web-widget/dist/switchboard-widget.min.js (commit it)
#   scripts/widget.sh check    fail if the committed bundle is stale
#   scripts/widget.sh size     the bundle's size, raw and gzipped
#   scripts/widget.sh bench [N]
#                              time until the widget is ready (N runs, default 30) in headless
#                              Chromium, written to docs/benchmarks.md and README.md. Uses the
#                              Switchboard at $SWITCHBOARD_URL, or starts scripts/demo.sh on free
#                              ports for the duration.
#
# No tool here downloads a browser: PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1, npm ci --ignore-scripts
# (esbuild's binary comes as an ordinary npm package, @esbuild/linux-x64).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WIDGET="$REPO/web-widget"
BROWSER_TESTS="$REPO/tests/browser"
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1

log() { echo "[widget.sh] $*" >&2; }
die() { log "error: $*"; exit 1; }

need_node() {
    command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 && return 0
    log "installing nodejs and npm (apt-get)"
    apt_install nodejs npm
}

apt_install() {
    [ "$(id -u)" = 0 ] || die "need root to apt-get install $*"
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@" >/dev/null 2>&1 || {
        DEBIAN_FRONTEND=noninteractive apt-get update >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@" >/dev/null
    }
}

# npm_ci DIR: install exactly the lock file, only when it changed since the last install.
npm_ci() {
    local dir="$1" stamp="$1/node_modules/.switchboard-lock"
    if [ -f "$stamp" ] && cmp -s "$dir/package-lock.json" "$stamp"; then
        return 0
    fi
    log "npm ci in ${dir#"$REPO"/}"
    (cd "$dir" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
    cp "$dir/package-lock.json" "$stamp"
}

cmd_setup() {
    if [ ! -x /usr/bin/chromium ]; then
        log "installing chromium (apt-get)"
        apt_install chromium
    fi
    # apt serves whatever version Debian ships that day: say which one this run tests with
    # (each browser run also reports it, and the guest run writes docs/images/browser-version.txt).
    log "browser for the tests: $(/usr/bin/chromium --version 2>/dev/null || echo 'unknown version')"
    need_node
    npm_ci "$WIDGET"
    npm_ci "$BROWSER_TESTS"
    cmd_check
}

cmd_build() {
    need_node
    npm_ci "$WIDGET"
    (cd "$WIDGET" && node build.mjs)
}

cmd_check() {
    need_node
    npm_ci "$WIDGET"
    (cd "$WIDGET" && node build.mjs --check)
}

cmd_size() {
    local f="$WIDGET/dist/switchboard-widget.min.js"
    echo "$(wc -c <"$f") bytes, $(gzip -9 -n -c "$f" | wc -c) bytes gzipped ($f)"
}

cmd_bench() {
    local runs="${1:-30}" demo_pid="" demo_dir=""
    cmd_setup
    if [ -z "${SWITCHBOARD_URL:-}" ]; then
        demo_dir="$(mktemp -d /tmp/switchboard-bench.XXXXXX)"
        read -r hs_port sb_port <<<"$(python3 "$REPO/scripts/free_ports.py" 2)"
        log "starting scripts/demo.sh (Synapse :$hs_port, Switchboard :$sb_port; log $demo_dir/demo.log)"
        DEMO_DIR="$demo_dir/demo" HS_PORT="$hs_port" SB_PORT="$sb_port" \
            "$REPO/scripts/demo.sh" >"$demo_dir/demo.log" 2>&1 &
        demo_pid=$!
        # shellcheck disable=SC2064  # expand now: these are this run's values
        trap "status=\$?; kill -TERM $demo_pid 2>/dev/null; wait $demo_pid 2>/dev/null; rm -rf '$demo_dir'; exit \$status" EXIT
        export SWITCHBOARD_URL="http://127.0.0.1:$sb_port"
        for _ in $(seq 1 600); do
            curl -fsS "$SWITCHBOARD_URL/health" >/dev/null 2>&1 && break
            kill -0 "$demo_pid" 2>/dev/null || { cat "$demo_dir/demo.log" >&2; die "demo.sh exited"; }
            sleep 0.5
        done
        curl -fsS "$SWITCHBOARD_URL/health" >/dev/null || die "Switchboard did not come up"
    fi
    local bundle="$WIDGET/dist/switchboard-widget.min.js"
    node "$BROWSER_TESTS/bench.mjs" --url "$SWITCHBOARD_URL" --runs "$runs" \
        --bundle "$bundle" --gzip-bytes "$(gzip -9 -n -c "$bundle" | wc -c)" \
        --write "$REPO/docs/benchmarks.md" --write "$REPO/README.md"
}

case "${1:-}" in
    setup) cmd_setup ;;
    build) cmd_build ;;
    check) cmd_check ;;
    size) cmd_size ;;
    bench) shift; cmd_bench "$@" ;;
    *) sed -n '2,20p' "${BASH_SOURCE[0]}" >&2; exit 2 ;;
esac
