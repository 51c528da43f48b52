#!/bin/bash
# Session 20 run 5 (H200): the GQA shape's K pass (attn_entmax_scores, tensor cores, 4 heads a
# task) went 0.72 → 0.98 ms between run 4 and session 19: A/B of the two changes it met,
# chunk-major CTA order (CTA_CHUNK_MAJOR=0 turns it off) and the non-finite score check
# (SCORE_FINITE_CHECK=0), alternated.
cd "$(dirname "$0")"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export ENTMAXKV_PTX_CACHE=/tmp/entmaxkv_ptx
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 ))s] $*"; }
left() { echo $(( $1 - $(date +%s) + T0 )); }
date -u > $OUT/card.txt
run() { local n=$1; shift
  L=$(left 200); [ $L -lt 12 ] && { echo "$n skipped"; return; }
  env "$@" timeout $L ./entmaxkv bench --device cuda --preset llama8b --batch 8 --contexts 128K --gqa shared --methods dense-entmax,topk --budget 0.125 --iters 15 --warmup 2 --no-accuracy --sdpa-json sdpa_gqa.json --json $OUT/b_$n.json > $OUT/b_$n.log 2>&1
  echo "$n rc=$? | $(grep -E '^  [a-z]' $OUT/b_$n.log | awk '{print $1, $3}' | paste -sd' ') | $(grep -o 'attn_entmax_scores [0-9.]*' $OUT/b_$n.log | paste -sd' ')"
}
for r in a b; do run D$r; run O$r ENTMAXKV_DEFINES="CTA_CHUNK_MAJOR=0"; run F$r ENTMAXKV_DEFINES="SCORE_FINITE_CHECK=0"; done
el done
cd $OUT && tar czf ../r.tgz . && find . -type f -delete && mv ../r.tgz .
