#!/bin/bash
# Session 18 run 5 (H200): where the Gaussian step's time goes at 1M (3.86x SDPA on an H200,
# target 4x): ncu on gauss_moments and attn_entmax_scores (together ~70% of the kernel
# time); pages in flight of the moments pass (MOM_PU) and its CTAs per SM
# (ENTMAXKV_STAT_CTAS), SDPA in the same run. Defaults' SASS unchanged (kernel_sizes).
cd "$(dirname "$0")"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export ENTMAXKV_PTX_CACHE=/tmp/entmaxkv_ptx
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 ))s] $*"; }
{ date -u; nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,memory.total --format=csv,noheader; } > $OUT/card.txt; cat $OUT/card.txt
timeout 30 python3 sdpa_baseline.py --contexts 1M --batch 1 --heads 8 --head-dim 64 --iters 50 --json $OUT/sdpa.json > $OUT/sdpa.log 2>&1; grep ctx $OUT/sdpa.log | cut -c1-80
run() { # name env...
  local n=$1; shift
  LEFT=$(( 150 - $(date +%s) + T0 )); [ $LEFT -lt 12 ] && { echo "$n skipped"; return; }
  env "$@" timeout $LEFT ./entmaxkv bench --device cuda --preset figure --contexts 1M --methods gaussian-exact --iters 30 --warmup 3 --no-accuracy --sdpa-json $OUT/sdpa.json --json $OUT/b_$n.json > $OUT/b_$n.log 2>&1
  echo "$n rc=$? $(grep -E '^  gauss' $OUT/b_$n.log | cut -c26-34) | $(grep -E '^  gauss' $OUT/b_$n.log | grep -o 'gauss_moments [0-9.]*')"
}
el ab
run B; run P8 ENTMAXKV_DEFINES="MOM_PU=8"; run P2 ENTMAXKV_DEFINES="MOM_PU=2"; run C16 ENTMAXKV_STAT_CTAS=16; run C4 ENTMAXKV_STAT_CTAS=4; run B2
NCU=$(ls /usr/local/cuda/bin/ncu 2>/dev/null || which ncu)
LEFT=$(( 225 - $(date +%s) + T0 ))
el "ncu (${LEFT}s)"
timeout $LEFT $NCU --clock-control none --kernel-name regex:"gauss_moments|attn_entmax_scores" --launch-skip 2 --launch-count 2 --section SpeedOfLight --section MemoryWorkloadAnalysis --section Occupancy --section LaunchStats --section WarpStateStats --section SchedulerStats ./entmaxkv bench --device cuda --preset figure --contexts 1M --methods gaussian-exact --iters 2 --warmup 1 --no-accuracy > $OUT/ncu.log 2>&1; echo "ncu rc=$?"
grep -E "gauss_moments|attn_entmax_scores|DRAM Throughput|Duration|Issued Warp|No Eligible|Achieved Occupancy|Theoretical Occupancy|Registers Per|Grid Size|Waves Per SM|Block Limit (Reg|Shared)" $OUT/ncu.log | head -40
el done
cd $OUT && tar czf ../r.tgz . && find . -type f -delete && mv ../r.tgz .
