#!/bin/bash
# Session 16 dev run 2 (H100): topk_select's staged-key walk unrolled 2 (new default) against
# 8 (the old code's), 4 and 1 (ENTMAXKV_DEFINES=SEL_UNROLL=n), alternated twice; the dense
# K pass taking candidates against the chunk's own maximum without waiting for the fold
# (SCORES_RUNMAX=0) against the running maximum (default).
cd "$(dirname "$0")"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export ENTMAXKV_PTX_CACHE=/tmp/entmaxkv_ptx
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 ))s] $*"; }
{ date -u; nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader; } > $OUT/card.txt; cat $OUT/card.txt
timeout 100 python3 sdpa_baseline.py --contexts 32K,64K,128K,256K,512K --batch 1 --heads 8 --head-dim 64 --iters 50 --json $OUT/sdpa.json > $OUT/sdpa.log 2>&1; echo "sdpa rc=$?"
grep -E "ctx" $OUT/sdpa.log | cut -c1-60
run() { # name ctx methods env...
  local n=$1 cx=$2 me=$3; shift 3
  local t1=$(date +%s.%N)
  env "$@" timeout 150 ./entmaxkv bench --device cuda --preset figure --contexts $cx --methods $me --budget 0.125 --iters 30 --warmup 3 --no-accuracy --sdpa-json $OUT/sdpa.json --json $OUT/b_$n.json > $OUT/b_$n.log 2>&1
  local rc=$?
  echo "$n rc=$rc $(awk "BEGIN{printf \"%.1f\", $(date +%s.%N) - $t1}")s $(grep -E '^  (topk|gauss|dense)' $OUT/b_$n.log | cut -c26-34 | paste -sd' ')"
}
el select
for r in a b; do
  run U2$r 32K,64K,128K topk
  run U8$r 32K,64K,128K topk ENTMAXKV_DEFINES=SEL_UNROLL=8
  run U4$r 32K,64K,128K topk ENTMAXKV_DEFINES=SEL_UNROLL=4
  run U1$r 32K,64K,128K topk ENTMAXKV_DEFINES=SEL_UNROLL=1
done
el runmax
for r in a b; do
  run R1$r 32K,128K,256K,512K dense-entmax
  run R0$r 32K,128K,256K,512K dense-entmax ENTMAXKV_DEFINES=SCORES_RUNMAX=0
done
grep -h "^  topk" $OUT/b_U2a.log $OUT/b_U8a.log | cut -c1-20,100-240
el done
cd $OUT && tar czf ../r.tgz . && find . -type f -delete && mv ../r.tgz .
