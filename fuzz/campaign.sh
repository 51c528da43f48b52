#!/usr/bin/env bash
# Long libFuzzer campaign over entmaxkv's fuzz targets (RELIABILITY.md, "Fuzzing"; issue #7).
#
#   campaign.sh SECONDS [WORKERS_PER_TARGET]
#
# Runs the targets concurrently, each as libFuzzer `-workers=N -jobs=N -max_total_time=SECONDS`
# (N independent processes sharing one growing corpus), each job with its own log, and leaves
# in $OUT/fuzz/ (OUT defaults to ./out) at most five files, since the machine that runs it may
# return only a few files:
#   summary.json        per target: executions summed over every job's final statistics,
#                       seconds, artifacts found, exit codes (per job too); and the totals
#   campaign.log        this script's messages
#   logs.tar.gz         <target>/fuzz-<job>.log (libFuzzer's log of each job), <target>/parent.log
#                       (the job launcher: "Job N exited with exit code X"), <target>/exit_code
#   corpus.tar.gz       <target>/corpus/: the seed corpus plus what the jobs added
#   artifacts.tar.gz    <target>/artifacts/crash-*, timeout-*, oom-*, ... (only if any)
# KEEP_LOGS=1 also leaves the unpacked <target>/ folders (logs and artifacts) there.
#
# Environment:
#   OUT                      output root (default ./out)
#   TARGETS                  targets to run (default "tau_hat entmax cache_append")
#   WORKERS_<target>         per-target worker count, e.g. WORKERS_cache_append=7
#   NO_BUILD=1               (checkout only) do not run `cargo fuzz build` first
#   KEEP_LOGS=1              also keep the unpacked per-target folders in $OUT/fuzz/
#
# Layouts: a campaign kit (this script next to bin/<target> and corpus/<target>) runs as is;
# in a checkout (this script in fuzz/) it first builds the targets with
#   RUSTC_BOOTSTRAP=1 cargo fuzz build -O --sanitizer none --debug-assertions
# (optimised, overflow checks and debug assertions on, no sanitizer) and uses
# fuzz/target/x86_64-unknown-linux-gnu/release/<target> and fuzz/corpus/<target>.
#
# The whole run ends by SECONDS + 20 s even if a job hangs: every target runs under
# `timeout -k 5 (SECONDS + 15)`, which signals the target's whole process group; libFuzzer's
# own -timeout=25 reports a single input running longer than 25 s as a timeout artifact.
set -u

usage() {
    sed -n '2,6p' "$0" >&2
    exit 2
}
[ $# -ge 1 ] && [ $# -le 2 ] || usage
secs=$1
workers=${2:-5}
case "$secs$workers" in *[!0-9]*) usage ;; esac
[ "$secs" -ge 1 ] && [ "$workers" -ge 1 ] || usage

here=$(cd "$(dirname "$0")" && pwd)
OUT=${OUT:-./out}
mkdir -p "$OUT/fuzz" || exit 1
out_dir=$(cd "$OUT/fuzz" && pwd)
: >"$out_dir/campaign.log"
targets=${TARGETS:-tau_hat entmax cache_append}
log() { echo "[$(date -u +%H:%M:%S)] $*" | tee -a "$out_dir/campaign.log" >&2; }
host_name() { hostname 2>/dev/null || cat /proc/sys/kernel/hostname; }

if [ -d "$here/bin" ]; then
    bin_dir=$here/bin
else
    bin_dir=$here/target/x86_64-unknown-linux-gnu/release
    if [ "${NO_BUILD:-0}" != 1 ] && command -v cargo >/dev/null; then
        log "building: cargo fuzz build -O --sanitizer none --debug-assertions"
        (cd "$here" && RUSTC_BOOTSTRAP=1 cargo fuzz build -O --sanitizer none \
            --debug-assertions) >>"$out_dir/campaign.log" 2>&1 ||
            { log "build failed (see campaign.log)"; exit 1; }
    fi
fi
corpus_dir=$here/corpus
for t in $targets; do
    [ -x "$bin_dir/$t" ] || { log "missing binary $bin_dir/$t"; exit 1; }
    [ -d "$corpus_dir/$t" ] || { log "missing corpus $corpus_dir/$t"; exit 1; }
done

work=$(mktemp -d "${TMPDIR:-/tmp}/entmaxkv-fuzz.XXXXXX") || exit 1
trap 'rm -rf "$work"' EXIT
log "campaign: ${secs}s, targets: $targets, host $(host_name), $(nproc) cores"

rm -f "$out_dir"/summary.json "$out_dir"/*.tar.gz
start=$(date +%s)
for t in $targets; do
    v=WORKERS_$t
    n=${!v:-$workers}
    tdir=$work/logs/$t
    mkdir -p "$tdir/artifacts" "$work/corpus"
    cp -r "$corpus_dir/$t" "$work/corpus/$t"
    echo "$n" >"$tdir/workers"
    log "$t: $n workers, seed corpus $(ls "$work/corpus/$t" | wc -l) files"
    (
        cd "$tdir" || exit 1
        timeout -k 5 $((secs + 15)) "$bin_dir/$t" -workers="$n" -jobs="$n" \
            -max_total_time="$secs" -timeout=25 -rss_limit_mb=2048 -print_final_stats=1 \
            -artifact_prefix="$tdir/artifacts/" "$work/corpus/$t" >parent.log 2>&1
        echo $? >exit_code
    ) &
done
wait
end=$(date +%s)
log "all targets finished after $((end - start))s"

# --- summary ---------------------------------------------------------------------------
# Executions of one job log: libFuzzer's final statistics, else its "Done N runs" line, else
# the last "#N" status line (a job killed before its final statistics).
job_execs() {
    local f=$1 n
    n=$(sed -n 's/^stat::number_of_executed_units: *\([0-9]*\).*/\1/p' "$f" | tail -1)
    [ -n "$n" ] || n=$(sed -n 's/^Done \([0-9]*\) runs.*/\1/p' "$f" | tail -1)
    [ -n "$n" ] || n=$(sed -n 's/^#\([0-9]*\)[[:space:]].*/\1/p' "$f" | tail -1)
    echo "${n:-0}"
}
job_status() {
    local f=$1
    if grep -q "ERROR: libFuzzer: timeout" "$f"; then echo timeout
    elif grep -q "ERROR: libFuzzer: out-of-memory" "$f"; then echo oom
    elif grep -qE "ERROR: libFuzzer|deadly signal|panicked at" "$f"; then echo crash
    elif grep -q "^Done [0-9]* runs" "$f"; then echo done
    else echo killed
    fi
}
json_list() { # quoted, comma-separated
    local first=1 x
    for x in "$@"; do
        [ $first = 1 ] || printf ', '
        printf '"%s"' "$x"
        first=0
    done
}

summary=$out_dir/summary.json
total=0
{
    printf '{\n  "budget_seconds": %s,\n  "wall_seconds": %s,\n' "$secs" "$((end - start))"
    printf '  "host": "%s",\n  "cores": %s,\n  "targets": {\n' "$(host_name)" "$(nproc)"
    first_t=1
    for t in $targets; do
        tdir=$work/logs/$t
        n=$(cat "$tdir/workers")
        rc=$(cat "$tdir/exit_code" 2>/dev/null || echo -1)
        corpus_files=$(ls "$work/corpus/$t" | wc -l)
        execs=0
        jobs_json=""
        for f in "$tdir"/fuzz-*.log; do
            [ -e "$f" ] || continue
            j=${f##*/fuzz-}
            j=${j%.log}
            e=$(job_execs "$f")
            s=$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$f" | tail -1)
            st=$(job_status "$f")
            jrc=$(sed -n "s/.*Job $j exited with exit code \([-0-9]*\).*/\1/p" \
                "$tdir/parent.log" | tail -1)
            execs=$((execs + e))
            [ -z "$jobs_json" ] || jobs_json="$jobs_json,"
            jobs_json="$jobs_json
        {\"job\": $j, \"execs\": $e, \"seconds\": ${s:-null}, \"status\": \"$st\", \"exit_code\": ${jrc:-null}}"
        done
        total=$((total + execs))
        arts=()
        for a in "$tdir"/artifacts/*; do [ -e "$a" ] && arts+=("${a##*/}"); done
        crashes=()
        for a in "${arts[@]+"${arts[@]}"}"; do
            case $a in crash-* | timeout-* | oom-* | leak-*) crashes+=("$a") ;; esac
        done
        [ $first_t = 1 ] || printf ',\n'
        first_t=0
        printf '    "%s": {\n' "$t"
        printf '      "workers": %s,\n      "execs": %s,\n      "seconds": %s,\n' \
            "$n" "$execs" "$((end - start))"
        printf '      "execs_per_second": %s,\n' "$((execs / ((end - start) > 0 ? end - start : 1)))"
        printf '      "reached_10M": %s,\n' "$([ "$execs" -ge 10000000 ] && echo true || echo false)"
        printf '      "crashes": [%s],\n' "$(json_list "${crashes[@]+"${crashes[@]}"}")"
        printf '      "artifacts": [%s],\n' "$(json_list "${arts[@]+"${arts[@]}"}")"
        printf '      "exit_code": %s,\n      "corpus_files": %s,\n' "$rc" "$corpus_files"
        printf '      "jobs": [%s\n      ]\n    }' "$jobs_json"
    done
    printf '\n  },\n  "total_execs": %s\n}\n' "$total"
} >"$summary"

(cd "$work/logs" && tar -czf "$out_dir/logs.tar.gz" --exclude='*/artifacts' $targets)
(cd "$work" && tar -czf "$out_dir/corpus.tar.gz" corpus)
if ls "$work"/logs/*/artifacts/* >/dev/null 2>&1; then
    (cd "$work/logs" && tar -czf "$out_dir/artifacts.tar.gz" */artifacts)
fi
if [ "${KEEP_LOGS:-0}" = 1 ]; then
    for t in $targets; do
        rm -rf "${out_dir:?}/$t"
        cp -r "$work/logs/$t" "$out_dir/$t"
    done
fi
log "summary: $summary; logs.tar.gz, corpus.tar.gz$([ -e "$out_dir/artifacts.tar.gz" ] &&
    echo ", artifacts.tar.gz")"
for t in $targets; do
    tdir=$work/logs/$t
    e=0
    for f in "$tdir"/fuzz-*.log; do [ -e "$f" ] && e=$((e + $(job_execs "$f"))); done
    a=$(ls "$tdir/artifacts" | wc -l)
    log "$t: $e executions, $a artifact(s), exit code $(cat "$tdir/exit_code" 2>/dev/null)"
done
# nonzero when anything was found
[ -e "$out_dir/artifacts.tar.gz" ] && exit 1
exit 0
