#!/bin/bash
# Session 10 dev run 1: A/B of the early PDL trigger, the code warm-up of the one-CTA kernels
# (tail, gauss_count, topk_select) and the refilter for full lists >= 512K at alpha 1.5;
# SDPA in the same run; then a subset of gpu_decode with the defaults.
cd "$(dirname "$0")"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export PYTHONUNBUFFERED=1
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 ))s] $*"; }
{ date -u; nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv,noheader; } > $OUT/card.txt
cat $OUT/card.txt
el sdpa
timeout 120 python3 sdpa_baseline.py --contexts 32K,128K,256K,512K,1M --batch 1 --heads 8 --head-dim 64 --iters 50 --json $OUT/sdpa.json > $OUT/sdpa.log 2>&1; echo "sdpa rc=$?"
OFF="ENTMAXKV_WARM_TAIL=0 ENTMAXKV_WARM_COUNT=0 ENTMAXKV_WARM_SELECT=0"
run() { # name env...
  local n=$1; shift
  if [ $(( $(date +%s) - T0 )) -gt 470 ]; then el "skip $n (time)"; return; fi
  el "bench $n"
  env "$@" timeout 110 ./entmaxkv bench --device cuda --preset figure --contexts 32K,128K,256K,512K,1M --methods dense-entmax,topk,gaussian-exact,certified --budget 0.125 --iters 20 --warmup 3 --no-accuracy --sdpa-json $OUT/sdpa.json --json $OUT/b_$n.json > $OUT/b_$n.log 2>&1
  echo "rc=$?"; grep "^  " $OUT/b_$n.log | cut -c1-150
}
run v0a ENTMAXKV_PDL_EARLY=0 $OFF ENTMAXKV_REFILTER=3
run v2a X=1
el tests
( timeout 150 ./gpu_decode --test-threads=8 every_method_alpha topk_ gaussian_selection certified_matches_dense_short budgets_at_or_above gqa_alibi graph_replays 2>&1; echo "gpu_decode rc=$?" ) > $OUT/tests.log
grep -E "^test |test result|rc=|panicked" $OUT/tests.log | cut -c1-300
run v1a ENTMAXKV_PDL_EARLY=1 $OFF ENTMAXKV_REFILTER=3
run v3a ENTMAXKV_REFILTER=3
run v2b X=1
run v0b ENTMAXKV_PDL_EARLY=0 $OFF ENTMAXKV_REFILTER=3
el done
cd $OUT && tar czf ../r.tgz . && find . -type f -delete && mv ../r.tgz .
