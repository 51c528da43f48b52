#!/bin/bash
# Session 16 test run (H100): gpu_decode, gpu_cache, gpu_oom with attn_entmax_tail15_lean and
# topk_select as committed (ENTMAXKV_DEFINES selects the one-body select unrolled 8, the
# code these binaries' default differs from only in that template's layout).
cd "$(dirname "$0")"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export ENTMAXKV_PTX_CACHE=/tmp/entmaxkv_ptx
export ENTMAXKV_DEFINES="SEL_SINGLE=1 SEL_UNROLL=8"
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 ))s] $*"; }
{ date -u; nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; } > $OUT/card.txt; cat $OUT/card.txt
( timeout 450 ./gpu_decode --test-threads=8 2>&1; echo "gpu_decode rc=$?" ) > $OUT/tests.log
grep -E "test result|rc=|panicked|worst|FAILED|running for" $OUT/tests.log | cut -c1-200
el cache
( timeout 70 ./gpu_cache --test-threads=4 2>&1; echo "gpu_cache rc=$?"; timeout 40 ./gpu_oom 2>&1; echo "gpu_oom rc=$?" ) > $OUT/tests_cache.log
grep -E "test result|rc=" $OUT/tests_cache.log
el done
cd $OUT && tar czf ../r.tgz . && find . -type f -delete && mv ../r.tgz .
