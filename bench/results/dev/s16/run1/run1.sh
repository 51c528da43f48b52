#!/bin/bash
# Session 16 dev run 1 (H100): the tail filtering the raw chunk lists itself
# (ENTMAXKV_TAIL_FILTER: 1 default = where the refilter does not run, 0 never = the filter
# launch as before, 2 also where the refilter would run), alternated twice; the K pass with
# chunks of up to 256 pages (ENTMAXKV_PPC_LIM=256) on long dense lists; the PTX disk cache
# (first process compiles, later ones read it).
cd "$(dirname "$0")"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export ENTMAXKV_PTX_CACHE=/tmp/entmaxkv_ptx
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 ))s] $*"; }
{ date -u; nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader; } > $OUT/card.txt; cat $OUT/card.txt
timeout 100 python3 sdpa_baseline.py --contexts 32K,64K,128K,256K,512K,1M --batch 1 --heads 8 --head-dim 64 --iters 50 --json $OUT/sdpa.json > $OUT/sdpa.log 2>&1; echo "sdpa rc=$?"
grep -E "ctx" $OUT/sdpa.log | cut -c1-60
run() { # name ctx methods env...
  local n=$1 cx=$2 me=$3; shift 3
  local t1=$(date +%s.%N)
  env "$@" timeout 150 ./entmaxkv bench --device cuda --preset figure --contexts $cx --methods $me --budget 0.125 --iters 30 --warmup 3 --no-accuracy --sdpa-json $OUT/sdpa.json --json $OUT/b_$n.json > $OUT/b_$n.log 2>&1
  local rc=$?
  echo "$n rc=$rc $(awk "BEGIN{printf \"%.1f\", $(date +%s.%N) - $t1}")s $(grep -E '^  (topk|gauss|dense)' $OUT/b_$n.log | cut -c26-34 | paste -sd' ')"
}
el "ptx cache: compile, then read"
run W0 32K topk,dense-entmax
run W1 32K topk,dense-entmax
ls $ENTMAXKV_PTX_CACHE | head; du -sh $ENTMAXKV_PTX_CACHE
el ab-short
for r in a b; do
  run F1$r 32K,64K,128K topk,gaussian-exact,dense-entmax
  run F0$r 32K,64K,128K topk,gaussian-exact,dense-entmax ENTMAXKV_TAIL_FILTER=0
done
el ab-long
for r in a b; do
  run L1$r 256K,512K dense-entmax
  run L2$r 256K,512K dense-entmax ENTMAXKV_TAIL_FILTER=2
  run L0$r 256K,512K dense-entmax ENTMAXKV_TAIL_FILTER=0
  run LP$r 256K,512K dense-entmax ENTMAXKV_PPC_LIM=256
done
el ab-1M
run M1 1M topk,gaussian-exact
run M0 1M topk,gaussian-exact ENTMAXKV_TAIL_FILTER=0
el alpha
timeout 60 ./entmaxkv bench --device cuda --preset figure --contexts 32K,128K --methods topk,gaussian-exact,dense-entmax --alpha 2 --budget 0.125 --iters 30 --warmup 3 --no-accuracy --sdpa-json $OUT/sdpa.json --json $OUT/b_A2.json > $OUT/b_A2.log 2>&1; echo "a2 rc=$?"
grep "^  [a-z]" $OUT/b_A2.log | cut -c1-100
el done
cd $OUT && tar czf ../r.tgz . && find . -type f -delete && mv ../r.tgz .
