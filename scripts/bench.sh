#!/usr/bin/env bash
# End-to-end benchmark of the decoder job (issue 8), against a hand-written loop doing equal work.
#
#   scripts/bench.sh                        # 200,000 records, 3 runs per configuration
#   RECORDS=2000 RUNS=1 scripts/bench.sh    # a quick pass
#
# What it does:
#   1. builds the release binaries once: `sluice` and `sluice-baseline` (pipelines/src/bin/baseline.rs);
#   2. generates the workload with `sluice generate --workload telemetry` (issue 8's workload:
#      the 9 bundled schemas, telemetry main/event/crash/new-profile in their 6-part URI form,
#      documents of 3.6 KB mean (inflated), 70% gzipped, ERROR_RATE broken records of every
#      kind), deterministic by SEED, cached under BENCH_DIR (regenerated when `sluice` is
#      rebuilt);
#   3. runs, RUNS times each, interleaved: the baseline with 1..N threads and
#      `sluice run examples/configs/decoder-local.toml` (file -> file) with 1..N workers, each under
#      `/usr/bin/time -v` (peak RSS from /proc/<pid>/status VmHWM when it is missing);
#   4. checks equal work on the first round: every configuration's outputs (decoded records and dead
#      letters, gunzipped, as a multiset of lines per partition folder, `stack_trace` removed) must
#      equal those of the baseline with 1 thread (`sluice-baseline compare`); exits 1 if they differ;
#   5. prints per configuration: median (min-max) wall time, msgs/s, MB/s of input, peak RSS, CPU
#      time (user + system: on a shared machine a process with more threads gets more of it), and
#      the speed ratio to the baseline with the same thread count (baseline time / Sluice time:
#      > 1 means Sluice is faster).
#
# Options (environment variables):
#   RECORDS     records generated (default 200000)
#   RUNS        runs per configuration (default 3)
#   WORKERS     thread/worker counts to run (default "1 2")
#   KINDS       what to run (default "baseline sluice"; `KINDS=sluice` for memory runs on long
#               inputs: the first configuration is then the reference, nothing is compared)
#   SEED        generator seed (default 1)
#   ERROR_RATE  share of broken records (default 0.05)
#   WORKLOAD    generator workload (default telemetry; `small` is the older 4-doctype mix)
#   BENCH_DIR   work directory for input and outputs (default target/bench)
#   CARGO_FLAGS extra flags for `cargo build` (e.g. --offline)
#
# Not part of `cargo test`: speed is measured here, never asserted in tests.
set -euo pipefail
cd "$(dirname "$0")/.."

RECORDS="${RECORDS:-200000}"
RUNS="${RUNS:-3}"
WORKERS="${WORKERS:-1 2}"
KINDS="${KINDS:-baseline sluice}"
SEED="${SEED:-1}"
ERROR_RATE="${ERROR_RATE:-0.05}"
WORKLOAD="${WORKLOAD:-telemetry}"
BENCH_DIR="${BENCH_DIR:-target/bench}"
CONFIG=examples/configs/decoder-local.toml
SLUICE=target/release/sluice
BASELINE=target/release/sluice-baseline

step() { printf '\n==> %s\n' "$*" >&2; }
die() { printf 'bench: %s\n' "$*" >&2; exit 1; }

step "build (release)"
# shellcheck disable=SC2086
cargo build --release -p sluice-pipelines --bins ${CARGO_FLAGS:-}

mkdir -p "$BENCH_DIR"
BENCH_DIR="$(cd "$BENCH_DIR" && pwd)"
input="$BENCH_DIR/input-$WORKLOAD-$RECORDS-$SEED-$ERROR_RATE.ndjson"
if [[ ! -s "$input" || "$SLUICE" -nt "$input" ]]; then
    step "generate $RECORDS records ($WORKLOAD workload, seed $SEED, error rate $ERROR_RATE)"
    "$SLUICE" generate --count "$RECORDS" --seed "$SEED" --error-rate "$ERROR_RATE" \
        --workload "$WORKLOAD" --output "$input.tmp"
    mv "$input.tmp" "$input"
fi
input_bytes=$(stat -c %s "$input")
printf 'input: %s (%d records, %s MB)\n' "$input" "$RECORDS" "$(awk -v b="$input_bytes" 'BEGIN {printf "%.1f", b / 1e6}')" >&2

# run_measured LOG CMD...: runs CMD, writes "<wall s> <peak RSS kB> <CPU s>" to LOG.result
# (CPU = user + system time, "-" without /usr/bin/time).
run_measured() {
    local log="$1"
    shift
    local start end rss cpu=-
    start=$(date +%s%N)
    if [[ -x /usr/bin/time ]]; then
        /usr/bin/time -v -o "$log.time" "$@" >"$log" 2>&1 || {
            cat "$log" >&2
            die "failed: $*"
        }
        end=$(date +%s%N)
        rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$log.time")
        cpu=$(awk -F': ' '/User time/ {u = $2} /System time/ {s = $2} END {printf "%.2f", u + s}' \
            "$log.time")
    else
        "$@" >"$log" 2>&1 &
        local pid=$! hwm
        rss=0
        while kill -0 "$pid" 2>/dev/null; do
            hwm=$(awk '/^VmHWM:/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)
            [[ -n "$hwm" && "$hwm" -gt "$rss" ]] && rss=$hwm
            sleep 0.05
        done
        wait "$pid" || {
            cat "$log" >&2
            die "failed: $*"
        }
        end=$(date +%s%N)
    fi
    echo "$(awk -v a="$start" -v b="$end" 'BEGIN {printf "%.3f", (b - a) / 1e9}') $rss $cpu" \
        >"$log.result"
}

# run_config NAME N OUT: one run of a configuration into the directory OUT.
run_config() {
    local kind="$1" n="$2" out="$3"
    rm -rf "$out" "$out.state"
    mkdir -p "$out"
    case "$kind" in
        baseline) run_measured "$out.log" "$BASELINE" decode --input "$input" --out "$out" \
            --threads "$n" --schemas schemas/json ;;
        sluice) run_measured "$out.log" "$SLUICE" run "$CONFIG" --no-progress --workers "$n" \
            --set "source.path=$input" --set "sink.dir=$out" --set "dead_letter.dir=$out" \
            --set "data_dir=$out.state" ;;
    esac
}

configs=()
for n in $WORKERS; do
    for k in $KINDS; do configs+=("$k:$n"); done
done
reference="$BENCH_DIR/out-reference"
rm -rf "$reference" # left by an interrupted run
declare -A results cpus

step "load average before: $(cut -d' ' -f1-3 /proc/loadavg) ($(nproc) cores)"
for ((round = 1; round <= RUNS; round++)); do
    for c in "${configs[@]}"; do
        kind=${c%%:*} n=${c##*:}
        out="$BENCH_DIR/out-$kind-$n"
        run_config "$kind" "$n" "$out"
        read -r wall rss cpu <"$out.log.result"
        printf 'round %d: %-8s %d: %6.2f s wall, %s s CPU, %4d MB peak RSS\n' "$round" "$kind" \
            "$n" "$wall" "$cpu" "$((rss / 1024))" >&2
        results[$c]+="$wall $rss "
        cpus[$c]+="$cpu "
        if ((round == 1)); then
            if [[ ! -d "$reference" ]]; then
                mv "$out" "$reference"
                out=$reference
            else
                printf '         equal work (%s %d vs the reference): ' "$kind" "$n" >&2
                "$BASELINE" compare "$reference" "$out" >&2 ||
                    die "$kind with $n worker(s) did not do the same work as the baseline (above)"
            fi
        fi
        [[ "$out" != "$reference" ]] && rm -rf "$out"
    done
done
rm -rf "$reference"
step "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"

# stats "v1 v2 ...": median min max
stats() { tr ' ' '\n' <<<"$1" | grep . | sort -g | awk '{v[NR] = $1} END {
    m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; print m, v[1], v[NR] }'; }
column_of() { awk -v k="$2" '{for (i = k; i <= NF; i += 2) printf "%s ", $i}' <<<"$1"; }

printf '\n%d records, %s MB of input, %d run(s) each, load average %s; median (min-max)\n' \
    "$RECORDS" "$(awk -v b="$input_bytes" 'BEGIN {printf "%.1f", b / 1e6}')" "$RUNS" \
    "$(cut -d' ' -f1-3 /proc/loadavg)"
printf '| %-12s | %-22s | %-10s | %-9s | %-22s | %-22s | %-22s |\n' configuration 'wall s' \
    'msgs/s' 'MB/s' 'peak RSS MB' 'CPU s (user+sys)' 'speed vs baseline'
printf '|%s|%s|%s|%s|%s|%s|%s|\n' -------------- ------------------------ ------------ ----------- \
    ------------------------ ------------------------ ------------------------
declare -A wall_m wall_lo wall_hi
for c in "${configs[@]}"; do
    read -r wall_m[$c] wall_lo[$c] wall_hi[$c] < <(stats "$(column_of "${results[$c]}" 1)")
    read -r rss_m rss_lo rss_hi < <(stats "$(column_of "${results[$c]}" 2)")
    cpu="-"
    if [[ ${cpus[$c]} != *-* ]]; then
        cpu=$(stats "${cpus[$c]}" | awk '{printf "%.1f (%.1f-%.1f)", $1, $2, $3}')
    fi
    kind=${c%%:*} n=${c##*:}
    ratio="-"
    if [[ $kind == sluice && -n ${wall_m[baseline:$n]:-} ]]; then
        # median ratio, and its range from the extremes of both
        ratio=$(awk -v b="${wall_m[baseline:$n]}" -v blo="${wall_lo[baseline:$n]}" \
            -v bhi="${wall_hi[baseline:$n]}" -v s="${wall_m[$c]}" -v lo="${wall_lo[$c]}" \
            -v hi="${wall_hi[$c]}" 'BEGIN {printf "%.2f (%.2f-%.2f)", b / s, blo / hi, bhi / lo}')
    fi
    printf '| %-12s | %-22s | %-10s | %-9s | %-22s | %-22s | %-22s |\n' "$kind $n" \
        "$(printf '%.2f (%.2f-%.2f)' "${wall_m[$c]}" "${wall_lo[$c]}" "${wall_hi[$c]}")" \
        "$(awk -v r="$RECORDS" -v t="${wall_m[$c]}" 'BEGIN {printf "%.1f k", r / t / 1000}')" \
        "$(awk -v b="$input_bytes" -v t="${wall_m[$c]}" 'BEGIN {printf "%.1f", b / 1e6 / t}')" \
        "$(awk -v m="$rss_m" -v lo="$rss_lo" -v hi="$rss_hi" \
            'BEGIN {printf "%.0f (%.0f-%.0f)", m / 1024, lo / 1024, hi / 1024}')" "$cpu" "$ratio"
done
if ((${#configs[@]} > 1)); then
    echo "equal work checked: every configuration's decoded records and dead letters equal the reference's (${configs[0]})"
fi
