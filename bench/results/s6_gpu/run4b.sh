#!/bin/bash
# Session 6 recorded run, part B: check --device cuda, SDPA, benches (the lines of gpu_run.sh).
cd "$(dirname "$0")"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export PYTHONUNBUFFERED=1
R=$OUT/run.log; T0=$(date +%s)
el() { echo "[$(( $(date +%s) - T0 ))s] $*" | tee -a $R; }
{ date -u; nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,clocks.mem --format=csv; python3 -c "import torch; print(\"torch\", torch.__version__)"; } >> $R 2>&1
el "check --device cuda"
timeout 200 ./entmaxkv check --device cuda --json $OUT/check_cuda.json > $OUT/check_cuda.log 2>&1; echo "check rc=$?" | tee -a $R
tail -1 $OUT/check_cuda.log | tee -a $R
el "sdpa"
timeout 150 python3 sdpa_baseline.py --contexts 32K,64K,128K,256K,512K,1M --batch 1 --heads 8 --head-dim 64 --iters 50 --json $OUT/sdpa.json 2>&1 | tee -a $R
timeout 60 python3 sdpa_baseline.py --contexts 128K --batch 8 --heads 32 --kv-heads 8 --head-dim 128 --iters 30 --json $OUT/sdpa.json --append 2>&1 | tee -a $R
el "bench B1 8/8 D64"
timeout 240 ./entmaxkv bench --device cuda --preset figure --contexts 32K,64K,128K,256K,512K,1M --methods dense-softmax,dense-entmax,topk,topk-softmax,topk-softmax-sketchmass,gaussian-exact,certified --budget 0.125 --iters 30 --warmup 5 --sdpa-json $OUT/sdpa.json --json $OUT/bench_b1.json > $OUT/bench.log 2>&1
el "bench B1 other alphas"
timeout 100 ./entmaxkv bench --device cuda --preset figure --contexts 128K,1M --alpha 2,1.3333333333333333 --methods dense-entmax,topk,gaussian-exact,certified --budget 0.125 --iters 20 --warmup 3 --sdpa-json $OUT/sdpa.json --json $OUT/bench_alpha.json >> $OUT/bench.log 2>&1
el "bench B1 robust Gaussian (GPU_ROBUST.md)"
timeout 120 ./entmaxkv bench --device cuda --preset figure --contexts 32K,128K,1M --methods gaussian-exact,gaussian-robust,gaussian-robust-corrected --iters 10 --warmup 2 --no-accuracy --json $OUT/bench_robust.json >> $OUT/bench.log 2>&1; echo "bench robust rc=$?" | tee -a $R
el "bench B8 32/8 D128"
timeout 120 ./entmaxkv bench --device cuda --preset llama8b --batch 8 --contexts 128K --gqa shared --methods dense-softmax,dense-entmax,topk,gaussian-exact,certified --budget 0.125 --iters 20 --warmup 3 --no-accuracy --sdpa-json $OUT/sdpa.json --json $OUT/bench_gqa.json >> $OUT/bench.log 2>&1
el done
grep "^  " $OUT/bench.log | cut -c1-330
( cd $OUT && tar czf ../results.tgz . && find . -type f -delete && mv ../results.tgz . )
