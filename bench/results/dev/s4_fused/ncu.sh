#!/bin/bash
cd "$(dirname "$0")"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export ENTMAXKV_TOPK_FUSED_MAX=0 ENTMAXKV_GAUSS_FUSED_MAX=0
which ncu; ncu --version | tail -1
S="--section SpeedOfLight --section LaunchStats --section Occupancy --section WarpStateStats --section SchedulerStats --section MemoryWorkloadAnalysis"
timeout 200 ncu --clock-control none $S -k regex:"attn_entmax|gauss_|topk_" --launch-skip 14 --launch-count 7 ./entmaxkv bench --device cuda --preset figure --contexts 32K --methods gaussian-exact --iters 3 --warmup 1 --no-accuracy > $OUT/ncu_gauss32k.txt 2>&1
echo "gauss rc=$?"
timeout 150 ncu --clock-control none $S -k regex:"topk_" --launch-skip 4 --launch-count 2 ./entmaxkv bench --device cuda --preset figure --contexts 32K --methods topk --iters 3 --warmup 1 --no-accuracy > $OUT/ncu_topk32k.txt 2>&1
echo "topk rc=$?"
timeout 150 ncu --clock-control none --section SourceCounters -k regex:"attn_entmax_tail|gauss_count" --launch-skip 4 --launch-count 2 ./entmaxkv bench --device cuda --preset figure --contexts 32K --methods gaussian-exact --iters 3 --warmup 1 --no-accuracy > $OUT/ncu_src.txt 2>&1
echo "src rc=$?"
grep -E "^  [a-z_]+\(|Duration|Registers Per|Achieved Occupancy|Local Memory|Stall|Warp Cycles Per Issued|Issued Ipc|Memory Throughput|No Eligible" $OUT/ncu_gauss32k.txt $OUT/ncu_topk32k.txt | head -150
