#!/usr/bin/env python3
"""SASS of one decode kernel, without a GPU: NVRTC compiles the sources (concatenated as
gpu/ctx.rs does) to an sm_90 cubin, nvdisasm prints the kernel's section, and the branch
labels are dropped so two builds can be compared with diff. A refactor of kernel code whose
SASS comes out the same is shown to change nothing on the device.

    pip download --no-deps "nvidia-cuda-nvrtc==13.0.*" -d /tmp/nvrtc        # then unzip
    pip download --no-deps "nvidia-cuda-nvdisasm==13.2.78" -d /tmp/nvdis     # then unzip
    LD_LIBRARY_PATH=/tmp/nvrtc/nvidia/cu13/lib python3 scripts/kernel_sass.py \
        --lib /tmp/nvrtc/nvidia/cu13/lib/libnvrtc.so.13 \
        --nvdisasm /tmp/nvdis/nvidia/cu13/bin/nvdisasm attn_entmax_tail15 > after.sass
    # the same with --kernels <old checkout>/crates/entmaxkv/src/gpu/kernels > before.sass
    diff before.sass after.sass
"""
import argparse
import ctypes
import pathlib
import re
import subprocess
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from nvrtc_check import KDIR, compile_src, decode_source  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("kernel", help="extern \"C\" kernel name, e.g. attn_entmax_tail15")
    ap.add_argument("--lib", required=True, help="path to libnvrtc.so")
    ap.add_argument("--nvdisasm", required=True, help="path to nvdisasm")
    ap.add_argument("--kernels", default=str(KDIR))
    ap.add_argument("--kv", type=int, default=1, help="KV_T: 0 f32, 1 f16, 2 bf16")
    ap.add_argument("--st", type=int, default=1, help="ST_T (statistics dtype)")
    ap.add_argument("--d", type=int, default=64, help="HEAD_DIM")
    ap.add_argument("--tg", type=int, default=1, help="query heads per task")
    ap.add_argument("--generic", type=int, default=0, help="GAUSS_GENERIC")
    ap.add_argument("--arch", default="sm_90")
    a = ap.parse_args()
    lib = ctypes.CDLL(a.lib)
    unroll = 4 if a.tg > 1 else 8
    opts = [f"--gpu-architecture={a.arch}", "--std=c++17", f"-DKV_T={a.kv}", f"-DST_T={a.st}",
            f"-DHEAD_DIM={a.d}", f"-DTG={a.tg}", f"-DUNROLL_ROWS={unroll}", f"-DGAUSS_GENERIC={a.generic}"]
    r, log, code = compile_src(lib, decode_source(pathlib.Path(a.kernels)), opts, cubin=True)
    if r != 0:
        print(log, file=sys.stderr)
        return 1
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(code)
        f.flush()
        out = subprocess.run([a.nvdisasm, "-c", f.name], capture_output=True, text=True, check=True).stdout
    start = out.find(f".text.{a.kernel}:")
    if start < 0:
        print(f"no kernel {a.kernel} in the cubin", file=sys.stderr)
        return 1
    end = out.find(".section", start + 1)
    body = out[start:end if end > 0 else len(out)]
    print(re.sub(r"\.L_x_\d+", ".L", body), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
