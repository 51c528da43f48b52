#!/bin/bash
# Session 14 dev run 2: the fused Gaussian step, third form (moment CTAs of ppb pages, the
# last solves τ̂ only; chunks keep-test their own pages after the K pass and keep candidates
# of kept pages against the running kept maximum; the last chunk writes the kept list and
# the τ clamp). A/B against the first form (old binary, HEAD 8107805); ppb and wave variants;
# α = 2 fused vs separate; the robust criterion with the τ̂ table (ENTMAXKV_TSTAR=2) vs
# Newton; then the Gaussian tests.
cd "$(dirname "$0")"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 ))s] $*"; }
{ date -u; nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; } > $OUT/card.txt; cat $OUT/card.txt
timeout 120 python3 sdpa_baseline.py --contexts 32K,64K,128K,1M --batch 1 --heads 8 --head-dim 64 --iters 50 --json $OUT/sdpa.json > $OUT/sdpa.log 2>&1; echo "sdpa rc=$?"
run() { # name binary ctx alphas methods env...
  local n=$1 bin=$2 cx=$3 al=$4 me=$5; shift 5
  env "$@" timeout 90 ./$bin bench --device cuda --preset figure --contexts $cx --alpha $al --methods $me --iters 30 --warmup 3 --no-accuracy --sdpa-json $OUT/sdpa.json --json $OUT/b_$n.json > $OUT/b_$n.log 2>&1
  echo "$n rc=$? $(grep '^  [a-z]' $OUT/b_$n.log | cut -c26-45 | sed 's/  */ /g' | paste -sd'|')"
}
C=32K,64K,128K
el bench
run P entmaxkv 32K,64K 1.5 gaussian-exact ENTMAXKV_PROFILE_TAIL=1
grep -E "fused|gaussian-exact a" $OUT/b_P.log | cut -c1-250
for r in a b; do
  run N$r entmaxkv $C 1.5 gaussian-exact,dense-entmax
  run O$r entmaxkv_old $C 1.5 gaussian-exact
  run Q$r entmaxkv $C 1.5 gaussian-exact ENTMAXKV_GAUSS_FUSED_PPB=64
  run R$r entmaxkv $C 1.5 gaussian-exact ENTMAXKV_GAUSS_FUSED_PPB=256
  run W$r entmaxkv $C 1.5 gaussian-exact ENTMAXKV_GAUSS_FUSED_WAVE=2
done
run F2 entmaxkv 32K,64K 2 gaussian-exact ENTMAXKV_GAUSS_FUSED=1048576
run S2 entmaxkv 32K,64K 2 gaussian-exact ENTMAXKV_GAUSS_FUSED=0
run P2 entmaxkv 32K,64K 1.5 gaussian-exact ENTMAXKV_PROFILE_TAIL=1 ENTMAXKV_GAUSS_FUSED_PPB=64
grep -E "fused" $OUT/b_P2.log | cut -c1-250
for r in a b; do
  run RN$r entmaxkv 32K,128K,1M 1.5 gaussian-robust
  run RT$r entmaxkv 32K,128K,1M 1.5 gaussian-robust ENTMAXKV_TSTAR=2
done
for f in $OUT/b_Na.log $OUT/b_Oa.log $OUT/b_RNa.log $OUT/b_RTa.log; do echo "== $f"; grep -E "^  (gauss|dense)" $f | cut -c1-220; done
el tests
( timeout 240 ./gpu_decode --test-threads=4 gaussian_fused_and gaussian_selection_matches_cpu gaussian_fixed_and_corrected 2>&1; echo "rc=$?" ) > $OUT/t_gauss.log
grep -E "test result|rc=|panicked|worst|FAILED|^test " $OUT/t_gauss.log | cut -c1-300
el done
cd $OUT && tar czf ../r.tgz . && find . -type f -delete && mv ../r.tgz .
