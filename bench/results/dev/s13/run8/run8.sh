#!/bin/bash
# Session 13 dev run 8: τ̂ from the host's table of t*(c) (tau::TstarTable) instead of the
# device's Newton on erfcx; A/B against ENTMAXKV_TSTAR=0, separate and fused paths; the
# Gaussian tests (τ̂ against the CPU, fixed τ mode uses τ̂ as is); then gpu_decode.
cd "$(dirname "$0")"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 ))s] $*"; }
{ date -u; nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; } > $OUT/card.txt; cat $OUT/card.txt
timeout 120 python3 sdpa_baseline.py --contexts 32K,64K,128K,1M --batch 1 --heads 8 --head-dim 64 --iters 50 --json $OUT/sdpa.json > $OUT/sdpa.log 2>&1; echo "sdpa rc=$?"
run() { # name ctx alphas methods env...
  local n=$1 cx=$2 al=$3 me=$4; shift 4
  env "$@" timeout 90 ./entmaxkv bench --device cuda --preset figure --contexts $cx --alpha $al --methods $me --iters 30 --warmup 3 --no-accuracy --sdpa-json $OUT/sdpa.json --json $OUT/b_$n.json > $OUT/b_$n.log 2>&1
  echo "$n rc=$? $(grep '^  [a-z]' $OUT/b_$n.log | cut -c26-45 | sed 's/  */ /g' | paste -sd'|')"
}
run P 32K,128K 1.5 gaussian-exact ENTMAXKV_PROFILE_TAIL=1
grep -E "fused|gaussian-exact a" $OUT/b_P.log | cut -c1-250
for r in a b; do
  run T$r 32K,64K,128K,1M 1.5 gaussian-exact
  run N$r 32K,64K,128K,1M 1.5 gaussian-exact ENTMAXKV_TSTAR=0
done
run T2 32K,1M 2,1.3333333333333333 gaussian-exact
run N2 32K,1M 2,1.3333333333333333 gaussian-exact ENTMAXKV_TSTAR=0
grep "^  gauss" $OUT/b_Ta.log $OUT/b_Na.log | cut -c1-240
el tests
( timeout 200 ./gpu_decode --test-threads=4 gaussian_selection_matches_cpu gaussian_fused_and gaussian_fixed_and_corrected gaussian_robust_matches_cpu 2>&1; echo "rc=$?" ) > $OUT/t_gauss.log
grep -E "test result|rc=|panicked|worst|FAILED" $OUT/t_gauss.log | cut -c1-300
LEFT=$(( 560 - $(date +%s) + T0 ))
el "gpu_decode (${LEFT}s)"
( timeout $LEFT ./gpu_decode --test-threads=8 2>&1; echo "gpu_decode rc=$?" ) > $OUT/tests.log
grep -E "test result|rc=|panicked|worst|FAILED" $OUT/tests.log | cut -c1-200
el done
cd $OUT && tar czf ../r.tgz . && find . -type f -delete && mv ../r.tgz .
