#!/bin/bash
# Session 7 dev run B: the whole GPU test suite on the build with parallel module compiles.
cd "$(dirname "$0")"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
T0=$(date +%s); R=$OUT/run.log
el() { echo "[$(( $(date +%s) - T0 ))s] $*" | tee -a $R; }
{ date -u; nvidia-smi --query-gpu=name,driver_version --format=csv; } >> $R 2>&1
el tests
( timeout 420 ./gpu_decode --test-threads=8 2>&1; echo "gpu_decode rc=$?" ) > $OUT/tests.log
el "gpu_decode done"
( timeout 100 ./gpu_cache --test-threads=4 2>&1; echo "gpu_cache rc=$?" ) >> $OUT/tests.log
( timeout 60 ./gpu_oom 2>&1; echo "gpu_oom rc=$?" ) >> $OUT/tests.log
grep -E "^test |test result|rc=|panicked|worst" $OUT/tests.log | cut -c1-400 | tee -a $R
el "memcheck"
( timeout 100 compute-sanitizer --tool memcheck --error-exitcode 9 ./gpu_decode --test-threads=1 budgets_at_or_above_the_cache 2>&1; echo "memcheck rc=$?" ) > $OUT/memcheck.log
grep -E "ERROR SUMMARY|rc=|test result|panicked" $OUT/memcheck.log | tail -4 | tee -a $R
el done
