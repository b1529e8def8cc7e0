#!/usr/bin/env bash
# End-to-end benchmark of the decoder job (issue 8), against a hand-written loop doing equal work,
# and against the same job in Python on Bytewax and Beam (KINDS="baseline sluice bytewax beam").
#
#   scripts/bench.sh                        # 200,000 records, 3 runs per configuration
#   RECORDS=2000 RUNS=1 scripts/bench.sh    # a quick pass
#
# What it does:
#   1. builds the release binaries once: `sluice` and `sluice-baseline` (pipelines/src/bin/baseline.rs)
#      (NO_BUILD=1 skips it: then SLUICE_BIN and BASELINE_BIN name prebuilt binaries); with a
#      Python kind in KINDS, creates a venv in BENCH_DIR/pyenv from scripts/bench_python/
#      requirements.txt (PyPI; kept while that file is unchanged);
#   2. generates the workload with `sluice generate --workload telemetry` (issue 8's workload:
#      the 9 bundled schemas, telemetry main/event/crash/new-profile in their 6-part URI form,
#      documents of 3.6 KB mean (inflated), 70% gzipped, ERROR_RATE broken records of every
#      kind), deterministic by SEED, cached under BENCH_DIR (regenerated when `sluice` is
#      rebuilt);
#   3. runs, RUNS times each, interleaved: the baseline with 1..N threads and
#      `sluice run examples/configs/decoder-local.toml` (file -> file) with 1..N workers, and with
#      the Python kinds the same job in Python (scripts/bench_python/: decoder.py's steps with
#      jsonschema-rs validators) as a Bytewax 0.21 dataflow with N processes of one worker
#      (`python -m bytewax.testing ... -pN -w1`; `bytewax.run ... -w1` for one) and as a Beam
#      pipeline on the DirectRunner's FnApiRunner with direct_num_workers=N, multi_processing;
#      each under `/usr/bin/time -v` (peak RSS from /proc/<pid>/status VmHWM when it is missing);
#   4. checks equal work on the first round: every configuration's outputs (decoded records and dead
#      letters, gunzipped, as a multiset of lines per partition folder, `stack_trace` removed) must
#      equal those of the first configuration (the baseline with 1 thread; `sluice-baseline
#      compare`); a Python run is checked with scripts/bench_python/compare.py instead (the same
#      records per folder, decoded documents equal as parsed json, dead letters equal but for
#      error wording and input position; its header says exactly what); exits 1 if they differ;
#   5. prints per configuration: median (min-max) wall time, msgs/s, MB/s of input, peak RSS, CPU
#      time (user + system, children included: on a shared machine a process with more threads
#      gets more of it), and the speed ratio to the baseline with the same thread count (baseline
#      time / Sluice time: > 1 means Sluice is faster); then, per worker count N with Python
#      kinds, "sluice N vs bytewax N: X.XXx" (Python time / Sluice time); with RUNS > 1, the
#      same ratios and the 1 -> N scaling paired by round (each round's runs against each
#      other, then their median).
#      Peak RSS of the Rust kinds is the process's own peak; of the Python kinds (several
#      processes) the peak of the RSS summed over the whole process tree, sampled every 0.2 s
#      (and at least the largest process's peak); each round line also gives that largest one.
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
#   NO_BUILD    1: no `cargo build`; use SLUICE_BIN and BASELINE_BIN as they are
#   SLUICE_BIN, BASELINE_BIN  the binaries (default target/release/sluice, -baseline)
#   PYTHON      the interpreter the venv is made with (default python3)
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
SLUICE="${SLUICE_BIN:-target/release/sluice}"
BASELINE="${BASELINE_BIN:-target/release/sluice-baseline}"
PYDIR=scripts/bench_python

step() { printf '\n==> %s\n' "$*" >&2; }
die() { printf 'bench: %s\n' "$*" >&2; exit 1; }

if [[ "${NO_BUILD:-}" == 1 ]]; then
    for b in "$SLUICE" "$BASELINE"; do [[ -x "$b" ]] || die "NO_BUILD=1 but \`$b\` is not an executable"; done
else
    step "build (release)"
    # shellcheck disable=SC2086
    cargo build --release -p sluice-pipelines --bins ${CARGO_FLAGS:-}
fi

python_kind() { [[ "$1" == bytewax || "$1" == beam ]]; }

mkdir -p "$BENCH_DIR"
BENCH_DIR="$(cd "$BENCH_DIR" && pwd)"
pyenv="$BENCH_DIR/pyenv"
for k in $KINDS; do
    python_kind "$k" || continue
    # the venv is kept while requirements.txt is unchanged
    if ! cmp -s "$PYDIR/requirements.txt" "$pyenv/requirements.txt"; then
        step "python venv $pyenv (pip install -r $PYDIR/requirements.txt)"
        rm -rf "$pyenv"
        "${PYTHON:-python3}" -m venv "$pyenv"
        "$pyenv/bin/pip" install --quiet -r "$PYDIR/requirements.txt"
        cp "$PYDIR/requirements.txt" "$pyenv/requirements.txt"
    fi
    break
done
input="$BENCH_DIR/input-$WORKLOAD-$RECORDS-$SEED-$ERROR_RATE.ndjson"
if [[ ! -s "$input" || "$SLUICE" -nt "$input" ]]; then
    step "generate $RECORDS records ($WORKLOAD workload, seed $SEED, error rate $ERROR_RATE)"
    "$SLUICE" generate --count "$RECORDS" --seed "$SEED" --error-rate "$ERROR_RATE" \
        --workload "$WORKLOAD" --output "$input.tmp"
    mv "$input.tmp" "$input"
fi
input_bytes=$(stat -c %s "$input")
printf 'input: %s (%d records, %s MB)\n' "$input" "$RECORDS" "$(awk -v b="$input_bytes" 'BEGIN {printf "%.1f", b / 1e6}')" >&2

# tree_rss PID: the RSS (kB) summed over PID and all its descendants, and their number.
tree_rss() {
    ps -e -o pid=,ppid=,rss= | awk -v root="$1" '
        { parent[$1] = $2; rss[$1] = $3 }
        END {
            sum = 0; n = 0
            for (p in parent) {
                for (q = p; q != "" && q != 0 && q != 1; q = parent[q]) {
                    if (q == root) { sum += rss[p]; n++; break }
                }
            }
            print sum, n
        }'
}

# sample_tree PID OUT: until PID ends, writes to OUT the peak of tree_rss and of the process
# count, every 0.2 s.
sample_tree() {
    local pid="$1" out="$2" peak=0 procs=0 sum n
    while kill -0 "$pid" 2>/dev/null; do
        read -r sum n < <(tree_rss "$pid")
        ((sum > peak)) && peak=$sum
        ((n > procs)) && procs=$n
        echo "$peak $procs" >"$out"
        sleep 0.2
    done
}

# run_measured LOG CMD...: runs CMD, writes "<wall s> <peak RSS kB> <CPU s> <largest process
# peak RSS kB> <processes>" to LOG.result (CPU = user + system time, "-" without /usr/bin/time).
# With TREE_RSS=1 the peak RSS is that of the process tree (see the header).
run_measured() {
    local log="$1"
    shift
    local start end rss cpu=- sampler="" tree=0 procs=1
    start=$(date +%s%N)
    if [[ -x /usr/bin/time ]]; then
        /usr/bin/time -v -o "$log.time" "$@" >"$log" 2>&1 &
        local timed=$!
        if [[ "${TREE_RSS:-}" == 1 ]]; then
            echo "0 1" >"$log.tree"
            sample_tree "$timed" "$log.tree" &
            sampler=$!
        fi
        wait "$timed" || {
            cat "$log" >&2
            die "failed: $*"
        }
        end=$(date +%s%N)
        if [[ -n "$sampler" ]]; then
            wait "$sampler"
            read -r tree procs <"$log.tree"
        fi
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
    local largest=$rss
    ((tree > rss)) && rss=$tree
    echo "$(awk -v a="$start" -v b="$end" 'BEGIN {printf "%.3f", (b - a) / 1e9}') $rss $cpu $largest $procs" \
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
        # N processes of one worker each (bytewax.testing spawns them; one runs on its own)
        bytewax)
            local entry=(-m bytewax.run)
            ((n > 1)) && entry=(-m bytewax.testing -p "$n")
            TREE_RSS=1 run_measured "$out.log" env PYTHONPATH="$PYDIR" "$pyenv/bin/python" \
                "${entry[@]}" "bytewax_job:build_flow('$input', '$out', '$PWD/schemas/json')" -w 1
            ;;
        beam) TREE_RSS=1 run_measured "$out.log" "$pyenv/bin/python" "$PYDIR/beam_job.py" \
            --input "$input" --out "$out" --schemas schemas/json --workers "$n" ;;
        *) die "unknown kind \`$kind\` (baseline, sluice, bytewax, beam)" ;;
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
        read -r wall rss cpu largest procs <"$out.log.result"
        tree_note=""
        if python_kind "$kind"; then
            tree_note=" (summed over $procs processes; largest $((largest / 1024)) MB)"
        fi
        printf 'round %d: %-8s %d: %6.2f s wall, %s s CPU, %4d MB peak RSS%s\n' "$round" "$kind" \
            "$n" "$wall" "$cpu" "$((rss / 1024))" "$tree_note" >&2
        results[$c]+="$wall $rss "
        cpus[$c]+="$cpu "
        if ((round == 1)); then
            if [[ ! -d "$reference" ]]; then
                mv "$out" "$reference"
                out=$reference
                reference_kind=$kind
            else
                printf '         equal work (%s %d vs the reference): ' "$kind" "$n" >&2
                # a Python run's output is compared by what can be equal (compare.py's header)
                if python_kind "$kind" || python_kind "$reference_kind"; then
                    "$pyenv/bin/python" "$PYDIR/compare.py" "$reference" "$out" >&2
                else
                    "$BASELINE" compare "$reference" "$out" >&2
                fi || die "$kind with $n worker(s) did not do the same work as the reference (above)"
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
    read -r "wall_m[$c]" "wall_lo[$c]" "wall_hi[$c]" < <(stats "$(column_of "${results[$c]}" 1)")
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
# Sluice against the Python runners at the same worker count (Python time / Sluice time)
for n in $WORKERS; do
    [[ -n ${wall_m[sluice:$n]:-} ]] || continue
    for k in bytewax beam; do
        [[ -n ${wall_m[$k:$n]:-} ]] || continue
        awk -v k="$k" -v n="$n" -v p="${wall_m[$k:$n]}" -v plo="${wall_lo[$k:$n]}" \
            -v phi="${wall_hi[$k:$n]}" -v s="${wall_m[sluice:$n]}" -v lo="${wall_lo[sluice:$n]}" \
            -v hi="${wall_hi[sluice:$n]}" \
            'BEGIN {printf "sluice %d vs %s %d: %.2fx (%.2f-%.2f)\n", n, k, n, p / s, plo / hi, phi / lo}'
    done
done
if ((${#configs[@]} > 1)); then
    echo "equal work checked: every configuration's decoded records and dead letters equal the reference's (${configs[0]})"
fi
# The same ratios paired by round: runs of one round are minutes apart, so a change in the
# host's speed (this machine's varies by tens of percent) weighs less than in ratios of medians
# taken over the whole series.
paired() { # paired A B: "A time / B time" per round, then the median
    local a b ratios
    a=$(column_of "${results[$1]}" 1) b=$(column_of "${results[$2]}" 1)
    ratios=$(paste -d' ' <(tr ' ' '\n' <<<"$a" | grep .) <(tr ' ' '\n' <<<"$b" | grep .) |
        awk '{printf "%.2f ", $1 / $2}')
    printf '%s(median %s)' "$ratios" "$(stats "$ratios" | awk '{printf "%.2f", $1}')"
}
if ((RUNS > 1)); then
    echo "paired by round (ratio of each round's runs, rounds 1..$RUNS):"
    for n in $WORKERS; do
        for k in baseline bytewax beam; do
            [[ -n ${results[sluice:$n]:-} && -n ${results[$k:$n]:-} ]] || continue
            echo "  $k $n time / sluice $n time: $(paired "$k:$n" "sluice:$n")"
        done
    done
    lo=${WORKERS%% *} hi=${WORKERS##* }
    for k in sluice baseline; do
        if [[ $lo != "$hi" && -n ${results[$k:$lo]:-} && -n ${results[$k:$hi]:-} ]]; then
            echo "  $k $lo time / $k $hi time (scaling): $(paired "$k:$lo" "$k:$hi")"
        fi
    done
fi
