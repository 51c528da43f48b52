#!/bin/bash
# Session 7 dev run D: main at 41a08f4 (after the solver fix and ENTMAXKV_ROB_HIST; see
# BENCHMARKS): gpu_decode (19 tests), robust timing old (5f7555e) / new with and without the
# histogram start, the softmax mode's timing, memcheck over the softmax-mode test.
cd "$(dirname "$0")"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
T0=$(date +%s); R=$OUT/run.log
el() { echo "[$(( $(date +%s) - T0 ))s] $*" | tee -a $R; }
{ date -u; nvidia-smi --query-gpu=name,driver_version --format=csv; } >> $R 2>&1
el tests
( timeout 330 ./gpu_decode --test-threads=8 2>&1; echo "gpu_decode rc=$?" ) > $OUT/tests.log
grep -E "^test |test result|rc=|panicked|worst" $OUT/tests.log | grep -v "running for over" | cut -c1-400 | tee -a $R
grep -A12 "panicked" $OUT/tests.log | head -40 | tee -a $R
RB="--device cuda --preset figure --iters 10 --warmup 2 --no-accuracy --contexts 32K,128K,1M --methods gaussian-robust"
el "robust old"
timeout 45 ./entmaxkv_old bench $RB --json $OUT/robust_old.json > $OUT/robust_old.log 2>&1
grep "^  " $OUT/robust_old.log | cut -c1-120 | tee -a $R
for h in 1 0; do
  el "robust new ROB_HIST=$h"
  ENTMAXKV_ROB_HIST=$h timeout 45 ./entmaxkv bench $RB --json $OUT/robust_hist$h.json > $OUT/robust_hist$h.log 2>&1
  grep "^  " $OUT/robust_hist$h.log | cut -c1-120 | tee -a $R
done
el "softmax mode (alpha 1)"
timeout 60 ./entmaxkv bench --device cuda --preset figure --alpha 1 --iters 10 --warmup 2 --no-accuracy --contexts 32K,128K,1M --methods dense-softmax,topk-softmax,robust-softmax --budget 0.125 --json $OUT/robust_softmax.json > $OUT/robust_softmax.log 2>&1
grep "^  " $OUT/robust_softmax.log | cut -c1-160 | tee -a $R
el "memcheck"
( timeout 110 compute-sanitizer --tool memcheck --error-exitcode 9 ./gpu_decode --test-threads=1 gaussian_robust_softmax_matches_cpu 2>&1; echo "memcheck rc=$?" ) > $OUT/memcheck.log
grep -E "ERROR SUMMARY|rc=|test result|panicked" $OUT/memcheck.log | tail -4 | tee -a $R
el done
