#!/bin/bash
# Session 18 run 2 (H200): why the GQA attention reads at 63% of the probe (session 17):
# rows in flight (ENTMAXKV_UNROLL) and resident waves (ENTMAXKV_WAVES) on the llama8b
# B = 8 shape, one ncu profile of attn_softmax there; the probe's launch shape against
# SDPA; TAU_CLOSED_CODE=0 / TAU_CLOSED=0 on dense entmax 128K–512K. SDPA in the same run.
cd "$(dirname "$0")"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export ENTMAXKV_PTX_CACHE=/tmp/entmaxkv_ptx
export CUDA_CACHE_MAXSIZE=4294967296
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 ))s] $*"; }
{ date -u; nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,memory.total --format=csv,noheader; } > $OUT/card.txt; cat $OUT/card.txt
timeout 60 python3 sdpa_baseline.py --contexts 128K,256K,512K --batch 1 --heads 8 --head-dim 64 --iters 50 --json $OUT/sdpa.json > $OUT/sdpa.log 2>&1
timeout 60 python3 sdpa_baseline.py --contexts 128K --batch 8 --heads 32 --kv-heads 8 --head-dim 128 --iters 30 --json $OUT/sdpa.json --append >> $OUT/sdpa.log 2>&1; echo "sdpa rc=$?"
grep -E "ctx" $OUT/sdpa.log | cut -c1-90
el probe
for s in 8x512 4x1024 2x1024 16x256 32x128 1x1024; do
  c=${s%x*}; t=${s#*x}
  ENTMAXKV_PROBE_CTAS=$c ENTMAXKV_PROBE_THREADS=$t timeout 30 ./entmaxkv bench --device cuda --preset figure --contexts 32K --methods dense-softmax --iters 2 --warmup 1 --no-accuracy > $OUT/probe_$s.log 2>&1
  echo "probe $s: $(grep -m1 'device bandwidth' $OUT/probe_$s.log)"
done
gqa() { # name env...
  local n=$1; shift
  LEFT=$(( 400 - $(date +%s) + T0 )); [ $LEFT -lt 20 ] && { echo "$n skipped"; return; }
  env "$@" timeout $LEFT ./entmaxkv bench --device cuda --preset llama8b --batch 8 --contexts 128K --gqa shared --methods dense-softmax,dense-entmax,topk --budget 0.125 --iters 15 --warmup 3 --no-accuracy --sdpa-json $OUT/sdpa.json --json $OUT/g_$n.json > $OUT/g_$n.log 2>&1
  echo "$n rc=$? $(grep -E '^  (topk|dense)' $OUT/g_$n.log | cut -c26-34 | paste -sd' ') | $(grep -E '^  dense' $OUT/g_$n.log | grep -o 'attn_[a-z_]* [0-9.]*' | head -2 | paste -sd' ')"
}
el gqa
gqa B; gqa U8 ENTMAXKV_UNROLL=8; gqa W2 ENTMAXKV_WAVES=2; gqa U8W2 ENTMAXKV_UNROLL=8 ENTMAXKV_WAVES=2; gqa U2 ENTMAXKV_UNROLL=2
NCU=$(ls /usr/local/cuda/bin/ncu 2>/dev/null || which ncu)
LEFT=$(( 470 - $(date +%s) + T0 ))
if [ -n "$NCU" ] && [ $LEFT -gt 60 ]; then
  el "ncu (${LEFT}s)"
  timeout $LEFT $NCU --clock-control none --kernel-name attn_softmax --launch-skip 2 --launch-count 1 --section SpeedOfLight --section MemoryWorkloadAnalysis --section Occupancy --section LaunchStats --section WarpStateStats --section SchedulerStats ./entmaxkv bench --device cuda --preset llama8b --batch 8 --contexts 128K --gqa shared --methods dense-softmax --iters 3 --warmup 1 --no-accuracy > $OUT/ncu_softmax.log 2>&1; echo "ncu rc=$?"
  grep -E "DRAM Throughput|Memory Throughput|Achieved Occupancy|Theoretical Occupancy|Registers Per|Block Limit|Duration|Stall|Issued Warp|No Eligible|Active Warps" $OUT/ncu_softmax.log | head -30
fi
ent() { # name env...
  local n=$1; shift
  LEFT=$(( 585 - $(date +%s) + T0 )); [ $LEFT -lt 15 ] && { echo "$n skipped"; return; }
  env "$@" timeout $LEFT ./entmaxkv bench --device cuda --preset figure --contexts 128K,256K,512K --methods dense-entmax --iters 30 --warmup 3 --no-accuracy --sdpa-json $OUT/sdpa.json --json $OUT/e_$n.json > $OUT/e_$n.log 2>&1
  echo "$n rc=$? $(grep -E '^  dense' $OUT/e_$n.log | cut -c26-34 | paste -sd' ')"
}
el entmax
for r in a b; do ent B$r; ent C0$r ENTMAXKV_DEFINES="TAU_CLOSED_CODE=0"; ent T0$r ENTMAXKV_TAU_CLOSED=0; done
el done
cd $OUT && tar czf ../r.tgz . && find . -type f -delete && mv ../r.tgz .
