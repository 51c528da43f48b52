#!/bin/bash
# Session 12 dev run 7 (measurement only): what the launch of attn_entmax_values costs when it
# exits at once (small supports): XX_SKIP_VALUES=1 leaves it out (valid here: every support of
# these iid steps is small, the tail gathered V itself). Alternated, three rounds.
cd "$(dirname "$0")"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
{ date -u; nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; } > $OUT/card.txt; cat $OUT/card.txt
run() { # name env...
  local n=$1; shift
  env "$@" timeout 60 ./entmaxkv bench --device cuda --preset figure --contexts 32K,64K --methods dense-entmax,topk,gaussian-exact,certified --budget 0.125 --iters 30 --warmup 3 --no-accuracy --json $OUT/b_$n.json > $OUT/b_$n.log 2>&1
  echo "$n rc=$? $(grep '^  [a-z]' $OUT/b_$n.log | cut -c1-40 | sed 's/a=1.5//; s/  */ /g' | paste -sd' ')"
}
for r in a b c; do
  run V$r ENTMAXKV_CLUSTER=8
  run S$r XX_SKIP_VALUES=1
done
timeout 60 env XX_SKIP_VALUES=1 ./entmaxkv bench --device cuda --preset figure --contexts 32K --methods dense-entmax,topk,gaussian-exact,certified --budget 0.125 --iters 5 --warmup 2 --json $OUT/acc_skip.json > $OUT/acc_skip.log 2>&1; echo "acc rc=$?"; grep "^  [a-z]" $OUT/acc_skip.log | cut -c1-60
cd $OUT && tar czf ../r.tgz . && find . -type f -delete && mv ../r.tgz .
