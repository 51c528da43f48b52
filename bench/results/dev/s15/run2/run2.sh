#!/bin/bash
# Session 15 dev run 2 (H100): run 1 found attn_entmax_scores slower after a selection with
# its reads before griddepcontrol.wait (pre_wait 1: row, length, queries). A/B of
# ENTMAXKV_PRE_WAIT 1 / 2 (row and length only) / 0 (none) against the old binary (HEAD
# 1fb08a6), alternated twice, top-k and Gaussian 32K–512K; dense entmax 128K–1M new / old;
# then the standing sweep (every method, 32K–1M, SDPA in the same run) and α = 2.
cd "$(dirname "$0")"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 ))s] $*"; }
{ date -u; nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader; } > $OUT/card.txt; cat $OUT/card.txt
timeout 100 python3 sdpa_baseline.py --contexts 32K,64K,128K,256K,512K,1M --batch 1 --heads 8 --head-dim 64 --iters 50 --json $OUT/sdpa.json > $OUT/sdpa.log 2>&1; echo "sdpa rc=$?"
grep -E "ctx" $OUT/sdpa.log | cut -c1-60
run() { # name binary ctx methods env...
  local n=$1 bin=$2 cx=$3 me=$4; shift 4
  env "$@" timeout 120 ./$bin bench --device cuda --preset figure --contexts $cx --methods $me --budget 0.125 --iters 30 --warmup 3 --no-accuracy --sdpa-json $OUT/sdpa.json --json $OUT/b_$n.json > $OUT/b_$n.log 2>&1
  echo "$n rc=$? $(grep -E '^  (topk|gauss|dense)' $OUT/b_$n.log | cut -c26-34 | paste -sd' ')"
}
C=32K,64K,128K,256K,512K
M=topk,gaussian-exact
el warm
run W entmaxkv 32K topk > /dev/null
run Wo entmaxkv_old 32K topk > /dev/null
el ab
for r in a b; do
  run N$r entmaxkv $C $M
  run P2$r entmaxkv $C $M ENTMAXKV_PRE_WAIT=2
  run P0$r entmaxkv $C $M ENTMAXKV_PRE_WAIT=0
  run O$r entmaxkv_old $C $M
done
for r in a b; do
  run DN$r entmaxkv 128K,256K,512K,1M dense-entmax
  run DO$r entmaxkv_old 128K,256K,512K,1M dense-entmax
done
el standing
run ST entmaxkv 32K,64K,128K,256K,512K,1M dense-softmax,dense-entmax,topk,gaussian-exact,gaussian-robust,certified
grep "^  [a-z]" $OUT/b_ST.log | cut -c1-130
timeout 60 ./entmaxkv bench --device cuda --preset figure --contexts 32K,64K,1M --methods gaussian-exact --alpha 2 --iters 30 --warmup 3 --no-accuracy --sdpa-json $OUT/sdpa.json --json $OUT/b_A2.json > $OUT/b_A2.log 2>&1; echo "a2 rc=$?"
grep "^  gauss" $OUT/b_A2.log | cut -c1-110
el done
cd $OUT && tar czf ../r.tgz . && find . -type f -delete && mv ../r.tgz .
