#!/usr/bin/env bash
# A Kafka-compatible broker (tansu, memory storage) on 127.0.0.1 for Sluice's integration tests.
#
#   scripts/services/kafka.sh start    install tansu and the Python client if missing, start, wait
#   scripts/services/kafka.sh stop     stop the broker started by `start`
#   scripts/services/kafka.sh status   exit 0 when it answers
#   scripts/services/kafka.sh client   install the Python client if missing
#   scripts/services/kafka.sh env      print the `export SLUICE_TEST_KAFKA_*=...` lines
#
# The install (`cargo install tansu --locked --features dynostore`, ~16 min on 2 cores) lands in
# ~/.cargo/bin, so a rerun on the same machine skips it. Tests create their own topics.
# The tests read topics back with kafka-python (PyPI, pure Python: its own implementation of the
# protocol, independent of the librdkafka Sluice uses), installed with pip into a cached venv.
# Settings: SLUICE_KAFKA_PORT (19092), SLUICE_SERVICES_DIR (/tmp/sluice-services: pidfile, log),
# SLUICE_KAFKA_LIFETIME (45m: the broker stops by itself after this, so CI never leaves it behind),
# SLUICE_KAFKA_CLIENT_VENV (~/.cache/sluice/kafka-client-venv).
set -euo pipefail

PORT="${SLUICE_KAFKA_PORT:-19092}"
DIR="${SLUICE_SERVICES_DIR:-/tmp/sluice-services}"
LIFETIME="${SLUICE_KAFKA_LIFETIME:-45m}"
PIDFILE="$DIR/kafka-$PORT.pid"
LOG="$DIR/kafka-$PORT.log"
ADDR="127.0.0.1:$PORT"
CLIENT_VENV="${SLUICE_KAFKA_CLIENT_VENV:-$HOME/.cache/sluice/kafka-client-venv}"
CLIENT_VERSION="2.3.0"
export PATH="$HOME/.cargo/bin:$PATH"

say() { echo "kafka.sh: $*" >&2; }

# The port accepts connections (tansu answers the Kafka protocol as soon as it listens).
ready() {
    python3 - "$PORT" <<'PY' 2>/dev/null
import socket, sys
socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=2).close()
PY
}

install() {
    command -v tansu >/dev/null 2>&1 && return 0
    say "installing tansu with cargo (~16 min on 2 cores; cached in ~/.cargo/bin for reruns)"
    cargo install tansu --locked --features dynostore >"$DIR/tansu-install.log" 2>&1 || {
        tail -30 "$DIR/tansu-install.log" >&2
        return 1
    }
    command -v tansu >/dev/null 2>&1 || { say "tansu still not found after installing"; return 1; }
}

client_installed() {
    "$CLIENT_VENV/bin/python" -c 'import kafka' >/dev/null 2>&1
}

# The Python client the tests read topics back with.
install_client() {
    client_installed && return 0
    say "installing kafka-python $CLIENT_VERSION into $CLIENT_VENV (pip)"
    mkdir -p "$(dirname "$CLIENT_VENV")"
    python3 -m venv "$CLIENT_VENV"
    "$CLIENT_VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
        "kafka-python==$CLIENT_VERSION"
    client_installed || { say "kafka-python still does not import after installing"; return 1; }
}

# shellcheck source=scripts/services/lib.sh
source "$(dirname "$0")/lib.sh"

start() {
    service_start "$ADDR" 30 tansu broker \
        --listener-url "tcp://$ADDR" \
        --advertised-listener-url "tcp://$ADDR" \
        --storage-engine memory://tansu/
}

stop() { service_stop; }

case "${1:-}" in
    install) mkdir -p "$DIR" && install_client && install ;;
    start) install_client && start ;;
    stop) stop ;;
    status) ready ;;
    client) install_client ;;
    env)
        echo "export SLUICE_TEST_KAFKA_BROKERS=$ADDR"
        echo "export SLUICE_TEST_KAFKA_PYTHON=$CLIENT_VENV/bin/python"
        ;;
    *) echo "usage: $0 install|start|stop|status|client|env" >&2; exit 2 ;;
esac
