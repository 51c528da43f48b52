#!/bin/bash
# Session 7 dev run C: the merged build (robust softmax mode, dp4a dots, early loads in
# rob_tok, histogram start in rob_solve, closed-form tail tau): the whole gpu_decode suite,
# memcheck over the robust softmax test, robust timing old (5f7555e) vs new, softmax mode.
# Binaries: entmaxkv_old = 5f7555e; entmaxkv, gpu_decode = 68f315b (the merge of gpu-robust-softmax).
cd "$(dirname "$0")"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
T0=$(date +%s); R=$OUT/run.log
el() { echo "[$(( $(date +%s) - T0 ))s] $*" | tee -a $R; }
{ date -u; nvidia-smi --query-gpu=name,driver_version --format=csv; } >> $R 2>&1
el tests
( timeout 360 ./gpu_decode --test-threads=8 2>&1; echo "gpu_decode rc=$?" ) > $OUT/tests.log
grep -E "^test |test result|rc=|panicked|worst" $OUT/tests.log | grep -v "running for over" | cut -c1-400 | tee -a $R
grep -A12 "panicked" $OUT/tests.log | head -40 | tee -a $R
for b in entmaxkv_old entmaxkv; do
  el "robust $b"
  timeout 50 ./$b bench --device cuda --preset figure --iters 10 --warmup 2 --no-accuracy --contexts 32K,128K,1M --methods gaussian-robust --json $OUT/robust_$b.json > $OUT/robust_$b.log 2>&1
  grep "^  " $OUT/robust_$b.log | cut -c1-200 | tee -a $R
done
el "robust softmax (alpha 1)"
timeout 50 ./entmaxkv bench --device cuda --preset figure --alpha 1 --iters 10 --warmup 2 --no-accuracy --contexts 32K,128K,1M --methods dense-softmax,topk-softmax,robust-softmax --budget 0.125 --json $OUT/robust_softmax.json > $OUT/robust_softmax.log 2>&1
grep "^  " $OUT/robust_softmax.log | cut -c1-200 | tee -a $R
el "memcheck"
( timeout 100 compute-sanitizer --tool memcheck --error-exitcode 9 ./gpu_decode --test-threads=1 gaussian_robust_softmax_matches_cpu 2>&1; echo "memcheck rc=$?" ) > $OUT/memcheck.log
grep -E "ERROR SUMMARY|rc=|test result|panicked" $OUT/memcheck.log | tail -4 | tee -a $R
el done
