#!/bin/bash
# Session 18 run 1 (prepared in session 17): the device-I/O tests first (written in session
# 17, never run on a device), then the whole GPU suite with compile times logged, then
# `check --device cuda` as time allows. Stage first (from the repo root, after
# `cargo build --release && cargo test --release -p entmaxkv --no-run`):
#   D=.devrun/s18r1; cp target/release/entmaxkv $D/; for t in gpu_decode gpu_cache gpu_oom; do
#   cp $(ls -t target/release/deps/$t-* | grep -v '\.d$' | head -1) $D/$t; done; strip $D/*;
#   cp bench/sdpa_baseline.py $D/
cd "$(dirname "$0")"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export ENTMAXKV_PTX_CACHE=/tmp/entmaxkv_ptx
export CUDA_CACHE_MAXSIZE=4294967296
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 ))s] $*"; }
{ date -u; nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,memory.total --format=csv,noheader; } > $OUT/card.txt; cat $OUT/card.txt
( timeout 120 ./gpu_cache --test-threads=4 2>&1; echo "gpu_cache rc=$?" ) > $OUT/tests_cache.log
grep -E "test |test result|rc=|panicked" $OUT/tests_cache.log | cut -c1-200
( ENTMAXKV_LOG_COMPILE=1 timeout 120 ./gpu_decode --exact device_io_steps_match_host_steps 2>&1; echo "device_io rc=$?" ) > $OUT/tests_io.log
grep -E "test result|rc=|panicked" $OUT/tests_io.log | cut -c1-200
el suite
( ENTMAXKV_LOG_COMPILE=1 timeout 280 ./gpu_decode --test-threads=16 2>&1; echo "gpu_decode rc=$?" ) > $OUT/tests.log
grep -E "test result|rc=|panicked|FAILED" $OUT/tests.log | cut -c1-200
grep -c "entmaxkv: module" $OUT/tests.log
( timeout 40 ./gpu_oom 2>&1; echo "gpu_oom rc=$?" ) > $OUT/tests_oom.log; grep -E "test result|rc=" $OUT/tests_oom.log
LEFT=$(( 585 - $(date +%s) + T0 ))
el "check --device cuda (${LEFT}s)"
if [ $LEFT -gt 30 ]; then timeout $LEFT ./entmaxkv check --device cuda --json $OUT/check_cuda.json > $OUT/check_cuda.log 2>&1; echo "check rc=$?"; tail -3 $OUT/check_cuda.log | cut -c1-200; fi
el done
cd $OUT && tar czf ../r.tgz . && find . -type f -delete && mv ../r.tgz .
