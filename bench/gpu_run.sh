#!/bin/bash
# The GPU validation + benchmark run recorded in BENCHMARKS.md (one command on the device).
# Expects, next to this script: `entmaxkv` (cargo build --release -p entmaxkv-cli), the test
# binaries `gpu_cache` and `gpu_decode` (cargo test --release --no-run -p entmaxkv, the
# target/release/deps/gpu_{cache,decode}-<hash> files) and bench/sdpa_baseline.py; OUT is the
# folder for logs and JSON. Needs LD_LIBRARY_PATH to reach libnvrtc (CUDA's lib64).
cd "$(dirname "$0")"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export PYTHONUNBUFFERED=1
R=$OUT/run.log
T0=$(date +%s)
el() { echo "[$(( $(date +%s) - T0 ))s] $*" | tee -a $R; }
{ date -u; nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,clocks.mem --format=csv; nvcc --version | tail -2; python3 -c 'import torch; print("torch", torch.__version__)'; } >> $R 2>&1
el "tests"
( timeout 240 ./gpu_cache --test-threads=4 2>&1; echo "gpu_cache rc=$?" ) > $OUT/tests.log
( timeout 240 ./gpu_decode --test-threads=4 2>&1; echo "gpu_decode rc=$?" ) >> $OUT/tests.log
grep -E "^test |test result|rc=|panicked|worst" $OUT/tests.log | cut -c1-600 | tee -a $R
el "memcheck"
( timeout 100 compute-sanitizer --tool memcheck --error-exitcode 9 ./gpu_cache --test-threads=1 append_rejects device_appends 2>&1; echo "memcheck gpu_cache rc=$?" ) > $OUT/memcheck.log
( timeout 200 compute-sanitizer --tool memcheck --error-exitcode 9 ./gpu_decode --test-threads=1 every_method budgets graph_replays long_contexts unsupported 2>&1; echo "memcheck gpu_decode rc=$?" ) >> $OUT/memcheck.log
grep -E "ERROR SUMMARY|rc=|test result|Invalid|panicked" $OUT/memcheck.log | head -20 | tee -a $R
el "sdpa"
timeout 150 python3 sdpa_baseline.py --contexts 32K,64K,128K,256K,512K,1M --batch 1 --heads 8 --head-dim 64 --iters 50 --json $OUT/sdpa.json 2>&1 | tee -a $R
timeout 60 python3 sdpa_baseline.py --contexts 128K --batch 8 --heads 32 --kv-heads 8 --head-dim 128 --iters 30 --json $OUT/sdpa.json --append 2>&1 | tee -a $R
el "bench B1 8/8 D64"
timeout 240 ./entmaxkv bench --device cuda --preset figure --contexts 32K,64K,128K,256K,512K,1M --methods dense-softmax,dense-entmax,topk,topk-softmax --budget 0.125 --iters 30 --warmup 5 --sdpa-json $OUT/sdpa.json --json $OUT/bench_b1.json > $OUT/bench.log 2>&1
el "bench B1 other alphas"
timeout 100 ./entmaxkv bench --device cuda --preset figure --contexts 128K,1M --alpha 2,1.3333333333333333 --methods dense-entmax,topk --budget 0.125 --iters 20 --warmup 3 --sdpa-json $OUT/sdpa.json --json $OUT/bench_alpha.json >> $OUT/bench.log 2>&1
el "bench B8 32/8 D128"
timeout 120 ./entmaxkv bench --device cuda --preset llama8b --batch 8 --contexts 128K --gqa shared --methods dense-softmax,dense-entmax,topk --budget 0.125 --iters 20 --warmup 3 --no-accuracy --sdpa-json $OUT/sdpa.json --json $OUT/bench_gqa.json >> $OUT/bench.log 2>&1
el "done"
grep "^  " $OUT/bench.log | cut -c1-330
grep -v "^  \|^context\|measuring\|wrote" $OUT/bench.log | cut -c1-240
