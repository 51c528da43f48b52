#!/bin/bash
# Session 13 dev run 5: the fused Gaussian step without the warm-up, one wave (default) vs
# the attention's chunks (ENTMAXKV_GAUSS_FUSED_WAVE=0) vs the separate selection; then
# gpu_decode with the fused path (the default for every short Gaussian test case).
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
run P 32K,64K 1.5 gaussian-exact ENTMAXKV_PROFILE_TAIL=1
grep -E "fused|gaussian-exact a" $OUT/b_P.log | cut -c1-250
for r in a b; do
  run W$r 32K,64K,128K 1.5 gaussian-exact ENTMAXKV_GAUSS_FUSED=262144
  run C$r 32K,64K,128K 1.5 gaussian-exact ENTMAXKV_GAUSS_FUSED=262144 ENTMAXKV_GAUSS_FUSED_WAVE=0
  run S$r 32K,64K,128K 1.5 gaussian-exact ENTMAXKV_GAUSS_FUSED=0
done
grep "^  gauss" $OUT/b_Wa.log $OUT/b_Ca.log | cut -c1-260
el tests
( timeout 360 ./gpu_decode --test-threads=8 2>&1; echo "gpu_decode rc=$?" ) > $OUT/tests.log
grep -E "test result|rc=|panicked|worst|FAILED" $OUT/tests.log | cut -c1-200
el done
cd $OUT && tar czf ../r.tgz . && find . -type f -delete && mv ../r.tgz .
