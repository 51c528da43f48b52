#!/bin/bash
# Session 12 dev run 3: the top-k select inside attn_entmax_cluster (no topk_select launch).
# Accuracy at 32K for three α, A/B (F0: four-launch path; S0: cluster kernel, topk_select
# kept; default: cluster kernel with the select; P640: also 64K's 513-page lists), SDPA in
# the same run; then gpu_decode, gpu_cache, gpu_oom, and memcheck over two top-k tests.
cd "$(dirname "$0")"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export PYTHONUNBUFFERED=1
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 ))s] $*"; }
{ date -u; nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv,noheader; } > $OUT/card.txt
cat $OUT/card.txt
for a in 1.5 2 1.3333333333333333; do
  timeout 60 ./entmaxkv bench --device cuda --preset figure --contexts 32K --alpha $a --methods topk,dense-entmax --budget 0.125 --iters 10 --warmup 2 --json $OUT/acc_$a.json > $OUT/acc_$a.log 2>&1; echo "acc $a rc=$?"; grep "^  [a-z]" $OUT/acc_$a.log | cut -c1-200
done
timeout 120 python3 sdpa_baseline.py --contexts 32K,64K,128K --batch 1 --heads 8 --head-dim 64 --iters 50 --json $OUT/sdpa.json > $OUT/sdpa.log 2>&1; echo "sdpa rc=$?"
run() { # name env...
  local n=$1; shift
  el "bench $n"
  env "$@" timeout 60 ./entmaxkv bench --device cuda --preset figure --contexts 32K,64K,128K --methods topk --budget 0.125 --iters 30 --warmup 3 --no-accuracy --sdpa-json $OUT/sdpa.json --json $OUT/b_$n.json > $OUT/b_$n.log 2>&1
  echo "rc=$?"; grep "^  [a-z]" $OUT/b_$n.log | cut -c1-40 | paste -sd' ' | sed 's/a=1.5//g; s/  */ /g'
}
for r in a b c; do
  run F0$r ENTMAXKV_FUSED_PAGES=0
  run S0$r ENTMAXKV_FUSED_SELECT=0
  run D$r ENTMAXKV_CLUSTER=8
  run P640$r ENTMAXKV_FUSED_PAGES=640
done
el tests
( timeout 320 ./gpu_decode --test-threads=8 2>&1; echo "gpu_decode rc=$?" ) > $OUT/tests.log
grep -E "test result|rc=|panicked|worst|FAILED|failed" $OUT/tests.log | cut -c1-240 | head -40
el cache
( timeout 120 ./gpu_cache --test-threads=4 2>&1; echo "gpu_cache rc=$?"; timeout 60 ./gpu_oom 2>&1; echo "gpu_oom rc=$?" ) > $OUT/tests_cache.log
grep -E "test result|rc=" $OUT/tests_cache.log
el memcheck
CS=$(ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null || which compute-sanitizer)
for t in topk_pinned_sink_and_recent_pages_match_cpu budgets_at_or_above_the_cache_keep_everything; do
  if [ $(( $(date +%s) - T0 )) -gt 520 ]; then el "skip memcheck $t"; continue; fi
  ( timeout 150 $CS --tool memcheck --error-exitcode 9 ./gpu_decode --exact $t --test-threads=1 2>&1; echo "memcheck $t rc=$?" ) > $OUT/memcheck_$t.log
  grep -E "ERROR SUMMARY|rc=|test result" $OUT/memcheck_$t.log
done
el done
cd $OUT && tar czf ../r.tgz . && find . -type f -delete && mv ../r.tgz .
