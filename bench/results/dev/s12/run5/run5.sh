#!/bin/bash
# Session 12 dev run 5: phase clocks of attn_entmax_cluster (ENTMAXKV_PROFILE_TAIL), top-k
# 1/8 at 32K and 64K (the 64K lists with ENTMAXKV_FUSED_PAGES=640), α = 1.5 and 2; the
# four-launch tail's clocks beside them.
cd "$(dirname "$0")"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
{ date -u; nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; } > $OUT/card.txt; cat $OUT/card.txt
for a in 1.5 2; do
for v in "ENTMAXKV_FUSED_PAGES=640" "ENTMAXKV_FUSED_PAGES=0"; do
  echo "== alpha $a $v"
  env $v ENTMAXKV_PROFILE_TAIL=1 timeout 60 ./entmaxkv bench --device cuda --preset figure --contexts 32K,64K --alpha $a --methods topk --budget 0.125 --iters 20 --warmup 3 --no-accuracy > $OUT/p_${a}_${v#*=}.log 2>&1
  grep -E "^  [a-z]|clocks" $OUT/p_${a}_${v#*=}.log | cut -c1-200
done; done
cd $OUT && tar czf ../r.tgz . && find . -type f -delete && mv ../r.tgz .
