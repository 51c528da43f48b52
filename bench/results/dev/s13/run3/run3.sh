#!/bin/bash
# Session 13 dev run 3: fused plan sized to one wave with its solvers; the solver warms its
# code while the chunks publish. Profile, then fused vs separate alternated.
cd "$(dirname "$0")"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 ))s] $*"; }
{ date -u; nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; } > $OUT/card.txt; cat $OUT/card.txt
timeout 120 python3 sdpa_baseline.py --contexts 32K,64K,128K --batch 1 --heads 8 --head-dim 64 --iters 50 --json $OUT/sdpa.json > $OUT/sdpa.log 2>&1; echo "sdpa rc=$?"
run() { # name ctx alphas methods env...
  local n=$1 cx=$2 al=$3 me=$4; shift 4
  env "$@" timeout 60 ./entmaxkv bench --device cuda --preset figure --contexts $cx --alpha $al --methods $me --iters 30 --warmup 3 --no-accuracy --sdpa-json $OUT/sdpa.json --json $OUT/b_$n.json > $OUT/b_$n.log 2>&1
  echo "$n rc=$? $(grep '^  [a-z]' $OUT/b_$n.log | cut -c26-45 | sed 's/  */ /g' | paste -sd'|')"
}
run P 32K,64K,128K 1.5 gaussian-exact ENTMAXKV_PROFILE_TAIL=1
grep -E "fused|gaussian-exact a" $OUT/b_P.log | cut -c1-250
for r in a b; do
  run F$r 32K,64K,128K 1.5,2 gaussian-exact
  run S$r 32K,64K,128K 1.5,2 gaussian-exact ENTMAXKV_GAUSS_FUSED=0
done
run D 32K,64K,128K 1.5 dense-entmax
grep "^  gauss" $OUT/b_Fa.log | cut -c1-250
el done
cd $OUT && tar czf ../r.tgz . && find . -type f -delete && mv ../r.tgz .
