#!/bin/bash
# Session 8, device call 4: (1) the models crate's CUDA-vs-CPU backend tests after the
# certified assertion change; (2) the gpu-rob-prefetch branch (46d3a07) against main's GPU
# code (main e9b85ec+: robust kernels as 8e06303) on the robust Gaussian step, alternated,
# and its robust tests.
M=/tmp/e4; mkdir -p $M
for f in entmaxkv_main entmaxkv_rfast gpu_decode_rfast gpu_attention; do xz -dc .devrun/e4/$f.xz > $M/$f; chmod +x $M/$f; done
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv; date -u; } | tee $OUT/machine.txt
(cd $M && timeout 150 ./gpu_attention --nocapture --test-threads 6) > $OUT/gpu_attention.log 2>&1; echo "gpu_attention rc=$?" | tee -a $OUT/machine.txt
for i in 1 2; do
  for b in main rfast; do
    timeout 100 $M/entmaxkv_$b bench --device cuda --preset figure --contexts 32K,128K,1M --methods gaussian-robust --iters 10 --warmup 2 --no-accuracy --json $OUT/robust_${b}_$i.json > $OUT/robust_${b}_$i.log 2>&1
    echo "bench $b $i rc=$?" | tee -a $OUT/machine.txt
  done
done
(cd $M && timeout 240 ./gpu_decode_rfast gaussian_robust --test-threads 5) > $OUT/gpu_decode_rfast_robust.log 2>&1; echo "gpu_decode_rfast robust rc=$?" | tee -a $OUT/machine.txt
date -u | tee -a $OUT/machine.txt
grep -h "gaussian-robust " $OUT/robust_*.log
tail -5 $OUT/gpu_decode_rfast_robust.log
