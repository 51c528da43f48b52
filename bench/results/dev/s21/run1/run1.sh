#!/bin/bash
# Session 21 run 1 (H200): chunk-major K-pass order as a plan choice (one head a task, after a
# selection; ENTMAXKV_CHUNK_MAJOR=0 = task-major). (1) gpu_decode on the new code; (2) A/B
# alternated at 128K/1M; (3) Gaussian 1M on seeds 0..3; (4) the GQA shape (unchanged kernels).
cd "$(dirname "$0")"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export ENTMAXKV_PTX_CACHE=/tmp/entmaxkv_ptx
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 ))s] $*"; }
left() { echo $(( $1 - $(date +%s) + T0 )); }
{ date -u; nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,memory.total --format=csv,noheader; } > $OUT/card.txt; cat $OUT/card.txt
timeout 60 python3 sdpa_baseline.py --contexts 32K,128K,1M --batch 1 --heads 8 --head-dim 64 --iters 50 --json $OUT/sdpa.json > $OUT/sdpa.log 2>&1
timeout 40 python3 sdpa_baseline.py --contexts 128K --batch 8 --heads 32 --kv-heads 8 --head-dim 128 --iters 30 --json $OUT/sdpa_gqa.json > $OUT/sdpa_gqa.log 2>&1
grep ctx $OUT/sdpa.log $OUT/sdpa_gqa.log | cut -c1-100
el tests
( timeout $(left 290) ./gpu_decode --test-threads=4 2>&1; echo "rc=$?" ) > $OUT/tests_decode.log
grep -E "^test |test result|rc=|panicked" $OUT/tests_decode.log | cut -c1-200
B="--device cuda --preset figure --iters 30 --warmup 3 --no-accuracy --sdpa-json $OUT/sdpa.json"
run() { # name limit contexts methods env...
  local n=$1 lim=$2 c=$3 m=$4; shift 4
  local L=$(left $lim); [ $L -lt 15 ] && { echo "$n skipped"; return; }
  env "$@" timeout $L ./entmaxkv bench $B --contexts $c --methods $m --budget 0.125 $X --json $OUT/b_$n.json > $OUT/b_$n.log 2>&1
  echo "$n rc=$? | $(grep -E '^  [a-z]' $OUT/b_$n.log | awk '{print $1, $3}' | paste -sd' ')"
}
el ab
for r in a b; do
  run C$r 450 32K,128K,1M topk,topk-softmax,gaussian-exact
  run T$r 450 32K,128K,1M topk,topk-softmax,gaussian-exact ENTMAXKV_CHUNK_MAJOR=0
done
run D 460 128K,1M dense-entmax
el seeds
for s in 1 2 3; do X="--seed $s" run S$s 520 1M gaussian-exact; done
el gqa
L=$(left 585); [ $L -gt 20 ] && { timeout $L ./entmaxkv bench --device cuda --preset llama8b --batch 8 --contexts 128K --gqa shared --methods dense-softmax,dense-entmax,topk --budget 0.125 --iters 20 --warmup 3 --no-accuracy --sdpa-json $OUT/sdpa_gqa.json --json $OUT/b_gqa.json > $OUT/b_gqa.log 2>&1; echo "gqa rc=$?"; grep -E "^  [a-z]|bandwidth" $OUT/b_gqa.log | cut -c1-170; }
el done
cd $OUT && tar czf ../r.tgz . && find . -type f -delete && mv ../r.tgz .
