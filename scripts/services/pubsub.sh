#!/usr/bin/env bash
# A Pub/Sub emulator (cloudbox, PyPI) on 127.0.0.1 for Sluice's integration tests.
#
#   scripts/services/pubsub.sh start    install cloudbox into a cached venv if missing, start, wait
#   scripts/services/pubsub.sh stop     stop the emulator started by `start`
#   scripts/services/pubsub.sh status   exit 0 when it answers
#   scripts/services/pubsub.sh env      print the `export SLUICE_TEST_PUBSUB_*=...` lines
#
# cloudbox serves Pub/Sub over gRPC (8085: what Sluice's client speaks) and REST (8086: what the
# tests use to create subscriptions and to read back as an independent client). Its wheel claims
# Python >= 3.14; it runs on 3.11 once each of its modules starts with
# `from __future__ import annotations`, which `install` adds (see shared BACKENDS.md).
#
# cloudbox also serves other GCP stand-ins on their own loopback ports (GCS 4443, Firestore
# 8080, BigQuery 9050, admin 8888, ...); only Pub/Sub is used here.
#
# Settings: SLUICE_PUBSUB_PORT (8085), SLUICE_PUBSUB_REST_PORT (8086), SLUICE_PUBSUB_VENV (~/.cache/sluice/cloudbox-venv), SLUICE_SERVICES_DIR
# (/tmp/sluice-services: pidfile, log), SLUICE_PUBSUB_LIFETIME (45m: the emulator stops by itself
# after this, so CI never leaves it behind).
set -euo pipefail

VENV="${SLUICE_PUBSUB_VENV:-$HOME/.cache/sluice/cloudbox-venv}"
DIR="${SLUICE_SERVICES_DIR:-/tmp/sluice-services}"
LIFETIME="${SLUICE_PUBSUB_LIFETIME:-45m}"
VERSION="0.2.3"
GRPC_PORT="${SLUICE_PUBSUB_PORT:-8085}"
REST_PORT="${SLUICE_PUBSUB_REST_PORT:-8086}"
PIDFILE="$DIR/pubsub-$GRPC_PORT.pid"
LOG="$DIR/pubsub-$GRPC_PORT.log"
GRPC_URL="http://127.0.0.1:$GRPC_PORT"
REST_URL="http://127.0.0.1:$REST_PORT"

say() { echo "pubsub.sh: $*" >&2; }

ready() {
    python3 - "$REST_URL/v1/projects/sluice-test/topics" <<'PY' 2>/dev/null
import sys, urllib.request
urllib.request.urlopen(sys.argv[1], timeout=2).read()
PY
}

installed() {
    [[ -x "$VENV/bin/cloudbox" ]] && "$VENV/bin/python" -c 'import cloudbox' >/dev/null 2>&1
}

install() {
    installed && return 0
    say "installing cloudbox $VERSION into $VENV (pip)"
    mkdir -p "$(dirname "$VENV")"
    python3 -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
        --ignore-requires-python "cloudbox==$VERSION"
    # The documented patch: postponed annotations make its 3.14-only annotation syntax load on
    # older Pythons.
    local site
    site="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
    grep -rL 'from __future__ import annotations' --include='*.py' "$site/cloudbox" \
        | xargs -r sed -i '1i from __future__ import annotations'
    installed || { say "cloudbox still does not import after installing"; return 1; }
}

# shellcheck source=scripts/services/lib.sh
source "$(dirname "$0")/lib.sh"

start() {
    service_start "$GRPC_URL, REST $REST_URL" 30 env CLOUDBOX_HOST=127.0.0.1 \
        CLOUDBOX_PUBSUB_PORT="$GRPC_PORT" CLOUDBOX_PUBSUB_REST_PORT="$REST_PORT" \
        "$VENV/bin/cloudbox"
}

stop() { service_stop; }

case "${1:-}" in
    install) mkdir -p "$DIR" && install ;;
    start) start ;;
    stop) stop ;;
    status) ready ;;
    env)
        echo "export SLUICE_TEST_PUBSUB_ENDPOINT=$GRPC_URL"
        echo "export SLUICE_TEST_PUBSUB_REST=$REST_URL"
        ;;
    *) echo "usage: $0 install|start|stop|status|env" >&2; exit 2 ;;
esac
