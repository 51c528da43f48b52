#!/bin/bash
# Session 15 dev run 3 (H100): the lean τ solve ending with the closed-form root of a pass's
# support (ENTMAXKV_LEAN_CLOSED=0: Halley to convergence), with the α = 1.5 kernels and the
# scores pass reading row and length before the wait (run 2's mode 2, now the only one).
# A/B against the old binary (HEAD 1fb08a6), alternated twice; tail clocks; then the
# standing sweep (every method 32K–1M, SDPA in the same run) and α = 2.
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
el warm
run W entmaxkv 32K topk > /dev/null
run Wo entmaxkv_old 32K topk > /dev/null
el ab
for r in a b; do
  run N$r entmaxkv 32K,64K,128K topk,gaussian-exact,dense-entmax
  run L$r entmaxkv 32K,64K,128K topk,gaussian-exact,dense-entmax ENTMAXKV_LEAN_CLOSED=0
  run O$r entmaxkv_old 32K,64K,128K topk,gaussian-exact,dense-entmax
done
run PN entmaxkv 32K topk,dense-entmax ENTMAXKV_PROFILE_TAIL=1 > /dev/null
run PL entmaxkv 32K topk,dense-entmax ENTMAXKV_PROFILE_TAIL=1 ENTMAXKV_LEAN_CLOSED=0 > /dev/null
grep -h "tail clocks" $OUT/b_PN.log $OUT/b_PL.log | cut -c1-160
el standing
run ST entmaxkv 32K,64K,128K,256K,512K,1M dense-softmax,dense-entmax,topk,gaussian-exact,gaussian-robust,certified
grep "^  [a-z]" $OUT/b_ST.log | cut -c1-112
timeout 60 ./entmaxkv bench --device cuda --preset figure --contexts 32K,64K,1M --methods gaussian-exact,topk --alpha 2 --budget 0.125 --iters 30 --warmup 3 --no-accuracy --sdpa-json $OUT/sdpa.json --json $OUT/b_A2.json > $OUT/b_A2.log 2>&1; echo "a2 rc=$?"
grep "^  [a-z]" $OUT/b_A2.log | cut -c1-100
el done
cd $OUT && tar czf ../r.tgz . && find . -type f -delete && mv ../r.tgz .
