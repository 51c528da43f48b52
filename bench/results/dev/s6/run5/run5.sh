#!/bin/bash
# Session 6 device run 5: gpu-robust-fast (merged onto main): robust tests, sanitizers, robust bench vs the recorded build.
cd "$(dirname "$0")/s6r"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
R=$OUT/run.log; T0=$(date +%s)
el() { echo "[$(( $(date +%s) - T0 ))s] $*" | tee -a $R; }
{ date -u; nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv; } >> $R 2>&1
el "robust + unsupported tests"
( timeout 200 ./gpu_decode --test-threads=4 robust unsupported 2>&1; echo "gpu_decode rc=$?" ) > $OUT/tests.log
grep -E "^test |test result|rc=|panicked|worst" $OUT/tests.log | cut -c1-400 | tee -a $R
grep -A6 "panicked" $OUT/tests.log | head -20 | tee -a $R
el "memcheck"
( timeout 90 compute-sanitizer --tool memcheck --error-exitcode 9 ./gpu_decode --test-threads=1 gaussian_robust_matches_cpu 2>&1; echo "memcheck rc=$?" ) > $OUT/memcheck.log
grep -E "ERROR SUMMARY|rc=|test result" $OUT/memcheck.log | tail -3 | tee -a $R
el "racecheck"
( timeout 60 compute-sanitizer --tool racecheck --error-exitcode 9 ./gpu_decode --test-threads=1 gaussian_robust_sink 2>&1; echo "racecheck rc=$?" ) > $OUT/racecheck.log
grep -E "RACECHECK SUMMARY|ERROR SUMMARY|rc=|test result" $OUT/racecheck.log | tail -3 | tee -a $R
for v in entmaxkv_prev entmaxkv; do
  el "bench $v"
  timeout 90 ./$v bench --device cuda --preset figure --contexts 32K,128K,1M --methods gaussian-exact,gaussian-robust --iters 10 --warmup 2 --no-accuracy --json $OUT/robust_$v.json > $OUT/robust_$v.log 2>&1
  grep "^  " $OUT/robust_$v.log | cut -c1-400 | tee -a $R
done
el done
( cd $OUT && tar czf ../results.tgz . && find . -type f -delete && mv ../results.tgz . )
