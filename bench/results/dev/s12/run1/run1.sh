#!/bin/bash
# Session 12 dev run 1: attn_entmax_cluster (one-launch entmax attention of short lists in
# thread-block clusters). Accuracy vs the f64 oracle at 32K (fused default), A/B against the
# four-launch path (ENTMAXKV_FUSED_PAGES=0) and 16-CTA clusters, SDPA in the same run, then
# gpu_decode without the certified tests.
cd "$(dirname "$0")"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export PYTHONUNBUFFERED=1
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 ))s] $*"; }
{ date -u; nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv,noheader; } > $OUT/card.txt
cat $OUT/card.txt
for a in 1.5 2 1.3333333333333333; do
  timeout 60 ./entmaxkv bench --device cuda --preset figure --contexts 32K --alpha $a --methods dense-entmax,topk,gaussian-exact --budget 0.125 --iters 10 --warmup 2 --json $OUT/acc_$a.json > $OUT/acc_$a.log 2>&1; echo "acc $a rc=$?"; grep "^  [a-z]" $OUT/acc_$a.log | cut -c1-100
done
el sdpa
timeout 120 python3 sdpa_baseline.py --contexts 32K,64K,128K --batch 1 --heads 8 --head-dim 64 --iters 50 --json $OUT/sdpa.json > $OUT/sdpa.log 2>&1; echo "sdpa rc=$?"
run() { # name env...
  local n=$1; shift
  el "bench $n"
  env "$@" timeout 60 ./entmaxkv bench --device cuda --preset figure --contexts 32K,64K,128K --methods dense-entmax,topk,gaussian-exact --budget 0.125 --iters 20 --warmup 3 --no-accuracy --sdpa-json $OUT/sdpa.json --json $OUT/b_$n.json > $OUT/b_$n.log 2>&1
  echo "rc=$?"; grep "^  [a-z]" $OUT/b_$n.log | cut -c1-60
}
run F0a ENTMAXKV_FUSED_PAGES=0
run C8a ENTMAXKV_CLUSTER=8
run C16a ENTMAXKV_CLUSTER=16
run F0b ENTMAXKV_FUSED_PAGES=0
run C8b ENTMAXKV_CLUSTER=8
el tests
( timeout 300 ./gpu_decode --test-threads=8 --skip certified 2>&1; echo "gpu_decode rc=$?" ) > $OUT/tests.log
grep -E "test result|rc=|panicked|worst|FAILED|failed" $OUT/tests.log | cut -c1-240 | head -40
el done
cd $OUT && tar czf ../r.tgz . && find . -type f -delete && mv ../r.tgz .
