#!/bin/bash
# Session 12 dev run 9: the tail's shared-memory limit set once to the largest any plan uses
# (run 8's failures: concurrent plans of one module lowered it under each other's launches).
# gpu_decode with the V-in-tail path (default) and without it (ENTMAXKV_V_IN_TAIL=0), then
# gpu_cache and gpu_oom.
cd "$(dirname "$0")"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 ))s] $*"; }
{ date -u; nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; } > $OUT/card.txt; cat $OUT/card.txt
( timeout 260 ./gpu_decode --test-threads=8 2>&1; echo "gpu_decode rc=$?" ) > $OUT/tests.log
grep -E "test result|rc=|panicked|worst|FAILED" $OUT/tests.log | cut -c1-200
el old-path
( ENTMAXKV_V_IN_TAIL=0 timeout 300 ./gpu_decode --test-threads=8 2>&1; echo "gpu_decode (V_IN_TAIL=0) rc=$?" ) > $OUT/tests_old_path.log
grep -E "test result|rc=|panicked|FAILED" $OUT/tests_old_path.log | cut -c1-200
el cache
( timeout 100 ./gpu_cache --test-threads=4 2>&1; echo "gpu_cache rc=$?"; timeout 40 ./gpu_oom 2>&1; echo "gpu_oom rc=$?" ) > $OUT/tests_cache.log
grep -E "test result|rc=" $OUT/tests_cache.log
el done
cd $OUT && tar czf ../r.tgz . && find . -type f -delete && mv ../r.tgz .
