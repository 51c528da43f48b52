#!/bin/bash
# Session 10 dev run 5: topk_select by a bitonic sort (<= 4096 closed pages) vs the radix
# passes (ENTMAXKV_SEL_BITONIC=0), alternated twice, SDPA in the same run; then gpu_decode.
cd "$(dirname "$0")"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export PYTHONUNBUFFERED=1
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 ))s] $*"; }
{ date -u; nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; } > $OUT/card.txt; cat $OUT/card.txt
timeout 60 python3 sdpa_baseline.py --contexts 32K,64K,128K --batch 1 --heads 8 --head-dim 64 --iters 50 --json $OUT/sdpa.json > $OUT/sdpa.log 2>&1; echo "sdpa rc=$?"
run() { local n=$1; shift; el "bench $n"
  env "$@" timeout 60 ./entmaxkv bench --device cuda --preset figure --contexts 32K,64K,128K --methods topk,topk-softmax --budget 0.125 --iters 30 --warmup 5 --sdpa-json $OUT/sdpa.json --json $OUT/b_$n.json > $OUT/b_$n.log 2>&1
  echo "rc=$?"; grep "^  " $OUT/b_$n.log | cut -c1-200
}
run r0a ENTMAXKV_SEL_BITONIC=0; run b1a X=1; run b1b X=1; run r0b ENTMAXKV_SEL_BITONIC=0
el tests
( timeout 330 ./gpu_decode --test-threads=8 2>&1; echo "gpu_decode rc=$?" ) > $OUT/tests.log
grep -E "test result|rc=|panicked|worst" $OUT/tests.log | cut -c1-300
el done
cd $OUT && tar czf ../r.tgz . && find . -type f -delete && mv ../r.tgz .
