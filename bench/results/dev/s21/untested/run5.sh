#!/bin/bash
# Prepared in session 21 for clamp_fin.patch (not run: no device time left). Stage next to
# it: entmaxkv and the gpu_decode test binary built with the patch applied, sdpa_baseline.py
# and bench/dev_lib.sh. (1) The Gaussian tests that cover the change: fused vs separate,
# fixed/corrected τ (the clamped τ̂ is the threshold there), the CPU comparison, chunk-major
# grids; (2) Gaussian 32K / 64K / 1M against the old loops, alternated.
cd "$(dirname "$0")"
. ./dev_lib.sh
card
timeout 60 python3 sdpa_baseline.py --contexts 32K,64K,1M --batch 1 --heads 8 --head-dim 64 --iters 50 --json $OUT/sdpa.json > $OUT/sdpa.log 2>&1
el tests
for t in gaussian_fused_and_separate_steps_agree gaussian_fixed_and_corrected_tau_match_cpu gaussian_selection_matches_cpu chunk_major_grids_match_cpu; do
  ( timeout $(left 240) ./gpu_decode --exact $t 2>&1; echo "rc=$?" ) > $OUT/test_$t.log &
done
wait
grep -hE "^test |test result|rc=|panicked" $OUT/test_*.log | cut -c1-200
el ab
for r in a b; do
  bench N$r 500 32K,64K,1M gaussian-exact
  bench O$r 500 32K,64K,1M gaussian-exact ENTMAXKV_DEFINES="PACK_BITS=0 FIN_BITS=0"
done
el done
pack_out
