#!/bin/bash
cd "$(dirname "$0")"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
t0=$(date +%s)
ENTMAXKV_REFILTER=1 timeout 60 ./entmaxkv check --device cuda --alpha 1.3333333333333333 --methods dense-entmax --json $OUT/c1_dense.json > $OUT/c1_dense.log 2>&1; echo "R1 a4/3 dense-entmax rc=$? $(( $(date +%s)-t0 ))s"; tail -2 $OUT/c1_dense.log
t0=$(date +%s)
ENTMAXKV_REFILTER=0 timeout 90 ./entmaxkv check --device cuda --alpha 1.3333333333333333 --json $OUT/c0.json > $OUT/c0.log 2>&1; echo "R0 a4/3 all rc=$? $(( $(date +%s)-t0 ))s"; tail -2 $OUT/c0.log
t0=$(date +%s)
ENTMAXKV_REFILTER=1 timeout 90 ./entmaxkv check --device cuda --alpha 1.3333333333333333 --json $OUT/c1.json > $OUT/c1.log 2>&1; echo "R1 a4/3 all rc=$? $(( $(date +%s)-t0 ))s"; tail -2 $OUT/c1.log
t0=$(date +%s)
timeout 90 ./entmaxkv check --device cuda --alpha 1,1.5,2,3 --json $OUT/cother.json > $OUT/cother.log 2>&1; echo "R1 other alphas rc=$? $(( $(date +%s)-t0 ))s"; tail -2 $OUT/cother.log
