#!/bin/bash
# Session 19 run 5 (H200): at HEAD, `check --device cuda` (the accuracy sweep against the
# f64 oracle, 864 rows; last run in session 18), then ncu over the Gaussian step's two
# large kernels at 1M with gauss_moments now bounded to 4 CTAs an SM (session 18 run 5:
# 60% DRAM, 3 CTAs, 0.56 issued): where the next microseconds are.
cd "$(dirname "$0")"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export ENTMAXKV_PTX_CACHE=/tmp/entmaxkv_ptx
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 ))s] $*"; }
{ date -u; nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,memory.total --format=csv,noheader; } > $OUT/card.txt; cat $OUT/card.txt
timeout 300 ./entmaxkv check --device cuda --json $OUT/check_cuda.json > $OUT/check_cuda.log 2>&1; echo "check rc=$?"; tail -1 $OUT/check_cuda.log | cut -c1-200
NCU=$(ls /usr/local/cuda/bin/ncu 2>/dev/null || which ncu)
LEFT=$(( 470 - $(date +%s) + T0 ))
el "ncu (${LEFT}s)"
timeout $LEFT $NCU --clock-control none --kernel-name regex:"gauss_moments|attn_entmax_scores|gauss_count|gauss_pack" --launch-skip 4 --launch-count 4 --section SpeedOfLight --section MemoryWorkloadAnalysis --section Occupancy --section LaunchStats --section WarpStateStats --section SchedulerStats ./entmaxkv bench --device cuda --preset figure --contexts 1M --methods gaussian-exact --iters 2 --warmup 1 --no-accuracy > $OUT/ncu.log 2>&1; echo "ncu rc=$?"
grep -E "gauss_moments|gauss_count|gauss_pack|attn_entmax_scores|DRAM Throughput|Duration|Issued Warp|No Eligible|Achieved Occupancy|Theoretical Occupancy|Registers Per|Grid Size|Waves Per SM|Mem Busy|Max Bandwidth|L2 Hit" $OUT/ncu.log | head -70
el done
cd $OUT && tar czf ../r.tgz . && find . -type f -delete && mv ../r.tgz .
