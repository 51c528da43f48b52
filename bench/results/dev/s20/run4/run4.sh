#!/bin/bash
# Session 20 run 4 (H200): the standing with SDPA at HEAD (non-finite status word,
# chunk-major K pass), the GQA shape, the Gaussian 1M step on seeds 1..3.
cd "$(dirname "$0")"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export ENTMAXKV_PTX_CACHE=/tmp/entmaxkv_ptx
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 ))s] $*"; }
left() { echo $(( $1 - $(date +%s) + T0 )); }
{ date -u; nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,memory.total --format=csv,noheader; } > $OUT/card.txt; cat $OUT/card.txt
timeout 60 python3 sdpa_baseline.py --contexts 32K,64K,128K,256K,512K,1M --batch 1 --heads 8 --head-dim 64 --iters 50 --json $OUT/sdpa.json > $OUT/sdpa.log 2>&1
timeout 40 python3 sdpa_baseline.py --contexts 128K --batch 8 --heads 32 --kv-heads 8 --head-dim 128 --iters 30 --json $OUT/sdpa_gqa.json > $OUT/sdpa_gqa.log 2>&1
grep ctx $OUT/sdpa.log $OUT/sdpa_gqa.log | cut -c1-100
B="--iters 30 --warmup 3 --no-accuracy"
el standing
timeout $(left 240) ./entmaxkv bench --device cuda --preset figure $B --contexts 32K,64K,128K,256K,512K,1M --methods dense-softmax,dense-entmax,topk,gaussian-exact,gaussian-robust,certified --budget 0.125 --sdpa-json $OUT/sdpa.json --json $OUT/b_ST.json > $OUT/b_ST.log 2>&1; echo "ST rc=$?"
grep "^  [a-z]" $OUT/b_ST.log | cut -c1-112
el seeds
for s in 1 2 3; do L=$(left 290); [ $L -lt 12 ] && break; timeout $L ./entmaxkv bench --device cuda --preset figure $B --contexts 1M --methods gaussian-exact --seed $s --sdpa-json $OUT/sdpa.json --json $OUT/b_S$s.json > $OUT/b_S$s.log 2>&1; echo "seed $s rc=$? $(grep -E '^  gauss' $OUT/b_S$s.log | cut -c1-112)"; done
el gqa
timeout $(left 380) ./entmaxkv bench --device cuda --preset llama8b --batch 8 --contexts 128K --gqa shared --methods dense-softmax,dense-entmax,topk,gaussian-exact,certified --budget 0.125 --iters 20 --warmup 3 --no-accuracy --sdpa-json $OUT/sdpa_gqa.json --json $OUT/b_gqa.json > $OUT/b_gqa.log 2>&1; echo "gqa rc=$?"
grep -E "^(dense|topk|gauss|certified)|bandwidth" $OUT/b_gqa.log | cut -c1-170
el done
cd $OUT && tar czf ../r.tgz . && find . -type f -delete && mv ../r.tgz .
