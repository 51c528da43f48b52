#!/bin/bash
# Session 12 dev run 6: development bits (ENTMAXKV_DEV_FLAGS) on top-k 1/8 at 32K / 64K,
# α = 1.5 and 2, alternated in two rounds, SDPA in the same run:
#   F0 = four-launch path (ENTMAXKV_FUSED_PAGES=0), F0f4 = + tail V prefetch (bit 4);
#   C = cluster kernel (ENTMAXKV_FUSED_PAGES=640), bits 1 (16 rows in flight), 2 (V prefetch).
cd "$(dirname "$0")"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export PYTHONUNBUFFERED=1
{ date -u; nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; } > $OUT/card.txt; cat $OUT/card.txt
timeout 120 python3 sdpa_baseline.py --contexts 32K,64K --batch 1 --heads 8 --head-dim 64 --iters 50 --json $OUT/sdpa.json > $OUT/sdpa.log 2>&1; echo "sdpa rc=$?"; grep -o '"median_ms": [0-9.]*' $OUT/sdpa.json
run() { # name env...
  local n=$1; shift
  env "$@" timeout 60 ./entmaxkv bench --device cuda --preset figure --contexts 32K,64K --alpha 1.5,2 --methods topk --budget 0.125 --iters 30 --warmup 3 --no-accuracy --sdpa-json $OUT/sdpa.json --json $OUT/b_$n.json > $OUT/b_$n.log 2>&1
  echo "$n rc=$? $(grep '^  [a-z]' $OUT/b_$n.log | cut -c16-40 | paste -sd' ' | sed 's/  */ /g')"
}
for r in a b; do
  run F0$r ENTMAXKV_FUSED_PAGES=0
  run F0f4$r ENTMAXKV_FUSED_PAGES=0 ENTMAXKV_DEV_FLAGS=4
  run C0$r ENTMAXKV_FUSED_PAGES=640
  run C1$r ENTMAXKV_FUSED_PAGES=640 ENTMAXKV_DEV_FLAGS=1
  run C2$r ENTMAXKV_FUSED_PAGES=640 ENTMAXKV_DEV_FLAGS=2
  run C3$r ENTMAXKV_FUSED_PAGES=640 ENTMAXKV_DEV_FLAGS=3
done
for v in "ENTMAXKV_DEV_FLAGS=3" "ENTMAXKV_DEV_FLAGS=4 ENTMAXKV_FUSED_PAGES=0"; do
  echo "== profile $v"
  env ENTMAXKV_FUSED_PAGES=640 $v ENTMAXKV_PROFILE_TAIL=1 timeout 60 ./entmaxkv bench --device cuda --preset figure --contexts 32K --alpha 1.5,2 --methods topk --budget 0.125 --iters 20 --warmup 3 --no-accuracy 2>&1 | grep -E "clocks" | cut -c1-200
done
cd $OUT && tar czf ../r.tgz . && find . -type f -delete && mv ../r.tgz .
