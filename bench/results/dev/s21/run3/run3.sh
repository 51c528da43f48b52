#!/bin/bash
# Session 21 run 3 (H200): the new test chunk_major_grids_match_cpu (the chunk-major K pass
# where the final plan rule takes it, and a shared selection that keeps task-major), then
# compute-sanitizer memcheck over it.
cd "$(dirname "$0")"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export ENTMAXKV_PTX_CACHE=/tmp/entmaxkv_ptx
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 ))s] $*"; }
left() { echo $(( $1 - $(date +%s) + T0 )); }
{ date -u; nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; compute-sanitizer --version | tail -1; } > $OUT/card.txt; cat $OUT/card.txt
el test
( timeout 200 ./gpu_decode --exact chunk_major_grids_match_cpu 2>&1; echo "rc=$?" ) > $OUT/test_chunk_major.log
grep -E "^test |test result|rc=|panicked" $OUT/test_chunk_major.log | cut -c1-300
el memcheck
( timeout $(left 420) compute-sanitizer --tool memcheck --error-exitcode 9 ./gpu_decode --test-threads=1 --exact chunk_major_grids_match_cpu 2>&1; echo "memcheck rc=$?" ) > $OUT/memcheck_chunk_major.log
grep -E "ERROR SUMMARY|test result|rc=|panicked" $OUT/memcheck_chunk_major.log | cut -c1-300
el done
cd $OUT && tar czf ../r.tgz . && find . -type f -delete && mv ../r.tgz .
