#!/bin/bash
# Session 21 run 5 (H200, the last ~240 s of device time): the τ clamp loads side by side
# (gauss_pack, fused_finish) and fused_finish's list in one scan (FIN_BITS=1). (1) the
# Gaussian tests that cover them: fused vs separate, fixed/corrected τ (the clamped τ̂ is
# the threshold there), chunk-major grids; (2) what time is left: default vs the old loops.
cd "$(dirname "$0")"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export ENTMAXKV_PTX_CACHE=/tmp/entmaxkv_ptx
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 ))s] $*"; }
left() { echo $(( $1 - $(date +%s) + T0 )); }
{ date -u; nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,memory.total --format=csv,noheader; } > $OUT/card.txt; cat $OUT/card.txt
el tests
for t in gaussian_fused_and_separate_steps_agree gaussian_fixed_and_corrected_tau_match_cpu chunk_major_grids_match_cpu; do
  ( timeout $(left 150) ./gpu_decode --exact $t 2>&1; echo "rc=$?" ) > $OUT/test_$t.log &
done
wait
grep -hE "^test |test result|rc=|panicked" $OUT/test_*.log | cut -c1-200
el ab
B="--device cuda --preset figure --iters 20 --warmup 3 --no-accuracy"
for r in N O; do
  L=$(left 205); [ $L -lt 10 ] && break
  if [ $r = O ]; then export ENTMAXKV_DEFINES="PACK_BITS=0 FIN_BITS=0"; fi
  timeout $L ./entmaxkv bench $B --contexts 32K,128K --methods gaussian-exact --json $OUT/b_$r.json > $OUT/b_$r.log 2>&1
  echo "$r rc=$? | $(grep -E '^  gauss' $OUT/b_$r.log | cut -c1-250)"
done
el done
cd $OUT && tar czf ../r.tgz . && find . -type f -delete && mv ../r.tgz .
