#!/bin/bash
# Session 10 test run: the full GPU suites on the commit named in BENCHMARKS.
cd "$(dirname "$0")"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 ))s] $*"; }
{ date -u; nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; } > $OUT/card.txt; cat $OUT/card.txt
( timeout 470 ./gpu_decode --test-threads=8 2>&1; echo "gpu_decode rc=$?" ) > $OUT/tests.log
el gpu_decode; grep -E "^test |test result|rc=|panicked|worst" $OUT/tests.log | cut -c1-300
( timeout 120 ./gpu_cache --test-threads=4 2>&1; echo "gpu_cache rc=$?" ) >> $OUT/tests.log
( timeout 30 ./gpu_oom 2>&1; echo "gpu_oom rc=$?" ) >> $OUT/tests.log
el done; grep -E "test result|rc=" $OUT/tests.log | tail -4
date -u >> $OUT/card.txt
( timeout 60 ./entmaxkv bench --device cuda --preset figure --contexts 32K,512K --methods dense-entmax,certified,topk,gaussian-exact --iters 10 --warmup 2 --json $OUT/bench_check.json > $OUT/bench_check.log 2>&1; echo "bench rc=$?" ) ; grep "^  " $OUT/bench_check.log | cut -c1-150
