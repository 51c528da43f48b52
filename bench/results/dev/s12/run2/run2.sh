#!/bin/bash
# Session 12 dev run 2: attn_entmax_cluster with CTA-level partials (one __syncthreads and
# two 16-byte remote loads a lane per solve step, loads not serialised). A/B against the
# four-launch path (ENTMAXKV_FUSED_PAGES=0) and clusters of 4 / 16, SDPA in the same run.
cd "$(dirname "$0")"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export PYTHONUNBUFFERED=1
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 ))s] $*"; }
{ date -u; nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv,noheader; } > $OUT/card.txt
cat $OUT/card.txt
timeout 60 ./entmaxkv bench --device cuda --preset figure --contexts 32K --methods dense-entmax,topk,gaussian-exact --budget 0.125 --iters 10 --warmup 2 --json $OUT/acc.json > $OUT/acc.log 2>&1; echo "acc rc=$?"; grep "^  [a-z]" $OUT/acc.log | cut -c1-200
timeout 120 python3 sdpa_baseline.py --contexts 32K,64K,128K --batch 1 --heads 8 --head-dim 64 --iters 50 --json $OUT/sdpa.json > $OUT/sdpa.log 2>&1; echo "sdpa rc=$?"
run() { # name env...
  local n=$1; shift
  el "bench $n"
  env "$@" timeout 60 ./entmaxkv bench --device cuda --preset figure --contexts 32K,64K,128K --methods dense-entmax,topk,gaussian-exact --budget 0.125 --iters 20 --warmup 3 --no-accuracy --sdpa-json $OUT/sdpa.json --json $OUT/b_$n.json > $OUT/b_$n.log 2>&1
  echo "rc=$?"; grep "^  [a-z]" $OUT/b_$n.log | cut -c1-60 | paste -sd' ' | sed 's/(p90 [0-9.]* ms), floor//g; s/a=1.5//g; s/  */ /g'
}
run F0a ENTMAXKV_FUSED_PAGES=0
run C8a ENTMAXKV_CLUSTER=8
run C4a ENTMAXKV_CLUSTER=4
run C16a ENTMAXKV_CLUSTER=16
run F0b ENTMAXKV_FUSED_PAGES=0
run C8b ENTMAXKV_CLUSTER=8
run C4b ENTMAXKV_CLUSTER=4
el done
cd $OUT && tar czf ../r.tgz . && find . -type f -delete && mv ../r.tgz .
