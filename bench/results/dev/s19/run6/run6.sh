#!/bin/bash
# Session 19 run 6 (H200): the test helper DevF32/DevU16 made one generic DevVec<T> (same
# allocation, copy and free): gpu_cache and the device-I/O test that use it.
cd "$(dirname "$0")"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
{ date -u; nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; } | tee $OUT/card.txt
( timeout 60 ./gpu_cache --test-threads=4 2>&1; echo "gpu_cache rc=$?"; timeout 100 ./gpu_decode --exact device_io_steps_match_host_steps 2>&1; echo "device_io rc=$?" ) > $OUT/tests.log
grep -E "^test |test result|rc=|panicked" $OUT/tests.log | cut -c1-160
