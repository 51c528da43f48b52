#!/bin/bash
# Session 7 dev run E: the fused box pass (commit in BENCHMARKS): gpu_decode (19 tests),
# robust timing: the recorded binary (90e7895) against the new one, fused and not.
cd "$(dirname "$0")"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
T0=$(date +%s); R=$OUT/run.log
el() { echo "[$(( $(date +%s) - T0 ))s] $*" | tee -a $R; }
{ date -u; nvidia-smi --query-gpu=name,driver_version --format=csv; } >> $R 2>&1
el tests
( timeout 330 ./gpu_decode --test-threads=8 2>&1; echo "gpu_decode rc=$?" ) > $OUT/tests.log
grep -E "^test |test result|rc=|panicked|worst" $OUT/tests.log | grep -v "running for over" | cut -c1-400 | tee -a $R
grep -A12 "panicked" $OUT/tests.log | head -40 | tee -a $R
RB="--device cuda --preset figure --iters 10 --warmup 2 --no-accuracy --contexts 32K,128K,1M --methods gaussian-robust"
el "robust recorded (90e7895)"
timeout 45 ./entmaxkv_rec bench $RB --json $OUT/robust_rec.json > $OUT/robust_rec.log 2>&1
grep "^  " $OUT/robust_rec.log | cut -c1-120 | tee -a $R
for f in 1 0; do
  el "robust new ROB_FUSE=$f"
  ENTMAXKV_ROB_FUSE=$f timeout 45 ./entmaxkv bench $RB --json $OUT/robust_fuse$f.json > $OUT/robust_fuse$f.log 2>&1
  grep "^  " $OUT/robust_fuse$f.log | cut -c1-120 | tee -a $R
done
el "memcheck"
( timeout 100 compute-sanitizer --tool memcheck --error-exitcode 9 ./gpu_decode --test-threads=1 gaussian_robust_sink 2>&1; echo "memcheck rc=$?" ) > $OUT/memcheck.log
grep -E "ERROR SUMMARY|rc=|test result|panicked" $OUT/memcheck.log | tail -4 | tee -a $R
el done
