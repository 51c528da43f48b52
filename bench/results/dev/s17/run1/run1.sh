#!/bin/bash
# Session 17 run 1 (H200): the GPU test suite on the kernels compiled in modules per family
# (commit d4aa01b), then the standing sweep (every method 32K–1M, SDPA in the same run).
cd "$(dirname "$0")"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export ENTMAXKV_PTX_CACHE=/tmp/entmaxkv_ptx
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 ))s] $*"; }
{ date -u; nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,memory.total --format=csv,noheader; nproc; } > $OUT/card.txt; cat $OUT/card.txt
( timeout 300 ./gpu_decode --test-threads=16 2>&1; echo "gpu_decode rc=$?" ) > $OUT/tests.log
grep -E "test result|rc=|panicked|FAILED|running for" $OUT/tests.log | cut -c1-200
grep -E "^test .* ok$" $OUT/tests.log | wc -l
el cache
( timeout 60 ./gpu_cache --test-threads=4 2>&1; echo "gpu_cache rc=$?"; timeout 40 ./gpu_oom 2>&1; echo "gpu_oom rc=$?"; timeout 60 ./gpu_compile 2>&1; echo "gpu_compile rc=$?" ) > $OUT/tests_cache.log
grep -E "test result|rc=" $OUT/tests_cache.log
el sdpa
timeout 80 python3 sdpa_baseline.py --contexts 32K,64K,128K,256K,512K,1M --batch 1 --heads 8 --head-dim 64 --iters 50 --json $OUT/sdpa.json > $OUT/sdpa.log 2>&1; echo "sdpa rc=$?"
grep -E "ctx" $OUT/sdpa.log | cut -c1-60
LEFT=$(( 585 - $(date +%s) + T0 ))
el "standing (${LEFT}s)"
timeout $LEFT ./entmaxkv bench --device cuda --preset figure --contexts 32K,64K,128K,256K,512K,1M --methods dense-softmax,dense-entmax,topk,gaussian-exact,gaussian-robust,certified --budget 0.125 --iters 30 --warmup 3 --no-accuracy --sdpa-json $OUT/sdpa.json --json $OUT/b_ST.json > $OUT/b_ST.log 2>&1; echo "ST rc=$?"
grep "^  [a-z]" $OUT/b_ST.log | cut -c1-112
el done
cd $OUT && tar czf ../r.tgz . && find . -type f -delete && mv ../r.tgz .
