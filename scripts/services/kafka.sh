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

running_pid() {
    [[ -f "$PIDFILE" ]] || return 1
    local pid
    pid="$(cat "$PIDFILE")"
    [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

start() {
    mkdir -p "$DIR"
    if running_pid >/dev/null && ready; then
        say "already running at $ADDR (pid $(cat "$PIDFILE"))"
        return 0
    fi
    if ready; then
        say "port $PORT already answers; using it (not started by this script)"
        return 0
    fi
    install
    # `timeout` makes the broker stop by itself; setsid detaches it from this shell's job control.
    setsid timeout "$LIFETIME" tansu broker \
        --listener-url "tcp://$ADDR" \
        --advertised-listener-url "tcp://$ADDR" \
        --storage-engine memory://tansu/ >"$LOG" 2>&1 < /dev/null &
    echo $! >"$PIDFILE"
    for _ in $(seq 1 150); do
        if ready; then
            say "ready at $ADDR (pid $(cat "$PIDFILE"), stops by itself after $LIFETIME)"
            return 0
        fi
        if ! running_pid >/dev/null; then
            say "tansu exited; log:"
            cat "$LOG" >&2
            rm -f "$PIDFILE"
            return 1
        fi
        sleep 0.2
    done
    say "not ready after 30 s; log in $LOG"
    stop
    return 1
}

stop() {
    local pid
    if pid="$(running_pid)"; then
        # TERM to `timeout` is passed on to tansu.
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 1 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
        say "stopped (pid $pid)"
    else
        say "not running"
    fi
    rm -f "$PIDFILE"
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) ready ;;
    env) echo "export SLUICE_TEST_KAFKA_BROKERS=$ADDR" ;;
    *) echo "usage: $0 start|stop|status|env" >&2; exit 2 ;;
esac
