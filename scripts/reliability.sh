#!/usr/bin/env bash
# The reliability suite (issue #9 item 8), not part of `scripts/test.sh`: builds the release
# binary, starts a private S3-compatible server (moto, its own port, stopped on exit) and runs
# scripts/reliability.py:
#   crash  file -> S3 decoder run (100k records) killed with SIGKILL at 12 random points and
#          restarted with the same state directory; checked by an independent reader (boto3):
#          missing = 0, duplicates printed and bounded, every object whole
#   fault  the S3 endpoint goes away mid-run: the job stops without acknowledging what is not
#          durable; after a restart the output is complete
#   bad    hostile inputs (1 GB gzip bombs, 100k-deep JSON, 50 MB payload, 200 MB line,
#          invalid UTF-8 and base64, 100k attributes, binary garbage, truncated .gz, garbage
#          Heka), each ending as dead letters with peak RSS under 200 MB
#   soak   opt-in (RELIABILITY_SOAK=1): 30 minutes on stdin, RSS flat within 10 %
#
#   scripts/reliability.sh                        # crash, fault, bad (~10 min on 2 idle cores)
#   RELIABILITY_QUICK=1 scripts/reliability.sh    # small sizes (~2 min), for CI
#   RELIABILITY_SOAK=1 scripts/reliability.sh     # also the 30-minute soak
#   RELIABILITY_PARTS=bad scripts/reliability.sh  # some parts only
# Settings: SLUICE_BIN (skip the build), RELIABILITY_S3_PORT (5093), RELIABILITY_SEED,
# RELIABILITY_DIR (/tmp/sluice-reliability), RELIABILITY_SOAK_MINUTES (30).
set -euo pipefail
cd "$(dirname "$0")/.."

PORT="${RELIABILITY_S3_PORT:-5093}"
export RELIABILITY_S3="http://127.0.0.1:$PORT"
# The suite's own server: stopping or restarting it never touches the tests' (port 5000).
export SLUICE_S3_PORT="$PORT"
export SLUICE_SERVICES_DIR="${RELIABILITY_DIR:-/tmp/sluice-reliability}/services"
export SLUICE_S3_LIFETIME="${RELIABILITY_S3_LIFETIME:-90m}"

if [[ -z "${SLUICE_BIN:-}" ]]; then
    echo "==> cargo build --release -p sluice-pipelines --bin sluice"
    cargo build --release -p sluice-pipelines --bin sluice
    export SLUICE_BIN="$PWD/target/release/sluice"
fi

cleanup() { scripts/services/s3.sh stop || true; }
trap cleanup EXIT
scripts/services/s3.sh start

python3 scripts/reliability.py
