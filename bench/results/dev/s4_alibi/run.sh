#!/bin/bash
# Session 4, device run B: gpu_decode (ALiBi Gaussian added), check --device cuda.
cd "$(dirname "$0")"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
R=$OUT/run.log
T0=$(date +%s)
el() { echo "[$(( $(date +%s) - T0 ))s] $*" | tee -a $R; }
date -u >> $R
el tests
( timeout 300 ./gpu_decode --test-threads=4 2>&1; echo "gpu_decode rc=$?" ) > $OUT/tests.log
grep -E "^test |test result|rc=|panicked|worst" $OUT/tests.log | cut -c1-900 | tee -a $R
el check
timeout 250 ./entmaxkv check --device cuda --json $OUT/check_cuda.json > $OUT/check_cuda.log 2>&1; echo "check rc=$?" | tee -a $R
tail -4 $OUT/check_cuda.log | tee -a $R
grep -i "gaussian" $OUT/check_cuda.log | grep -i "alibi\|on " | head -20
el done
