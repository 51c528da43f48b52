#!/bin/bash
# Session 19 run 3 (H200): gauss_moments bounded to 4 CTAs an SM by default (MOM_MIN_CTAS=4,
# run 1's A/B) and the CPU dense entmax rework (candidates kept while L1-hot, V of the
# support rows): the full gpu_decode suite (GPU vs CPU); the Gaussian rows, default
# alternated with MOM_MIN_CTAS=0 (the old SASS), SDPA in the same run; ncu over dense
# entmax's four kernels at 128K (0.70x SDPA there, target 0.6x): where the fixed time goes.
cd "$(dirname "$0")"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export ENTMAXKV_PTX_CACHE=/tmp/entmaxkv_ptx
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 ))s] $*"; }
{ date -u; nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,memory.total --format=csv,noheader; } > $OUT/card.txt; cat $OUT/card.txt
( timeout 330 ./gpu_decode --test-threads=1 2>&1; echo "gpu_decode rc=$?" ) > $OUT/tests_decode.log
grep -E "test result|rc=|panicked|FAILED" $OUT/tests_decode.log | cut -c1-200
el sdpa
timeout 60 python3 sdpa_baseline.py --contexts 32K,128K,256K,1M --batch 1 --heads 8 --head-dim 64 --iters 50 --json $OUT/sdpa.json > $OUT/sdpa.log 2>&1; grep ctx $OUT/sdpa.log | cut -c1-80
run() { # name env...
  local n=$1; shift
  LEFT=$(( 470 - $(date +%s) + T0 )); [ $LEFT -lt 12 ] && { echo "$n skipped"; return; }
  env "$@" timeout $LEFT ./entmaxkv bench --device cuda --preset figure --contexts 32K,128K,256K,1M --methods gaussian-exact,gaussian-robust --iters 30 --warmup 3 --no-accuracy --sdpa-json $OUT/sdpa.json --json $OUT/b_$n.json > $OUT/b_$n.log 2>&1
  echo "$n rc=$? $(grep -E '^  gauss' $OUT/b_$n.log | cut -c26-34 | paste -sd' ') | $(grep -E '^  gauss' $OUT/b_$n.log | grep -o 'gauss_moments [0-9.]*' | paste -sd' ')"
}
el ab
run M4a; run M0a ENTMAXKV_DEFINES="MOM_MIN_CTAS=0"; run M4b; run M0b ENTMAXKV_DEFINES="MOM_MIN_CTAS=0"
NCU=$(ls /usr/local/cuda/bin/ncu 2>/dev/null || which ncu)
LEFT=$(( 575 - $(date +%s) + T0 ))
el "ncu (${LEFT}s)"
timeout $LEFT $NCU --clock-control none --kernel-name regex:"attn_entmax" --launch-skip 4 --launch-count 4 --section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats --section SchedulerStats ./entmaxkv bench --device cuda --preset figure --contexts 128K --methods dense-entmax --iters 2 --warmup 1 --no-accuracy > $OUT/ncu.log 2>&1; echo "ncu rc=$?"
grep -E "attn_entmax|DRAM Throughput|Duration|Issued Warp|No Eligible|Achieved Occupancy|Registers Per|Grid Size|Waves Per SM" $OUT/ncu.log | head -50
el done
cd $OUT && tar czf ../r.tgz . && find . -type f -delete && mv ../r.tgz .
