#!/bin/bash
# Session 8, device call 6: the entmax tail at alpha 4/3 (phase clocks, candidates), and the
# tail's candidate capacity (ENTMAXKV_SOLVE_DYN_KB: 80 default, 200) on the step and tests.
M=/tmp/e6; R=$M/res; mkdir -p $R
for f in entmaxkv gpu_decode; do xz -dc .devrun/e6/$f.xz > $M/$f; chmod +x $M/$f; done
{ nvidia-smi --query-gpu=name,driver_version --format=csv; date -u; } | tee $R/machine.txt
for KB in 80 200; do
  ENTMAXKV_PROFILE_TAIL=1 ENTMAXKV_SOLVE_DYN_KB=$KB timeout 90 $M/entmaxkv bench --device cuda --preset figure --contexts 128K,1M \
    --alpha 1.3333333333333333,1.5 --methods dense-entmax,gaussian-exact,certified --iters 20 --warmup 3 --no-accuracy \
    --json $R/kb$KB.json > $R/kb$KB.log 2>&1
  echo "bench kb $KB rc=$? $(date -u +%T)" | tee -a $R/machine.txt
done
(cd $M && ENTMAXKV_SOLVE_DYN_KB=200 timeout 150 ./gpu_decode long_contexts_large_supports_and_ties every_method_alpha_and_dtype_matches_cpu certified_matches_dense_short --test-threads 3) > $R/tests_kb200.log 2>&1
echo "tests kb 200 rc=$? $(date -u +%T)" | tee -a $R/machine.txt
cp .devrun/e6/run6.sh $R/
tar czf $OUT/res.tgz -C $M res
for KB in 80 200; do echo "== kb $KB"; grep -E "tail clocks|^  (dense-entmax|gaussian-exact|certified) " $R/kb$KB.log | cut -c1-250; done
grep -E "^test |test result" $R/tests_kb200.log
