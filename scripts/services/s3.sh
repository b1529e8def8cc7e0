#!/usr/bin/env bash
# An S3-compatible server (moto) on 127.0.0.1 for Sluice's integration tests.
#
#   scripts/services/s3.sh start    install moto[server] + boto3 if missing, start, wait until ready
#   scripts/services/s3.sh stop     stop the server started by `start`
#   scripts/services/s3.sh status   exit 0 when it answers
#   scripts/services/s3.sh env      print `export SLUICE_TEST_S3_ENDPOINT=...`
#
# Settings: SLUICE_S3_PORT (5000), SLUICE_SERVICES_DIR (/tmp/sluice-services: pidfile, log),
# SLUICE_S3_LIFETIME (45m: the server stops by itself after this, so CI never leaves it behind).
set -euo pipefail

PORT="${SLUICE_S3_PORT:-5000}"
DIR="${SLUICE_SERVICES_DIR:-/tmp/sluice-services}"
LIFETIME="${SLUICE_S3_LIFETIME:-45m}"
PIDFILE="$DIR/s3-$PORT.pid"
LOG="$DIR/s3-$PORT.log"
URL="http://127.0.0.1:$PORT"
# `pip install --user` puts scripts here.
export PATH="$HOME/.local/bin:$PATH"

say() { echo "s3.sh: $*" >&2; }

ready() {
    if command -v curl >/dev/null 2>&1; then
        curl -sf -o /dev/null "$URL/moto-api/"
    else
        python3 - "$URL/moto-api/" <<'PY' 2>/dev/null
import sys, urllib.request
urllib.request.urlopen(sys.argv[1], timeout=2).read()
PY
    fi
}

installed() {
    command -v moto_server >/dev/null 2>&1 && python3 -c 'import boto3, moto' >/dev/null 2>&1
}

install() {
    installed && return 0
    say "installing moto[server] and boto3 (pip, ~40 s)"
    local pkgs=('moto[server]' boto3)
    if ! python3 -m pip install --quiet --user "${pkgs[@]}" 2>"$DIR/pip.err"; then
        # Debian's system Python refuses user installs without this flag (PEP 668).
        if grep -q externally-managed "$DIR/pip.err"; then
            python3 -m pip install --quiet --user --break-system-packages "${pkgs[@]}"
        elif python3 -m pip install --quiet "${pkgs[@]}"; then
            : # a virtualenv or pyenv Python, where --user is not allowed
        else
            cat "$DIR/pip.err" >&2
            return 1
        fi
    fi
    installed || { say "moto_server still not found after installing"; return 1; }
}

# shellcheck source=scripts/services/lib.sh
source "$(dirname "$0")/lib.sh"

start() {
    service_start "$URL" 30 moto_server -H 127.0.0.1 -p "$PORT"
}

stop() { service_stop; }

case "${1:-}" in
    install) mkdir -p "$DIR" && install ;;
    start) start ;;
    stop) stop ;;
    status) ready ;;
    env) echo "export SLUICE_TEST_S3_ENDPOINT=$URL" ;;
    *) echo "usage: $0 install|start|stop|status|env" >&2; exit 2 ;;
esac
