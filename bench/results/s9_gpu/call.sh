#!/bin/bash
# Session 9 standing run (commit 0ac7bec): memcheck over tests that run the refilter kernel,
# then gpu_run.sh PART=bench, then an A/B of the refilter at alpha 1.5 (256K, 512K).
cd "$(dirname "$0")"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
( date -u; ENTMAXKV_REFILTER=2 timeout 140 compute-sanitizer --tool memcheck --error-exitcode 9 ./gpu_decode --test-threads=1 certified_matches_dense_short budgets_at_or_above 2>&1; echo "memcheck rc=$?" ) > $OUT/memcheck.log
grep -E "ERROR SUMMARY|rc=|test result|panicked" $OUT/memcheck.log | tail -4
PART=bench bash gpu_run.sh > $OUT/gpu_run.out 2>&1
tail -60 $OUT/gpu_run.out | cut -c1-250
for round in a b; do for R in 1 2; do
  ENTMAXKV_REFILTER=$R timeout 60 ./entmaxkv bench --device cuda --preset figure --contexts 256K,512K --methods dense-entmax,gaussian-exact,certified --iters 20 --warmup 3 --no-accuracy --json $OUT/ab_r${R}_$round.json > $OUT/ab_r${R}_$round.log 2>&1
  echo "ab $round R=$R rc=$?"; grep "^  " $OUT/ab_r${R}_$round.log | cut -c1-120
done; done
cd $OUT && tar czf ../r.tgz . && find . -type f -delete && mv ../r.tgz .
