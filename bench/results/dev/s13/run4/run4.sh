#!/bin/bash
# Session 13 dev run 4: gauss_mk_pair and gauss_head not inlined (one copy of the τ̂ solve's
# code); solve / warm-up / merge durations in the fused profile. Separate path: this binary
# vs run 3's (inlined) alternated; fused vs separate.
cd "$(dirname "$0")"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 ))s] $*"; }
{ date -u; nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; } > $OUT/card.txt; cat $OUT/card.txt
timeout 120 python3 sdpa_baseline.py --contexts 32K,64K,128K,1M --batch 1 --heads 8 --head-dim 64 --iters 50 --json $OUT/sdpa.json > $OUT/sdpa.log 2>&1; echo "sdpa rc=$?"
run() { # name bin ctx alphas methods env...
  local n=$1 bin=$2 cx=$3 al=$4 me=$5; shift 5
  env "$@" timeout 90 ./$bin bench --device cuda --preset figure --contexts $cx --alpha $al --methods $me --iters 30 --warmup 3 --no-accuracy --sdpa-json $OUT/sdpa.json --json $OUT/b_$n.json > $OUT/b_$n.log 2>&1
  echo "$n rc=$? $(grep '^  [a-z]' $OUT/b_$n.log | cut -c26-45 | sed 's/  */ /g' | paste -sd'|')"
}
run P entmaxkv 32K,128K 1.5 gaussian-exact ENTMAXKV_GAUSS_FUSED=262144 ENTMAXKV_PROFILE_TAIL=1
grep -E "fused|gaussian-exact a" $OUT/b_P.log | cut -c1-250
for r in a b; do
  run O$r entmaxkv_old 32K,64K,128K,1M 1.5 gaussian-exact ENTMAXKV_GAUSS_FUSED=0
  run N$r entmaxkv 32K,64K,128K,1M 1.5 gaussian-exact ENTMAXKV_GAUSS_FUSED=0
  run F$r entmaxkv 32K,64K,128K 1.5 gaussian-exact
done
grep "^  gauss" $OUT/b_Oa.log $OUT/b_Na.log $OUT/b_Fa.log | cut -c1-260
el done
cd $OUT && tar czf ../r.tgz . && find . -type f -delete && mv ../r.tgz .
