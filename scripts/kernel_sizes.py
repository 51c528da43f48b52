#!/usr/bin/env python3
"""SASS size of every decode kernel, without a GPU: NVRTC compiles the sources (concatenated as
gpu/ctx.rs does) straight to an sm_90 cubin, and readelf lists each kernel's .text section
(callees marked __noinline__ are placed inside their callers' sections).

    pip download --no-deps "nvidia-cuda-nvrtc==13.0.*" -d /tmp/nvrtc   # then unzip the wheel
    LD_LIBRARY_PATH=/tmp/nvrtc/nvidia/cu13/lib python3 scripts/kernel_sizes.py \
        --lib /tmp/nvrtc/nvidia/cu13/lib/libnvrtc.so.13 [--kernels DIR] [--kv 1 --st 1 --d 64 --tg 1]

Why it matters: after the benchmark's L2 flush a step's code is cold, and the one-CTA kernels
(the entmax tail, the Gaussian count, the radix select) spend ~40% of their stall cycles on
instruction fetch (BENCHMARKS dev log run 15), so their size is part of their latency.
"""
import argparse
import pathlib
import re
import subprocess
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from nvrtc_check import add_config_args, compile_config_cubin  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    add_config_args(ap)
    a = ap.parse_args()
    # ptxas' resource report (registers, spills, shared memory) comes with the sizes.
    r, log, code = compile_config_cubin(a, ["--ptxas-options=-v"])
    if r != 0:
        print(log)
        return 1
    res, cur = {}, None
    for line in log.splitlines():
        m = re.search(r"Compiling entry function '(\w+)'", line)
        if m:
            cur = m.group(1)
            res[cur] = {}
        elif cur:
            m = re.search(r"Used (\d+) registers", line)
            if m:
                res[cur]["regs"] = int(m.group(1))
            m = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", line)
            if m:
                res[cur]["spill"] = int(m.group(1)) + int(m.group(2))
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(code)
        f.flush()
        out = subprocess.run(["readelf", "-S", "-W", f.name], capture_output=True, text=True).stdout
    total = 0
    print(f"{'kernel':24s} {'bytes':>8s} {'instrs':>7s} {'regs':>5s} {'spill':>6s}   "
          f"({a.arch}, KV_T={a.kv} ST_T={a.st} D={a.d} TG={a.tg})")
    for line in out.splitlines():
        f = line.replace("[ ", "[").split()
        if len(f) > 6 and f[1].startswith(".text.") and f[2] == "PROGBITS":
            size = int(f[5], 16)
            total += size
            k = res.get(f[1][6:], {})
            print(f"{f[1][6:]:24s} {size:8d} {size // 16:7d} {k.get('regs', '?'):>5} {k.get('spill', '?'):>6}")
    print(f"{'total':24s} {total:8d} {total // 16:7d}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
