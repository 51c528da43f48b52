#!/bin/bash
# Certified step with and without the probe of its K pass (same binary, the plan-time knob
# ENTMAXKV_CERT_PROBE=0 reads every candidate), alternated, 2-core development machine.
# Usage: bench/results/dev/s8_probe/ab.sh <entmaxkv binary> <runs> <out dir>
set -euo pipefail
bin=$1; runs=$2; out=$3
mkdir -p "$out"
for i in $(seq 1 "$runs"); do
  for p in 0 256; do
    uptime > "$out/uptime_p${p}_$i.txt"
    ENTMAXKV_CERT_PROBE=$p "$bin" bench --contexts 128K --methods certified,topk --iters 10 --no-accuracy \
      --json "$out/p${p}_$i.json" > "$out/p${p}_$i.log" 2>&1
  done
done
