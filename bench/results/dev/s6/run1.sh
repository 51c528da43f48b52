#!/bin/bash
# Session 6 device run 1: validate gpu-generic-beta; A/B main vs gpu-code-size, L2 flushed / warm / code-warm.
cd "$(dirname "$0")"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
T0=$(date +%s); R=$OUT/run.log
el() { echo "[$(( $(date +%s) - T0 ))s] $*" | tee -a $R; }
{ date -u; nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv; } >> $R 2>&1
el "gbeta tests"
( cd gbeta && timeout 200 ./gpu_decode --test-threads=4 gaussian unsupported 2>&1; echo "gbeta gpu_decode rc=$?" ) > $OUT/gbeta_tests.log
grep -E "^test |test result|rc=|panicked" $OUT/gbeta_tests.log | cut -c1-400 | tee -a $R
el "gbeta check"
( cd gbeta && timeout 150 ./entmaxkv check --device cuda --json $OUT/gbeta_check.json > $OUT/gbeta_check.log 2>&1; echo "gbeta check rc=$?" ) | tee -a $R
tail -2 $OUT/gbeta_check.log | tee -a $R
el "icache tests"
( cd icache && timeout 200 ./gpu_decode --test-threads=4 2>&1; echo "icache gpu_decode rc=$?" ) > $OUT/icache_tests.log
grep -E "test result|rc=|panicked" $OUT/icache_tests.log | cut -c1-400 | tee -a $R
for round in 1; do
for v in main icache; do
  for l2 in flushed warm-code warm; do
    el "bench $v $l2 round $round"
    F=""; [ $l2 = warm ] && F="--warm-l2"; [ $l2 = warm-code ] && F="--warm-code"
    ( cd $v && timeout 120 ./entmaxkv bench --device cuda --preset figure --contexts 32K,1M --methods dense-entmax,topk,gaussian-exact --budget 0.125 --iters 40 --warmup 5 --no-accuracy $F --json $OUT/ab_${v}_${l2}_r$round.json > $OUT/ab_${v}_${l2}_r$round.log 2>&1 )
    grep "^  " $OUT/ab_${v}_${l2}_r$round.log | cut -c1-200 | tee -a $R
  done
done
done
el "gbeta generic alpha timing"
( cd gbeta && timeout 120 ./entmaxkv bench --device cuda --preset figure --contexts 32K,1M --alpha 3,1.25,1.5 --methods gaussian-exact --iters 20 --warmup 3 --no-accuracy --json $OUT/gbeta_alpha.json > $OUT/gbeta_alpha.log 2>&1 )
grep "^  " $OUT/gbeta_alpha.log | cut -c1-200 | tee -a $R
el "gbeta memcheck gaussian"
( cd gbeta && timeout 150 compute-sanitizer --tool memcheck --error-exitcode 9 ./gpu_decode --test-threads=1 gaussian_selection 2>&1; echo "memcheck rc=$?" ) > $OUT/gbeta_memcheck.log
grep -E "ERROR SUMMARY|rc=|test result" $OUT/gbeta_memcheck.log | tail -3 | tee -a $R
el done
( cd $OUT && tar czf ../results.tgz . && find . -type f -delete && mv ../results.tgz . )
