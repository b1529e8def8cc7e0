#!/usr/bin/env bash
# The whole test suite, as CI runs it: starts the services the tests need on loopback (installing
# them with pip/cargo if missing), then checks formatting, lints, tests and docs.
# Every server started here stops when this script exits, and by itself after a time limit.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
export SLUICE_TEST_S3_ENDPOINT="${SLUICE_TEST_S3_ENDPOINT:-http://127.0.0.1:${SLUICE_S3_PORT:-5000}}"
export SLUICE_TEST_BIGQUERY_URL="${SLUICE_TEST_BIGQUERY_URL:-http://127.0.0.1:${SLUICE_BQ_PORT:-9250}}"
export SLUICE_TEST_BIGQUERY_GRPC="${SLUICE_TEST_BIGQUERY_GRPC:-127.0.0.1:${SLUICE_BQ_GRPC_PORT:-9260}}"
export SLUICE_TEST_BIGQUERY_PYTHON="${SLUICE_TEST_BIGQUERY_PYTHON:-${SLUICE_BQ_VENV:-$HOME/.cache/sluice/bqemulator-venv}/bin/python}"
export SLUICE_TEST_BIGQUERY_PROJECT="${SLUICE_TEST_BIGQUERY_PROJECT:-${SLUICE_BQ_PROJECT:-test-proj}}"
export SLUICE_TEST_PUBSUB_ENDPOINT="${SLUICE_TEST_PUBSUB_ENDPOINT:-http://127.0.0.1:${SLUICE_PUBSUB_PORT:-8085}}"
export SLUICE_TEST_PUBSUB_REST="${SLUICE_TEST_PUBSUB_REST:-http://127.0.0.1:${SLUICE_PUBSUB_REST_PORT:-8086}}"
export SLUICE_TEST_KAFKA_BROKERS="${SLUICE_TEST_KAFKA_BROKERS:-127.0.0.1:${SLUICE_KAFKA_PORT:-19092}}"

cleanup() {
    scripts/services/s3.sh stop || true
    scripts/services/bigquery.sh stop || true
    scripts/services/kafka.sh stop || true
    scripts/services/pubsub.sh stop || true
}
trap cleanup EXIT

step() { printf '\n==> %s\n' "$*"; }

# Each service is (re)started here, so a server left running by an earlier run cannot stop
# itself (its time limit) in the middle of this one.
for service in s3 bigquery kafka pubsub; do
    scripts/services/$service.sh stop >/dev/null 2>&1 || true
done

# Everything is installed before any server starts: a server stops by itself after its time
# limit, which must not run out while another service is still being built (tansu's first
# build takes minutes).
step "services: installing what is missing (cached for reruns)"
for service in s3 bigquery kafka pubsub; do
    scripts/services/$service.sh install
done

step "browser for the status page test: chromium (Debian's)"
if ! command -v chromium >/dev/null 2>&1; then
    as_root=""
    [[ "$(id -u)" == 0 ]] || as_root=sudo
    $as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $as_root apt-get install -y -qq chromium >/dev/null
fi
chromium --version

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings

# The tests are built before the servers start, so their time limits are spent on testing.
step "cargo test --no-run"
cargo test --workspace --no-run

step "services: S3-compatible server at $SLUICE_TEST_S3_ENDPOINT"
scripts/services/s3.sh start

step "services: BigQuery emulator at $SLUICE_TEST_BIGQUERY_URL"
scripts/services/bigquery.sh start

step "services: Kafka-compatible broker (tansu) at $SLUICE_TEST_KAFKA_BROKERS"
scripts/services/kafka.sh start

step "services: Pub/Sub emulator at $SLUICE_TEST_PUBSUB_ENDPOINT"
scripts/services/pubsub.sh start

step "cargo test"
cargo test --workspace

step "cargo doc"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps

step "all checks passed"
