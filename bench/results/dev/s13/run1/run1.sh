#!/bin/bash
# Session 13 dev run 1: the Gaussian step fused with the K pass (kernels/gauss_fused.cu).
# Fused vs separate (ENTMAXKV_GAUSS_FUSED=262144 / 0) alternated, SDPA in the same run;
# accuracy vs the f64 oracle; the fused-vs-separate test, the Gaussian tests, memcheck.
cd "$(dirname "$0")"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export PYTHONUNBUFFERED=1
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 ))s] $*"; }
{ date -u; nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; } > $OUT/card.txt; cat $OUT/card.txt
( timeout 150 ./gpu_decode --exact gaussian_fused_and_separate_steps_agree 2>&1; echo "rc=$?" ) > $OUT/t_fused.log
grep -E "test result|rc=|panicked|worst|FAILED" $OUT/t_fused.log | cut -c1-300
el sdpa
timeout 120 python3 sdpa_baseline.py --contexts 32K,64K,128K,256K --batch 1 --heads 8 --head-dim 64 --iters 50 --json $OUT/sdpa.json > $OUT/sdpa.log 2>&1; echo "sdpa rc=$?"
run() { # name alphas methods env...
  local n=$1 al=$2 me=$3; shift 3
  env "$@" timeout 60 ./entmaxkv bench --device cuda --preset figure --contexts 32K,64K,128K,256K --alpha $al --methods $me --iters 30 --warmup 3 --no-accuracy --sdpa-json $OUT/sdpa.json --json $OUT/b_$n.json > $OUT/b_$n.log 2>&1
  echo "$n rc=$? $(grep '^  [a-z]' $OUT/b_$n.log | cut -c1-60 | sed 's/  */ /g' | paste -sd'|')"
}
for r in a b c; do
  run F$r 1.5 gaussian-exact ENTMAXKV_GAUSS_FUSED=262144
  run S$r 1.5 gaussian-exact ENTMAXKV_GAUSS_FUSED=0
done
run F2 2,1.3333333333333333 gaussian-exact ENTMAXKV_GAUSS_FUSED=262144
run S2 2,1.3333333333333333 gaussian-exact ENTMAXKV_GAUSS_FUSED=0
run D 1.5 dense-entmax
el acc
timeout 90 ./entmaxkv bench --device cuda --preset figure --contexts 32K,128K --methods gaussian-exact --alpha 1.5 --iters 5 --warmup 2 --json $OUT/acc.json > $OUT/acc.log 2>&1; echo "acc rc=$?"; grep "^  [a-z]" $OUT/acc.log | cut -c1-220
el tests
( timeout 200 ./gpu_decode --exact gaussian_selection_matches_cpu 2>&1; echo "rc=$?" ) > $OUT/t_gauss.log
grep -E "test result|rc=|panicked|worst|FAILED" $OUT/t_gauss.log | cut -c1-300
CS=$(ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null || which compute-sanitizer)
if [ $(( $(date +%s) - T0 )) -lt 470 ]; then
  ( timeout 110 $CS --tool memcheck --error-exitcode 9 ./gpu_decode --exact gaussian_fused_and_separate_steps_agree --test-threads=1 2>&1; echo "memcheck rc=$?" ) > $OUT/memcheck.log
  grep -E "ERROR SUMMARY|rc=|test result" $OUT/memcheck.log
fi
el done
cd $OUT && tar czf ../r.tgz . && find . -type f -delete && mv ../r.tgz .
