#!/bin/bash
# Session 17 run 4 (H200): Gaussian and top-k at 1M with the page-statistics passes in
# page-range-major order (ENTMAXKV_KV_FAST=0) against the default, SDPA in the same run.
cd "$(dirname "$0")"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export ENTMAXKV_PTX_CACHE=/tmp/entmaxkv_ptx
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 ))s] $*"; }
{ date -u; nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,memory.total --format=csv,noheader; } > $OUT/card.txt; cat $OUT/card.txt
timeout 40 python3 sdpa_baseline.py --contexts 1M --batch 1 --heads 8 --head-dim 64 --iters 50 --json $OUT/sdpa.json > $OUT/sdpa.log 2>&1; echo "sdpa rc=$?"
grep -E "ctx" $OUT/sdpa.log | cut -c1-60
run() { # name env...
  local n=$1; shift
  LEFT=$(( 150 - $(date +%s) + T0 )); [ $LEFT -lt 10 ] && { echo "$n skipped"; return; }
  env "$@" timeout $LEFT ./entmaxkv bench --device cuda --preset figure --contexts 1M --methods gaussian-exact,topk --budget 0.125 --iters 30 --warmup 3 --no-accuracy --sdpa-json $OUT/sdpa.json --json $OUT/b_$n.json > $OUT/b_$n.log 2>&1
  echo "$n rc=$? $(grep -E '^  (topk|gauss|dense)' $OUT/b_$n.log | cut -c26-34 | paste -sd' ')"
}
for r in a b c; do run B$r; run K$r ENTMAXKV_KV_FAST=0; done
grep -E "^  (gauss|topk)" $OUT/b_Ba.log $OUT/b_Ka.log | cut -c1-30,120-300
el done
cd $OUT && tar czf ../r.tgz . && find . -type f -delete && mv ../r.tgz .
