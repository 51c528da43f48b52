#!/bin/bash
# Device call 1 of the models GPU run: stage half the GGUF and the binaries in /tmp/m, run
# the CUDA-vs-CPU backend tests of entmaxkv-models.
M=/tmp/m; mkdir -p $M
cp .devrun/e1/part_a $M/part_a
xz -dc .devrun/e1/entmaxkv.xz > $M/entmaxkv
xz -dc .devrun/e1/gpu_attention.xz > $M/gpu_attention
chmod +x $M/entmaxkv $M/gpu_attention
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv; date -u; nproc; } | tee $OUT/machine.txt
(cd $M && timeout 400 ./gpu_attention --nocapture --test-threads 6) 2>&1 | tee $OUT/gpu_attention.log
ls -la $M
