#!/usr/bin/env bash
# Runs every cargo-fuzz target of fuzz/ for SECONDS_PER_TARGET seconds (default 60), one after
# the other, each on one core (in-process, the equivalent of -jobs=1), niced, and prints the
# executions per target. Exits non-zero if a target found a crash (its input is saved under
# fuzz/artifacts/<target>/: copy it to fuzz/seeds/<target>/ with the fix, so that the
# property-based pass in `cargo test` replays it from then on).
#
# Needs a nightly toolchain (`rustup toolchain list`) and cargo-fuzz
# (`cargo install cargo-fuzz --locked`). Environment:
#   FUZZ_TARGETS="heka envelope"  only these targets
#   FUZZ_SANITIZER=address        build with AddressSanitizer (default none: the code under
#                                 test is safe Rust, and without it a run does ~2-3x the
#                                 executions)
#   FUZZ_JOBS=N                   libFuzzer -jobs (worker processes; default in-process)
#   FUZZ_ARGS="..."               more libFuzzer flags
set -euo pipefail

seconds=${1:-60}
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root/fuzz"
export CARGO_INCREMENTAL=0

if ! rustup toolchain list | grep -q '^nightly'; then
    echo "fuzz.sh: no nightly toolchain (rustup toolchain install nightly)" >&2
    exit 2
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: cargo-fuzz is missing (cargo install cargo-fuzz --locked)" >&2
    exit 2
fi

all_targets=$(cargo +nightly fuzz list)
targets=${FUZZ_TARGETS:-$all_targets}
sanitizer=${FUZZ_SANITIZER:-none}
# release code with debug assertions: overflow checks catch arithmetic bugs too
build_flags=(--sanitizer "$sanitizer" --debug-assertions)

echo "fuzz.sh: building ${targets//$'\n'/ } (sanitizer: $sanitizer)"
nice -n 10 cargo +nightly fuzz build "${build_flags[@]}" >/dev/null

logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
total=0
failed=()
printf '%-16s %14s %10s %12s  %s\n' target executions seconds 'exec/s' result
for t in $targets; do
    mkdir -p "corpus/$t" "artifacts/$t"
    log="$logs/$t.log"
    jobs_flags=()
    if [[ -n ${FUZZ_JOBS:-} ]]; then jobs_flags=(-jobs="$FUZZ_JOBS" -workers="$FUZZ_JOBS"); fi
    start=$(date +%s)
    set +e
    # the first corpus folder takes new inputs; the checked-in seeds are read only
    nice -n 10 cargo +nightly fuzz run "${build_flags[@]}" "$t" "corpus/$t" "seeds/$t" -- \
        -max_total_time="$seconds" -max_len=8192 -timeout=20 -rss_limit_mb=2048 \
        -print_final_stats=1 -artifact_prefix="artifacts/$t/" "${jobs_flags[@]}" \
        ${FUZZ_ARGS:-} >"$log" 2>&1
    rc=$?
    set -e
    elapsed=$(($(date +%s) - start))
    [[ -n ${FUZZ_JOBS:-} ]] && cat fuzz-*.log >>"$log" 2>/dev/null && rm -f fuzz-*.log
    runs=$(grep -o 'stat::number_of_executed_units: [0-9]*' "$log" | awk '{s += $2} END {print s + 0}')
    if [[ $runs == 0 ]]; then
        # a crash ends the run before the final stats: take the last status line
        runs=$(grep -o '^#[0-9]*' "$log" | tail -1 | tr -d '#')
        runs=${runs:-0}
    fi
    total=$((total + runs))
    if [[ $rc == 0 ]]; then
        result=ok
    else
        result="CRASH (exit $rc): $(grep -o 'artifacts/[^ ]*' "$log" | tail -1)"
        failed+=("$t")
        tail -40 "$log" >&2
    fi
    printf '%-16s %14s %10s %12s  %s\n' "$t" "$runs" "$elapsed" "$((runs / (elapsed > 0 ? elapsed : 1)))" "$result"
done
printf '%-16s %14s\n' total "$total"
if ((${#failed[@]})); then
    echo "fuzz.sh: crashes in: ${failed[*]}" >&2
    exit 1
fi
