#!/usr/bin/env python3
"""SASS of decode kernels, without a GPU: NVRTC compiles the sources (concatenated as
gpu/ctx.rs does) to an sm_90 cubin, nvdisasm prints each named kernel's section, and the branch
labels are dropped so two builds can be compared with diff. A refactor of kernel code whose
SASS comes out the same is shown to change nothing on the device.

    pip download --no-deps "nvidia-cuda-nvrtc==13.0.*" -d /tmp/nvrtc        # then unzip
    pip download --no-deps "nvidia-cuda-nvdisasm==13.2.78" -d /tmp/nvdis     # then unzip
    LD_LIBRARY_PATH=/tmp/nvrtc/nvidia/cu13/lib python3 scripts/kernel_sass.py \
        --lib /tmp/nvrtc/nvidia/cu13/lib/libnvrtc.so.13 \
        --nvdisasm /tmp/nvdis/nvidia/cu13/bin/nvdisasm attn_entmax_tail15 > after.sass
    # the same with --kernels <old checkout>/crates/entmaxkv/src/gpu/kernels > before.sass
    diff before.sass after.sass

ptxas is not always deterministic: the same source gave `cert_bounds` (TG = 4) in two
schedules on successive compiles. Compile the base twice before reading a diff as a change.
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
    ap.add_argument("kernel", nargs="+", help="extern \"C\" kernel names, e.g. attn_entmax_tail15")
    ap.add_argument("--nvdisasm", required=True, help="path to nvdisasm")
    add_config_args(ap)
    a = ap.parse_args()
    r, log, code = compile_config_cubin(a)
    if r != 0:
        print(log, file=sys.stderr)
        return 1
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(code)
        f.flush()
        out = subprocess.run([a.nvdisasm, "-c", f.name], capture_output=True, text=True, check=True).stdout
    for k in a.kernel:
        start = out.find(f".text.{k}:")
        if start < 0:
            print(f"no kernel {k} in the cubin", file=sys.stderr)
            return 1
        end = out.find(".section", start + 1)
        body = out[start:end if end > 0 else len(out)]
        print(re.sub(r"\.L_x_\d+", ".L", body), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
