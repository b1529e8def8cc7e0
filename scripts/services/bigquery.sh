#!/usr/bin/env bash
# A BigQuery emulator (bqemulator, DuckDB-backed) on 127.0.0.1 for Sluice's integration tests.
#
#   scripts/services/bigquery.sh start    install bqemulator into a cached venv if missing, start, wait until ready
#   scripts/services/bigquery.sh stop     stop the emulator started by `start`
#   scripts/services/bigquery.sh status   exit 0 when it answers
#   scripts/services/bigquery.sh env      print `export SLUICE_TEST_BIGQUERY_URL=...`
#
# Tests read SLUICE_TEST_BIGQUERY_URL (the REST root, e.g. http://127.0.0.1:9250),
# SLUICE_TEST_BIGQUERY_GRPC (the Storage Write API's host:port, 127.0.0.1:9260),
# SLUICE_TEST_BIGQUERY_PROJECT (test-proj) and SLUICE_TEST_BIGQUERY_PYTHON (the venv's python:
# bqemulator's own proto decoder, and the bqemulator beside it for tests that start their own);
# they create their own datasets.
#
# A protocol stand-in, not BigQuery's semantics (bqemulator 1.4.0, checked 2026-12): insertAll
# ignores unknown fields, does not enforce REQUIRED, takes nulls in arrays, truncates 1.5 into
# INT64, and answers 500 (not per-row insertErrors) to a value it cannot convert. The sink
# checks rows against the table itself; per-row insertErrors are tested on the memory double.
# Its Storage Write API (gRPC) deadlocks the whole process when a REST request that touches
# DuckDB (a query, insertAll, a table's creation) meets an append being stored, and fails every
# append to a table with a RECORD column: tests that append start an emulator of their own.
#
# Settings: SLUICE_BQ_PORT (9250; the Storage gRPC port is SLUICE_BQ_GRPC_PORT, 9260),
# SLUICE_BQ_PROJECT (test-proj), SLUICE_BQ_VENV (~/.cache/sluice/bqemulator-venv),
# SLUICE_SERVICES_DIR (/tmp/sluice-services: pidfile, log), SLUICE_BQ_LIFETIME (45m: the
# emulator stops by itself after this, so CI never leaves it behind).
set -euo pipefail

PORT="${SLUICE_BQ_PORT:-9250}"
GRPC_PORT="${SLUICE_BQ_GRPC_PORT:-9260}"
PROJECT="${SLUICE_BQ_PROJECT:-test-proj}"
VENV="${SLUICE_BQ_VENV:-$HOME/.cache/sluice/bqemulator-venv}"
DIR="${SLUICE_SERVICES_DIR:-/tmp/sluice-services}"
LIFETIME="${SLUICE_BQ_LIFETIME:-45m}"
PIDFILE="$DIR/bigquery-$PORT.pid"
LOG="$DIR/bigquery-$PORT.log"
URL="http://127.0.0.1:$PORT"
# bqemulator 1.4.0 with the DuckDB it was checked with; the extensions come from PyPI wheels,
# so the emulator never downloads anything at start.
PACKAGES=(bqemulator==1.4.0 duckdb==1.5.5 duckdb-extensions==1.5.5
          duckdb-extension-spatial==1.5.5 duckdb-extension-avro==1.5.5 numpy)

say() { echo "bigquery.sh: $*" >&2; }

ready() {
    python3 - "$URL/bigquery/v2/projects/$PROJECT/datasets" <<'PY' 2>/dev/null
import sys, urllib.request
urllib.request.urlopen(sys.argv[1], timeout=2).read()
PY
}

installed() {
    [[ -x "$VENV/bin/bqemulator" && -f "$VENV/.sluice-extensions" ]]
}

install() {
    installed && return 0
    local t0=$SECONDS
    say "installing ${PACKAGES[*]} into $VENV (pip)"
    mkdir -p "$(dirname "$VENV")"
    [[ -x "$VENV/bin/python" ]] || python3 -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${PACKAGES[@]}"
    # Load the extensions once from the wheels (otherwise DuckDB tries to download them).
    "$VENV/bin/python" -c 'from duckdb_extensions import import_extension as i; i("spatial"); i("avro")'
    touch "$VENV/.sluice-extensions"
    say "installed in $((SECONDS - t0)) s"
}

# shellcheck source=scripts/services/lib.sh
source "$(dirname "$0")/lib.sh"

start() {
    service_start "$URL, project $PROJECT" 60 "$VENV/bin/bqemulator" start \
        --rest-host 127.0.0.1 --rest-port "$PORT" \
        --grpc-host 127.0.0.1 --grpc-port "$GRPC_PORT" \
        --project "$PROJECT" --ephemeral
}

stop() { service_stop; }

case "${1:-}" in
    install) mkdir -p "$DIR" && install ;;
    start) start ;;
    stop) stop ;;
    status) ready ;;
    env)
        echo "export SLUICE_TEST_BIGQUERY_URL=$URL"
        echo "export SLUICE_TEST_BIGQUERY_GRPC=127.0.0.1:$GRPC_PORT"
        echo "export SLUICE_TEST_BIGQUERY_PROJECT=$PROJECT"
        echo "export SLUICE_TEST_BIGQUERY_PYTHON=$VENV/bin/python"
        ;;
    *) echo "usage: $0 install|start|stop|status|env" >&2; exit 2 ;;
esac
