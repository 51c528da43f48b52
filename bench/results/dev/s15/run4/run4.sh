#!/bin/bash
# Session 15 test run (H100): gpu_decode, gpu_cache, gpu_oom on the committed kernels;
# compute-sanitizer memcheck over the fused test (gauss_fused_scores15, the tail's lean
# closed form) and racecheck over the budgets test (the lean path).
cd "$(dirname "$0")"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 ))s] $*"; }
{ date -u; nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; } > $OUT/card.txt; cat $OUT/card.txt
( timeout 340 ./gpu_decode --test-threads=8 2>&1; echo "gpu_decode rc=$?" ) > $OUT/tests.log
grep -E "test result|rc=|panicked|worst|FAILED|running for" $OUT/tests.log | cut -c1-200
el cache
( timeout 60 ./gpu_cache --test-threads=4 2>&1; echo "gpu_cache rc=$?"; timeout 40 ./gpu_oom 2>&1; echo "gpu_oom rc=$?" ) > $OUT/tests_cache.log
grep -E "test result|rc=" $OUT/tests_cache.log
CS=$(ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null || which compute-sanitizer)
el memcheck
( timeout 75 $CS --tool memcheck --error-exitcode 9 ./gpu_decode --exact gaussian_fused_and_separate_steps_agree --test-threads=1 2>&1; echo "memcheck rc=$?" ) > $OUT/memcheck_fused.log
grep -E "ERROR SUMMARY|rc=|test result" $OUT/memcheck_fused.log
LEFT=$(( 585 - $(date +%s) + T0 ))
el "racecheck (${LEFT}s)"
if [ $LEFT -gt 30 ]; then ( timeout $LEFT $CS --tool racecheck --error-exitcode 9 ./gpu_decode --exact budgets_at_or_above_the_cache_keep_everything --test-threads=1 2>&1; echo "racecheck rc=$?" ) > $OUT/racecheck.log; grep -E "RACECHECK SUMMARY|rc=|test result" $OUT/racecheck.log; fi
el done
cd $OUT && tar czf ../r.tgz . && find . -type f -delete && mv ../r.tgz .
