#!/bin/bash
# Session 6 device run 2: combo (main + attn_entmax_single + generic beta with the GAUSS_GENERIC split): tests, check, memcheck; A/B timing vs main.
cd "$(dirname "$0")"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
T0=$(date +%s); R=$OUT/run.log
el() { echo "[$(( $(date +%s) - T0 ))s] $*" | tee -a $R; }
{ date -u; nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv; } >> $R 2>&1
el "combo tests"
( cd combo && timeout 330 ./gpu_decode --test-threads=4 2>&1; echo "combo gpu_decode rc=$?" ) > $OUT/combo_tests.log
( cd combo && timeout 100 ./gpu_cache --test-threads=4 2>&1; echo "combo gpu_cache rc=$?"; timeout 60 ./gpu_oom 2>&1; echo "combo gpu_oom rc=$?" ) >> $OUT/combo_tests.log
grep -E "^test |test result|rc=|panicked|worst" $OUT/combo_tests.log | cut -c1-500 | tee -a $R
el "A/B bench"
for v in main combo; do
  ( cd $v && timeout 120 ./entmaxkv bench --device cuda --preset figure --contexts 32K,64K,128K,1M --methods dense-entmax,topk,gaussian-exact --budget 0.125 --iters 30 --warmup 5 --no-accuracy --json $OUT/ab2_$v.json > $OUT/ab2_$v.log 2>&1 )
  el "$v"; grep "^  " $OUT/ab2_$v.log | cut -c1-260 | tee -a $R
done
el "combo check"
( cd combo && timeout 200 ./entmaxkv check --device cuda --json $OUT/combo_check.json > $OUT/combo_check.log 2>&1; echo "combo check rc=$?" ) | tee -a $R
tail -1 $OUT/combo_check.log | tee -a $R
el "combo memcheck"
( cd combo && timeout 150 compute-sanitizer --tool memcheck --error-exitcode 9 ./gpu_decode --test-threads=1 topk_pinned budgets_at_or_above gqa_alibi 2>&1; echo "memcheck rc=$?" ) > $OUT/combo_memcheck.log
grep -E "ERROR SUMMARY|rc=|test result" $OUT/combo_memcheck.log | tail -3 | tee -a $R
el done
( cd $OUT && tar czf ../results.tgz . && find . -type f -delete && mv ../results.tgz . )
