#!/bin/bash
# Session 14 dev run 1: the fused Gaussian step, second form (moment CTAs whose last solves
# and writes keep bits; chunks keep candidates of kept pages against the running kept max;
# attn_entmax_filter as in dense entmax). A/B against the first form (old binary, HEAD
# 8107805) and the separate path; then the Gaussian tests; the robust criterion with the
# τ̂ table (ENTMAXKV_TSTAR=2) with per-case progress.
cd "$(dirname "$0")"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 ))s] $*"; }
{ date -u; nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; } > $OUT/card.txt; cat $OUT/card.txt
timeout 120 python3 sdpa_baseline.py --contexts 32K,64K,128K,256K --batch 1 --heads 8 --head-dim 64 --iters 50 --json $OUT/sdpa.json > $OUT/sdpa.log 2>&1; echo "sdpa rc=$?"
run() { # name binary ctx alphas methods env...
  local n=$1 bin=$2 cx=$3 al=$4 me=$5; shift 5
  env "$@" timeout 90 ./$bin bench --device cuda --preset figure --contexts $cx --alpha $al --methods $me --iters 30 --warmup 3 --no-accuracy --sdpa-json $OUT/sdpa.json --json $OUT/b_$n.json > $OUT/b_$n.log 2>&1
  echo "$n rc=$? $(grep '^  [a-z]' $OUT/b_$n.log | cut -c26-45 | sed 's/  */ /g' | paste -sd'|')"
}
C=32K,64K,128K,256K
el bench
run P entmaxkv 32K,64K 1.5 gaussian-exact ENTMAXKV_PROFILE_TAIL=1
grep -E "fused|gaussian-exact a" $OUT/b_P.log | cut -c1-250
for r in a b; do
  run N$r entmaxkv $C 1.5 gaussian-exact,dense-entmax
  run O$r entmaxkv_old $C 1.5 gaussian-exact
  run F$r entmaxkv $C 1.5 gaussian-exact ENTMAXKV_GAUSS_FUSED=1048576
  run S$r entmaxkv $C 1.5 gaussian-exact ENTMAXKV_GAUSS_FUSED=0
done
run F2 entmaxkv 32K,64K,128K 2 gaussian-exact ENTMAXKV_GAUSS_FUSED=1048576
run S2 entmaxkv 32K,64K,128K 2 gaussian-exact ENTMAXKV_GAUSS_FUSED=0
run F3 entmaxkv 32K,64K 1.3333333333333333 gaussian-exact
run O3 entmaxkv_old 32K,64K 1.3333333333333333 gaussian-exact
for f in $OUT/b_[NOFS]a.log; do echo "== $f"; grep -E "^  (gauss|dense|SDPA|sdpa)" $f | cut -c1-200; done
el tests
( timeout 240 ./gpu_decode --test-threads=4 gaussian_fused_and gaussian_selection_matches_cpu gaussian_fixed_and_corrected 2>&1; echo "rc=$?" ) > $OUT/t_gauss.log
grep -E "test result|rc=|panicked|worst|FAILED|^test " $OUT/t_gauss.log | cut -c1-300
LEFT=$(( 570 - $(date +%s) + T0 ))
el "robust with the table (${LEFT}s)"
( ENTMAXKV_TSTAR=2 timeout $LEFT ./gpu_decode --test-threads=1 --nocapture gaussian_robust_matches_cpu 2>&1; echo "rc=$?" ) > $OUT/t_robust.log
grep -E "test result|rc=|panicked|worst|FAILED|robust" $OUT/t_robust.log | cut -c1-200
el done
cd $OUT && tar czf ../r.tgz . && find . -type f -delete && mv ../r.tgz .
