#!/bin/bash
# Session 13 dev run 2: the fused filter's page pass with its loads in flight; global-timer
# phase stamps of the fused kernels (ENTMAXKV_PROFILE_TAIL); fused vs separate alternated.
cd "$(dirname "$0")"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export PYTHONUNBUFFERED=1
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 ))s] $*"; }
{ date -u; nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; } > $OUT/card.txt; cat $OUT/card.txt
timeout 120 python3 sdpa_baseline.py --contexts 32K,64K,128K,256K --batch 1 --heads 8 --head-dim 64 --iters 50 --json $OUT/sdpa.json > $OUT/sdpa.log 2>&1; echo "sdpa rc=$?"
run() { # name ctx alphas methods env...
  local n=$1 cx=$2 al=$3 me=$4; shift 4
  env "$@" timeout 60 ./entmaxkv bench --device cuda --preset figure --contexts $cx --alpha $al --methods $me --iters 30 --warmup 3 --no-accuracy --sdpa-json $OUT/sdpa.json --json $OUT/b_$n.json > $OUT/b_$n.log 2>&1
  echo "$n rc=$? $(grep '^  [a-z]' $OUT/b_$n.log | cut -c1-60 | sed 's/  */ /g' | paste -sd'|')"
}
run P 32K,64K,128K 1.5 gaussian-exact ENTMAXKV_GAUSS_FUSED=262144 ENTMAXKV_PROFILE_TAIL=1
grep -E "fused|gaussian|tail clocks" $OUT/b_P.log | cut -c1-250
for r in a b c; do
  run F$r 32K,64K,128K,256K 1.5 gaussian-exact ENTMAXKV_GAUSS_FUSED=262144
  run S$r 32K,64K,128K,256K 1.5 gaussian-exact ENTMAXKV_GAUSS_FUSED=0
done
grep "^  gauss" $OUT/b_Fa.log | cut -c1-250
el tests
( timeout 200 ./gpu_decode --exact gaussian_fused_and_separate_steps_agree 2>&1; echo "rc=$?" ) > $OUT/t_fused.log
grep -E "test result|rc=|panicked|worst|FAILED" $OUT/t_fused.log | cut -c1-300
el done
cd $OUT && tar czf ../r.tgz . && find . -type f -delete && mv ../r.tgz .
