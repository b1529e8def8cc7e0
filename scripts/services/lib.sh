# Start/stop shared by the service scripts (sourced, not run). The script sourcing it sets
# DIR, PIDFILE, LOG and LIFETIME and defines `say` (its messages), `ready` (exit 0 when the
# service answers) and `install` (a no-op when installed), then calls `service_start` and
# `service_stop`.

# The pid of the server started by `service_start`, when it still runs.
running_pid() {
    [[ -f "$PIDFILE" ]] || return 1
    local pid
    pid="$(cat "$PIDFILE")"
    [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

# service_start WHERE WAIT_SECONDS COMMAND...: installs if needed, starts COMMAND detached,
# stopping by itself after $LIFETIME (so CI never leaves it behind), and waits until `ready`.
# A service that already answers at WHERE is used as it is.
service_start() {
    local where="$1" wait="$2"
    shift 2
    mkdir -p "$DIR"
    if running_pid >/dev/null && ready; then
        say "already running at $where (pid $(cat "$PIDFILE"))"
        return 0
    fi
    if ready; then
        say "$where already answers; using it (not started by this script)"
        return 0
    fi
    install
    # `timeout` makes the server stop by itself; setsid detaches it from this shell's job control.
    setsid timeout "$LIFETIME" "$@" >"$LOG" 2>&1 < /dev/null &
    echo $! >"$PIDFILE"
    local _
    for _ in $(seq 1 $((wait * 5))); do
        if ready; then
            say "ready at $where (pid $(cat "$PIDFILE"), stops by itself after $LIFETIME)"
            return 0
        fi
        if ! running_pid >/dev/null; then
            say "the server exited; log:"
            cat "$LOG" >&2
            rm -f "$PIDFILE"
            return 1
        fi
        sleep 0.2
    done
    say "not ready after $wait s; log in $LOG"
    service_stop
    return 1
}

# Stops the server `service_start` started (TERM to `timeout` is passed on to it).
service_stop() {
    local pid
    if pid="$(running_pid)"; then
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 1 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
        # `setsid` made the server's `timeout` a process group leader: a server that ignored
        # TERM (a hung emulator) would outlive `timeout` and keep its port, so the group goes too
        kill -9 -- "-$pid" 2>/dev/null || true
        say "stopped (pid $pid)"
    else
        say "not running"
    fi
    rm -f "$PIDFILE"
}
