#!/bin/bash
# Session 11 dev run 7: plan knobs at 512K / 1M after the lean tail: the refilter rule
# (default vs ENTMAXKV_REFILTER=3, alpha < 1.5 only) and the lean limit (1536 vs 4096).
cd "$(dirname "$0")"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export PYTHONUNBUFFERED=1
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 ))s] $*"; }
{ date -u; nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv,noheader; } > $OUT/card.txt; cat $OUT/card.txt
timeout 60 python3 sdpa_baseline.py --contexts 512K,1M --batch 1 --heads 8 --head-dim 64 --iters 50 --json $OUT/sdpa.json > $OUT/sdpa.log 2>&1; tail -2 $OUT/sdpa.log | cut -c1-60
run() { local n=$1; shift
  if [ $(( $(date +%s) - T0 )) -gt 300 ]; then el "skip $n"; return; fi
  env "$@" timeout 60 ./entmaxkv bench --device cuda --preset figure --contexts 512K,1M --methods dense-entmax,certified,gaussian-exact --iters 20 --warmup 3 --no-accuracy --json $OUT/b_$n.json > $OUT/b_$n.log 2>&1
  echo "$n rc=$? $(grep '^  [a-z]' $OUT/b_$n.log | cut -c1-42 | paste -sd' ' | sed 's/a=1.5//g; s/  */ /g')"
}
for r in a b; do
  run D$r X=1
  run R3$r ENTMAXKV_REFILTER=3
  run L4$r ENTMAXKV_TAIL_LEAN=4096
  run R3L4$r ENTMAXKV_REFILTER=3 ENTMAXKV_TAIL_LEAN=4096
done
el done
cd $OUT && tar czf ../r.tgz . && find . -type f -delete && mv ../r.tgz .
