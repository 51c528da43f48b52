#!/bin/bash
# Session 6 recorded run, part A: correctness (tests, check, sanitizers).
cd "$(dirname "$0")"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
R=$OUT/run.log; T0=$(date +%s)
el() { echo "[$(( $(date +%s) - T0 ))s] $*" | tee -a $R; }
{ date -u; nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,clocks.mem --format=csv; nproc; } >> $R 2>&1
el "tests"
( timeout 420 ./gpu_decode --test-threads=4 2>&1; echo "gpu_decode rc=$?" ) > $OUT/tests.log
( timeout 100 ./gpu_cache --test-threads=4 2>&1; echo "gpu_cache rc=$?" ) >> $OUT/tests.log
( timeout 60 ./gpu_oom 2>&1; echo "gpu_oom rc=$?" ) >> $OUT/tests.log
grep -E "^test |test result|rc=|panicked|worst" $OUT/tests.log | cut -c1-600 | tee -a $R
grep -A8 "panicked" $OUT/tests.log | head -40 | tee -a $R
el "memcheck"
( timeout 90 compute-sanitizer --tool memcheck --error-exitcode 9 ./gpu_decode --test-threads=1 gaussian_robust_matches_cpu 2>&1; echo "memcheck rc=$?" ) > $OUT/memcheck.log
grep -E "ERROR SUMMARY|rc=|test result|panicked" $OUT/memcheck.log | tail -4 | tee -a $R
el "racecheck"
( timeout 60 compute-sanitizer --tool racecheck --error-exitcode 9 ./gpu_decode --test-threads=1 gaussian_robust_sink 2>&1; echo "racecheck rc=$?" ) > $OUT/racecheck.log
grep -E "ERROR SUMMARY|RACECHECK SUMMARY|rc=|test result|panicked" $OUT/racecheck.log | tail -4 | tee -a $R
el done
( cd $OUT && tar czf ../results.tgz . && find . -type f -delete && mv ../results.tgz . )
