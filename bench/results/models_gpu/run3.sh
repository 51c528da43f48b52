#!/bin/bash
# Device call 3: the GGUF reassembled and checked, then `entmaxkv eval --device cuda`.
M=/tmp/m
cat $M/part_a $M/part_b .devrun/e3/part_c > $M/SmolLM2-135M-Instruct.Q4_1.gguf
sha256sum $M/SmolLM2-135M-Instruct.Q4_1.gguf | tee $OUT/sha256.txt
cp .devrun/e3/kjv.txt .devrun/e3/jargon.txt $M/
cd $M
date -u
timeout 300 ./entmaxkv eval --data $M --device cuda --skip-needle --texts kjv --ppl-tokens 8192 --ppl-prefix 7680 \
  --methods dense-softmax,topk-softmax-sketchmass@0.125,topk-softmax@0.125 --json $OUT/eval_cuda_kjv8k_softmax.json 2>&1 | tee $OUT/eval_cuda_kjv8k_softmax.log
date -u
timeout 240 ./entmaxkv eval --data $M --device cuda --skip-needle --texts kjv --ppl-tokens 7936 --ppl-prefix 7680 \
  --methods dense-softmax,dense-entmax,gaussian-robust,certified --json $OUT/eval_cuda_kjv8k_entmax.json 2>&1 | tee $OUT/eval_cuda_kjv8k_entmax.log
date -u
