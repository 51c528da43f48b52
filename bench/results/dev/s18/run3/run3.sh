#!/bin/bash
# Session 18 run 3 (H200): tensor-core scoring and softmax V pass (MMA_SCORES / MMA_VALUES,
# f16, 2–4 heads a task): the GPU test suite first, then the GQA shape A/B against the FMA
# kernels (MMA_SCORES=0), the V pass alone off (MMA_VALUES=0) and attn_softmax without the
# 3-CTA register bound (SOFTMAX_MIN_CTAS=1); then one head a task (MMA_MIN_TG=1) on B = 1.
cd "$(dirname "$0")"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export ENTMAXKV_PTX_CACHE=/tmp/entmaxkv_ptx
export CUDA_CACHE_MAXSIZE=4294967296
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 ))s] $*"; }
{ date -u; nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,memory.total --format=csv,noheader; } > $OUT/card.txt; cat $OUT/card.txt
( timeout 285 ./gpu_decode --test-threads=16 2>&1; echo "gpu_decode rc=$?" ) > $OUT/tests.log
grep -E "test result|rc=|panicked|FAILED" $OUT/tests.log | cut -c1-200
grep -E "^test .* ok$" $OUT/tests.log | wc -l
( timeout 30 ./gpu_cache --test-threads=4 2>&1; echo "gpu_cache rc=$?" ) > $OUT/tests_cache.log; grep -E "test result|rc=" $OUT/tests_cache.log
el sdpa
timeout 40 python3 sdpa_baseline.py --contexts 128K --batch 8 --heads 32 --kv-heads 8 --head-dim 128 --iters 30 --json $OUT/sdpa.json > $OUT/sdpa.log 2>&1
timeout 40 python3 sdpa_baseline.py --contexts 128K,1M --batch 1 --heads 8 --head-dim 64 --iters 50 --json $OUT/sdpa.json --append >> $OUT/sdpa.log 2>&1; echo "sdpa rc=$?"
grep -E "ctx" $OUT/sdpa.log | cut -c1-90
gqa() { # name env...
  local n=$1; shift
  LEFT=$(( 520 - $(date +%s) + T0 )); [ $LEFT -lt 25 ] && { echo "$n skipped"; return; }
  env "$@" timeout $LEFT ./entmaxkv bench --device cuda --preset llama8b --batch 8 --contexts 128K --gqa shared --methods dense-softmax,dense-entmax,topk,gaussian-exact --budget 0.125 --iters 15 --warmup 3 --no-accuracy --sdpa-json $OUT/sdpa.json --json $OUT/g_$n.json > $OUT/g_$n.log 2>&1
  echo "$n rc=$? $(grep -E '^  (topk|dense|gauss)' $OUT/g_$n.log | cut -c26-34 | paste -sd' ') | $(grep -E '^  dense' $OUT/g_$n.log | grep -o 'attn_[a-z_]* [0-9.]*' | head -2 | paste -sd' ')"
}
el gqa
gqa B; gqa S0 ENTMAXKV_DEFINES="MMA_SCORES=0"; gqa V0 ENTMAXKV_DEFINES="MMA_VALUES=0"; gqa M1 ENTMAXKV_DEFINES="SOFTMAX_MIN_CTAS=1"
grep -E "^(dense|topk|gauss)" $OUT/g_B.log | cut -c1-160
tg1() { # name env...
  local n=$1; shift
  LEFT=$(( 585 - $(date +%s) + T0 )); [ $LEFT -lt 15 ] && { echo "$n skipped"; return; }
  env "$@" timeout $LEFT ./entmaxkv bench --device cuda --preset figure --contexts 128K,1M --methods dense-softmax,dense-entmax,topk --budget 0.125 --iters 20 --warmup 3 --no-accuracy --sdpa-json $OUT/sdpa.json --json $OUT/t_$n.json > $OUT/t_$n.log 2>&1
  echo "$n rc=$? $(grep -E '^  (topk|dense)' $OUT/t_$n.log | cut -c26-34 | paste -sd' ')"
}
el tg1
tg1 B; tg1 M ENTMAXKV_DEFINES="MMA_MIN_TG=1"
el done
cd $OUT && tar czf ../r.tgz . && find . -type f -delete && mv ../r.tgz .
