#!/bin/bash
# Session 13 run 6 (commit 869d793): the GPU tests with the separate Gaussian selection
# everywhere (ENTMAXKV_GAUSS_FUSED=0: gauss.cu's refactored moments / merge / head solve),
# gpu_cache, gpu_oom, memcheck and racecheck over the fused-vs-separate test (default plan).
cd "$(dirname "$0")"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 ))s] $*"; }
{ date -u; nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; } > $OUT/card.txt; cat $OUT/card.txt
( ENTMAXKV_GAUSS_FUSED=0 timeout 360 ./gpu_decode --test-threads=8 2>&1; echo "gpu_decode (GAUSS_FUSED=0) rc=$?" ) > $OUT/tests_separate.log
grep -E "test result|rc=|panicked|worst|FAILED" $OUT/tests_separate.log | cut -c1-200
el cache
( timeout 120 ./gpu_cache --test-threads=4 2>&1; echo "gpu_cache rc=$?"; timeout 60 ./gpu_oom 2>&1; echo "gpu_oom rc=$?" ) > $OUT/tests_cache.log
grep -E "test result|rc=" $OUT/tests_cache.log
CS=$(ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null || which compute-sanitizer)
el memcheck
( timeout 90 $CS --tool memcheck --error-exitcode 9 ./gpu_decode --exact gaussian_fused_and_separate_steps_agree --test-threads=1 2>&1; echo "memcheck rc=$?" ) > $OUT/memcheck_fused.log
grep -E "ERROR SUMMARY|rc=|test result" $OUT/memcheck_fused.log
if [ $(( $(date +%s) - T0 )) -lt 430 ]; then
  ( timeout $(( 560 - $(date +%s) + T0 )) $CS --tool racecheck --error-exitcode 9 ./gpu_decode --exact gaussian_fused_and_separate_steps_agree --test-threads=1 2>&1; echo "racecheck rc=$?" ) > $OUT/racecheck_fused.log
  grep -E "HAZARD|ERROR SUMMARY|RACECHECK SUMMARY|rc=|test result" $OUT/racecheck_fused.log | head -5
fi
el done
cd $OUT && tar czf ../r.tgz . && find . -type f -delete && mv ../r.tgz .
