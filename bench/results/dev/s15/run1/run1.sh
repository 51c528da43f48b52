#!/bin/bash
# Session 15 dev run 1: kernels compiled for α = 1.5 and the exact τ (attn_entmax_tail15,
# gauss_fused_scores15; ENTMAXKV_TAIL_SPEC=0 launches the general ones) and reads before
# griddepcontrol.wait (tail: task + running maxima; topk_select: length; scores after a
# selection: row, length, queries). A/B: new (spec on) / new (spec off) / old binary (HEAD
# 1fb08a6), alternated twice; tail phase clocks; then a subset of gpu_decode.
cd "$(dirname "$0")"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 ))s] $*"; }
{ date -u; nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader; } > $OUT/card.txt; cat $OUT/card.txt
timeout 100 python3 sdpa_baseline.py --contexts 32K,64K,128K,256K,512K --batch 1 --heads 8 --head-dim 64 --iters 50 --json $OUT/sdpa.json > $OUT/sdpa.log 2>&1; echo "sdpa rc=$?"
grep -E "^ *[0-9]" $OUT/sdpa.log | cut -c1-60
run() { # name binary ctx methods env...
  local n=$1 bin=$2 cx=$3 me=$4; shift 4
  env "$@" timeout 100 ./$bin bench --device cuda --preset figure --contexts $cx --methods $me --budget 0.125 --iters 30 --warmup 3 --no-accuracy --sdpa-json $OUT/sdpa.json --json $OUT/b_$n.json > $OUT/b_$n.log 2>&1
  echo "$n rc=$?"
  grep -E "^  (topk|gauss|dense)" $OUT/b_$n.log | cut -c1-60
}
C=32K,64K,128K,256K,512K
M=topk,gaussian-exact,dense-entmax
el warm
run W entmaxkv 32K topk,gaussian-exact > /dev/null
run Wo entmaxkv_old 32K topk,gaussian-exact > /dev/null
el bench
for r in a b; do
  run N$r entmaxkv $C $M
  run S$r entmaxkv $C $M ENTMAXKV_TAIL_SPEC=0
  run O$r entmaxkv_old $C $M
done
el profile
run PN entmaxkv 32K topk,dense-entmax ENTMAXKV_PROFILE_TAIL=1 > /dev/null
run PS entmaxkv 32K topk,dense-entmax ENTMAXKV_PROFILE_TAIL=1 ENTMAXKV_TAIL_SPEC=0 > /dev/null
grep -iE "tail|clock|phase" $OUT/b_PN.log $OUT/b_PS.log | cut -c1-220 | head -12
el tests
( timeout 200 ./gpu_decode --test-threads=6 every_method_alpha topk gaussian_fused_and gaussian_selection_matches_cpu certified_matches_dense_short budgets_at_or_above 2>&1; echo "rc=$?" ) > $OUT/t_sub.log
grep -E "test result|rc=|panicked|worst|FAILED|^test " $OUT/t_sub.log | cut -c1-200
el done
cd $OUT && tar czf ../r.tgz . && find . -type f -delete && mv ../r.tgz .
