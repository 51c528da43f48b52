#!/bin/bash
# Session 12 dev run 4: attn_entmax_cluster split in two kernels (with / without the top-k
# select), 16 rows in flight per thread in its K pass, V of the rows with d > −1 prefetched
# into L2 before the solve. A/B: F0 four-launch path, S0 cluster without the select, D
# cluster with it; SDPA in the same run.
cd "$(dirname "$0")"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export PYTHONUNBUFFERED=1
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 ))s] $*"; }
{ date -u; nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv,noheader; } > $OUT/card.txt
cat $OUT/card.txt
timeout 60 ./entmaxkv bench --device cuda --preset figure --contexts 32K --methods topk,dense-entmax --budget 0.125 --iters 10 --warmup 2 --json $OUT/acc.json > $OUT/acc.log 2>&1; echo "acc rc=$?"; grep "^  [a-z]" $OUT/acc.log | cut -c1-200
timeout 120 python3 sdpa_baseline.py --contexts 32K,64K --batch 1 --heads 8 --head-dim 64 --iters 50 --json $OUT/sdpa.json > $OUT/sdpa.log 2>&1; echo "sdpa rc=$?"
run() { # name env...
  local n=$1; shift
  env "$@" timeout 60 ./entmaxkv bench --device cuda --preset figure --contexts 32K,64K --methods topk --budget 0.125 --iters 30 --warmup 3 --no-accuracy --sdpa-json $OUT/sdpa.json --json $OUT/b_$n.json > $OUT/b_$n.log 2>&1
  echo "$n rc=$? $(grep '^  [a-z]' $OUT/b_$n.log | cut -c1-40 | paste -sd' ' | sed 's/a=1.5//g; s/  */ /g')"
}
for r in a b c; do
  run F0$r ENTMAXKV_FUSED_PAGES=0
  run S0$r ENTMAXKV_FUSED_SELECT=0
  run D$r ENTMAXKV_CLUSTER=8
  run P640$r ENTMAXKV_FUSED_PAGES=640
done
el done
cd $OUT && tar czf ../r.tgz . && find . -type f -delete && mv ../r.tgz .
