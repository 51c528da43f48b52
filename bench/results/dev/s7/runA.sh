#!/bin/bash
# Session 7 dev run A: GPU tests on the new build (dp4a robust dots, closed-form tail tau),
# then A/B benches: ENTMAXKV_TAU_CLOSED=1/0 (same binary) and robust old/new binary.
# Binaries: entmaxkv_old = main at 5f7555e; entmaxkv and gpu_decode = da15731.
cd "$(dirname "$0")"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
T0=$(date +%s); R=$OUT/run.log
el() { echo "[$(( $(date +%s) - T0 ))s] $*" | tee -a $R; }
{ date -u; nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv; } >> $R 2>&1
el tests
( timeout 330 ./gpu_decode --test-threads=8 2>&1; echo "gpu_decode rc=$?" ) > $OUT/tests.log
grep -E "^test |test result|rc=|panicked|worst" $OUT/tests.log | cut -c1-400 | tee -a $R
B="--device cuda --preset figure --iters 30 --warmup 5 --no-accuracy"
for c in 1 0; do
  el "TAU_CLOSED=$c"
  ENTMAXKV_TAU_CLOSED=$c timeout 70 ./entmaxkv bench $B --contexts 32K,128K,1M --methods dense-entmax,topk,gaussian-exact,certified --budget 0.125 --json $OUT/closed_$c.json > $OUT/closed_$c.log 2>&1
  grep "^  " $OUT/closed_$c.log | cut -c1-260 | tee -a $R
done
for b in entmaxkv_old entmaxkv; do
  el "robust $b"
  timeout 60 ./$b bench --device cuda --preset figure --iters 10 --warmup 2 --no-accuracy --contexts 32K,128K,1M --methods gaussian-robust --json $OUT/robust_$b.json > $OUT/robust_$b.log 2>&1
  grep "^  " $OUT/robust_$b.log | cut -c1-300 | tee -a $R
done
el "profile tail (closed)"
ENTMAXKV_PROFILE_TAIL=1 timeout 40 ./entmaxkv bench --device cuda --preset figure --contexts 32K,1M --methods dense-entmax --iters 10 --warmup 3 --no-accuracy 2>&1 | grep -E "tail clocks|^  " | cut -c1-250 | tee -a $R
el done
