#!/usr/bin/env bash
# A Kafka-compatible broker (tansu, memory storage) on 127.0.0.1 for Sluice's integration tests.
#
#   scripts/services/kafka.sh start    install tansu with cargo if missing, start, wait until ready
#   scripts/services/kafka.sh stop     stop the broker started by `start`
#   scripts/services/kafka.sh status   exit 0 when it answers
#   scripts/services/kafka.sh env      print `export SLUICE_TEST_KAFKA_BROKERS=...`
#
# The install (`cargo install tansu --locked --features dynostore`, ~16 min on 2 cores) lands in
# ~/.cargo/bin, so a rerun on the same machine skips it. Tests create their own topics.
# Settings: SLUICE_KAFKA_PORT (19092), SLUICE_SERVICES_DIR (/tmp/sluice-services: pidfile, log),
# SLUICE_KAFKA_LIFETIME (45m: the broker stops by itself after this, so CI never leaves it behind).
set -euo pipefail

PORT="${SLUICE_KAFKA_PORT:-19092}"
DIR="${SLUICE_SERVICES_DIR:-/tmp/sluice-services}"
LIFETIME="${SLUICE_KAFKA_LIFETIME:-45m}"
PIDFILE="$DIR/kafka-$PORT.pid"
LOG="$DIR/kafka-$PORT.log"
ADDR="127.0.0.1:$PORT"
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
    start) start ;;
    stop) stop ;;
    status) ready ;;
    env) echo "export SLUICE_TEST_KAFKA_BROKERS=$ADDR" ;;
    *) echo "usage: $0 start|stop|status|env" >&2; exit 2 ;;
esac
