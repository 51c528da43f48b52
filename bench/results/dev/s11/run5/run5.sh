#!/bin/bash
# Session 11 dev run 5: the lean tail's list limit (ENTMAXKV_TAIL_LEAN = 0, 768, 1024, 1536,
# 2048), alternated, SDPA in the same run.
cd "$(dirname "$0")"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export PYTHONUNBUFFERED=1
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 ))s] $*"; }
{ date -u; nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv,noheader; } > $OUT/card.txt
cat $OUT/card.txt
timeout 120 python3 sdpa_baseline.py --contexts 32K,64K,128K,256K,512K --batch 1 --heads 8 --head-dim 64 --iters 50 --json $OUT/sdpa.json > $OUT/sdpa.log 2>&1; echo "sdpa rc=$?"
run() { # name env...
  local n=$1; shift
  if [ $(( $(date +%s) - T0 )) -gt 330 ]; then el "skip $n (time)"; return; fi
  el "bench $n"
  env "$@" timeout 60 ./entmaxkv bench --device cuda --preset figure --contexts 32K,64K,128K,256K,512K --methods dense-entmax,topk,gaussian-exact,certified --budget 0.125 --iters 20 --warmup 3 --no-accuracy --sdpa-json $OUT/sdpa.json --json $OUT/b_$n.json > $OUT/b_$n.log 2>&1
  echo "rc=$?"; grep "^  [a-z]" $OUT/b_$n.log | cut -c1-42 | paste -sd' ' | sed 's/a=1.5//g; s/  */ /g'
}
run T0a ENTMAXKV_TAIL_LEAN=0
run T1024a ENTMAXKV_TAIL_LEAN=1024
run T1536a ENTMAXKV_TAIL_LEAN=1536
run T2048a ENTMAXKV_TAIL_LEAN=2048
run T768a ENTMAXKV_TAIL_LEAN=768
run T1024b ENTMAXKV_TAIL_LEAN=1024
run T1536b ENTMAXKV_TAIL_LEAN=1536
run T0b ENTMAXKV_TAIL_LEAN=0
el done
cd $OUT && tar czf ../r.tgz . && find . -type f -delete && mv ../r.tgz .
