#!/bin/bash
cd "$(dirname "$0")"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > $OUT/card.txt
date -u >> $OUT/card.txt
( timeout 420 ./gpu_decode --test-threads=8 2>&1; echo "gpu_decode rc=$?" ) > $OUT/tests.log
grep -E "^test |test result|rc=|panicked" $OUT/tests.log | cut -c1-300
grep -A8 panicked $OUT/tests.log | head -30
date -u >> $OUT/card.txt
