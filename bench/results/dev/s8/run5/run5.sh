#!/bin/bash
# Session 8, device call 5: resident waves of attention chunks (ENTMAXKV_WAVES, plan-time
# knob, default 1) on the dense entmax and short-list steps, same binary, SDPA in the same run.
M=/tmp/e5; R=$M/res; mkdir -p $R
xz -dc .devrun/e5/entmaxkv_main.xz > $M/entmaxkv; chmod +x $M/entmaxkv
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv; date -u; } | tee $R/machine.txt
timeout 120 python3 bench/sdpa_baseline.py --contexts 32K,128K,256K,512K,1M --batch 1 --heads 8 --head-dim 64 --iters 50 --json $R/sdpa.json > $R/sdpa.log 2>&1; echo "sdpa rc=$?" | tee -a $R/machine.txt
for i in 1 2; do
  for W in 1 2 4; do
    ENTMAXKV_WAVES=$W timeout 90 $M/entmaxkv bench --device cuda --preset figure --contexts 32K,128K,256K,512K,1M \
      --methods dense-entmax,topk,gaussian-exact --budget 0.125 --iters 30 --warmup 5 --sdpa-json $R/sdpa.json \
      --json $R/w${W}_$i.json > $R/w${W}_$i.log 2>&1
    echo "waves $W run $i rc=$? $(date -u +%T)" | tee -a $R/machine.txt
  done
done
cp .devrun/e5/run5.sh $R/
tar czf $OUT/res.tgz -C $M res
for i in 1 2; do for W in 1 2 4; do echo "== waves $W run $i"; grep -E "^(dense-entmax|topk@0.125|gaussian-exact) " $R/w${W}_$i.log | cut -c1-60,100-200; done; done
