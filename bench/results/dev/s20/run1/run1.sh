#!/bin/bash
# Session 20 run 1 (H200): (1) the non-finite report (status word; new test, then the whole
# gpu_decode suite); (2) an A/B of bulk L2 prefetches in the K pass (SCORES_L2PF=1/2, with
# SCORES_MIN_CTAS=4 to hold 4 CTAs an SM) against the default, alternated; (3) the K pass's
# per-CTA phase stamps (SCORES_PROF=1, ENTMAXKV_PROFILE_SCORES) at 128K and 1M.
cd "$(dirname "$0")"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export ENTMAXKV_PTX_CACHE=/tmp/entmaxkv_ptx
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 ))s] $*"; }
{ date -u; nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,memory.total --format=csv,noheader; } > $OUT/card.txt; cat $OUT/card.txt
el newtest
( timeout 120 ./gpu_decode --exact non_finite_scores_are_reported_and_do_not_persist 2>&1; echo "rc=$?" ) > $OUT/test_nonfinite.log
grep -E "^test |test result|rc=|panicked|assert" $OUT/test_nonfinite.log | cut -c1-220
el sdpa
timeout 60 python3 sdpa_baseline.py --contexts 32K,128K,256K,1M --batch 1 --heads 8 --head-dim 64 --iters 50 --json $OUT/sdpa.json > $OUT/sdpa.log 2>&1
grep ctx $OUT/sdpa.log | cut -c1-100
B="--device cuda --preset figure --iters 30 --warmup 3 --no-accuracy --sdpa-json $OUT/sdpa.json"
run() { # name contexts methods env...
  local n=$1 c=$2 m=$3; shift 3
  LEFT=$(( 330 - $(date +%s) + T0 )); [ $LEFT -lt 15 ] && { echo "$n skipped"; return; }
  env "$@" timeout $LEFT ./entmaxkv bench $B --contexts $c --methods $m --budget 0.125 --json $OUT/b_$n.json > $OUT/b_$n.log 2>&1
  echo "$n rc=$? | $(grep -E '^  [a-z]' $OUT/b_$n.log | awk '{print $1, $3}' | paste -sd' ') | $(grep -o 'attn_entmax_scores [0-9.]*' $OUT/b_$n.log | paste -sd' ')"
}
el ab
for r in a b; do
  run D$r 128K,1M dense-entmax,topk,gaussian-exact
  run P1$r 128K,1M dense-entmax,topk,gaussian-exact ENTMAXKV_DEFINES="SCORES_L2PF=1 SCORES_MIN_CTAS=4"
  run P2$r 128K,1M dense-entmax,topk,gaussian-exact ENTMAXKV_DEFINES="SCORES_L2PF=2 SCORES_MIN_CTAS=4"
  [ $r = a ] && run M4$r 128K,1M dense-entmax ENTMAXKV_DEFINES="SCORES_MIN_CTAS=4"
done
el prof
run PR0 128K,1M dense-entmax,gaussian-exact ENTMAXKV_DEFINES="SCORES_PROF=1" ENTMAXKV_PROFILE_SCORES=1
grep "scores profile" $OUT/b_PR0.log | cut -c1-260
run PR1 128K,1M dense-entmax,gaussian-exact ENTMAXKV_DEFINES="SCORES_PROF=1 SCORES_L2PF=1 SCORES_MIN_CTAS=4" ENTMAXKV_PROFILE_SCORES=1
grep "scores profile" $OUT/b_PR1.log | cut -c1-260
LEFT=$(( 575 - $(date +%s) + T0 ))
el "gpu_decode (${LEFT}s)"
( timeout $LEFT ./gpu_decode --test-threads=4 2>&1; echo "rc=$?" ) > $OUT/tests_decode.log
grep -E "^test |test result|rc=|panicked" $OUT/tests_decode.log | cut -c1-200
el done
cd $OUT && tar czf ../r.tgz . && find . -type f -delete && mv ../r.tgz .
