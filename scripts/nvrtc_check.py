#!/usr/bin/env python3
"""Compile the CUDA kernels with NVRTC on a machine without a GPU (a syntax and type check
before spending device time). NVRTC needs no driver: it only turns CUDA C into PTX.

    pip download --no-deps "nvidia-cuda-nvrtc==13.0.*" -d /tmp/nvrtc   # then unzip the wheel
    python3 scripts/nvrtc_check.py --lib /tmp/nvrtc/nvidia/cu13/lib/libnvrtc.so.13

Compiles the decode module (the sources concatenated as gpu/ctx.rs does) for every
combination of KV/statistics dtype, head dim and query heads per task that the tests use,
for sm_90. Exit status 1 on the first failure, with NVRTC's log.
"""
import argparse
import ctypes
import itertools
import pathlib
import sys

KDIR = pathlib.Path(__file__).resolve().parent.parent / "crates/entmaxkv/src/gpu/kernels"


# The decode module's sources, concatenated in this order as gpu/ctx.rs does.
PARTS = ["common.cuh", "cache.cu", "topk.cu", "gauss_beta.cuh", "gauss.cu", "attn.cu", "cert.cu", "gauss_fused.cu",
         "robust_bound.cuh", "robust.cu"]


def decode_source(kdir=KDIR):
    return "\n".join((pathlib.Path(kdir) / p).read_text() for p in PARTS) + "\n"


def add_config_args(ap):
    """The one decode configuration kernel_sizes.py and kernel_sass.py compile (argparse)."""
    ap.add_argument("--lib", required=True, help="path to libnvrtc.so")
    ap.add_argument("--kernels", default=str(KDIR))
    ap.add_argument("--kv", type=int, default=1, help="KV_T: 0 f32, 1 f16, 2 bf16")
    ap.add_argument("--st", type=int, default=1, help="ST_T (statistics dtype)")
    ap.add_argument("--d", type=int, default=64, help="HEAD_DIM")
    ap.add_argument("--tg", type=int, default=1, help="query heads per task")
    ap.add_argument("--arch", default="sm_90")
    ap.add_argument("--generic", type=int, default=0, help="GAUSS_GENERIC: 1 compiles the quadrature τ̂ in")
    ap.add_argument("-D", dest="defines", action="append", default=[], metavar="NAME=VALUE",
                    help="a further -D option (development knobs such as SEL_UNROLL=8)")


def compile_config_cubin(a, extra=()):
    """NVRTC status, log and cubin of the configuration add_config_args parsed into `a`
    (`extra`: further NVRTC options, e.g. --ptxas-options=-v for ptxas' resource report)."""
    unroll = 4 if a.tg > 1 else 8
    opts = [f"--gpu-architecture={a.arch}", "--std=c++17", f"-DKV_T={a.kv}", f"-DST_T={a.st}",
            f"-DHEAD_DIM={a.d}", f"-DTG={a.tg}", f"-DUNROLL_ROWS={unroll}", f"-DGAUSS_GENERIC={a.generic}"]
    opts += [f"-D{d}" for d in a.defines] + list(extra)
    return compile_src(ctypes.CDLL(a.lib), decode_source(a.kernels), opts, cubin=True)


def compile_src(lib, src, opts, cubin=False):
    """NVRTC status and log; with `cubin`, also the cubin bytes (None on failure)."""
    prog = ctypes.c_void_p()
    r = lib.nvrtcCreateProgram(ctypes.byref(prog), src.encode(), b"decode.cu", 0, None, None)
    assert r == 0, f"nvrtcCreateProgram: {r}"
    arr = (ctypes.c_char_p * len(opts))(*[o.encode() for o in opts])
    r = lib.nvrtcCompileProgram(prog, len(opts), arr)
    size = ctypes.c_size_t()
    lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
    log = ctypes.create_string_buffer(size.value)
    lib.nvrtcGetProgramLog(prog, log)
    code = None
    if cubin and r == 0:
        n = ctypes.c_size_t()
        lib.nvrtcGetCUBINSize(prog, ctypes.byref(n))
        buf = ctypes.create_string_buffer(n.value)
        lib.nvrtcGetCUBIN(prog, buf)
        code = buf.raw
    lib.nvrtcDestroyProgram(ctypes.byref(prog))
    if cubin:
        return r, log.value.decode(errors="replace"), code
    return r, log.value.decode(errors="replace")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lib", required=True, help="path to libnvrtc.so")
    ap.add_argument("--quick", action="store_true", help="one configuration (both GAUSS_GENERIC values) only")
    a = ap.parse_args()
    lib = ctypes.CDLL(a.lib)
    src = decode_source()
    # The last field: GAUSS_GENERIC (the quadrature τ̂ compiled in or not).
    configs = list(itertools.product([1, 0, 2], [1, 0], [64, 128], [1, 4, 8], [0, 1]))
    # Head dims off the 16-multiple grid: the robust kernels' other combining orders
    # (robust_bound.cuh: D % 16 != 0 and D % 8 != 0), and a GQA group of 3.
    configs += [(1, 1, 40, 2, 1), (0, 0, 36, 1, 0), (2, 1, 64, 3, 1)]
    if a.quick:
        configs = configs[:2] + configs[-3:]  # f16, D 64, one head: closed forms and quadrature
    for kv, st, d, tg, gen in configs:
        unroll = 4 if tg > 1 else 8
        opts = ["--gpu-architecture=compute_90", "--std=c++17", f"-DKV_T={kv}", f"-DST_T={st}",
                f"-DHEAD_DIM={d}", f"-DTG={tg}", f"-DUNROLL_ROWS={unroll}", f"-DGAUSS_GENERIC={gen}"]
        r, log = compile_src(lib, src, opts)
        if r != 0:
            print(f"FAILED kv={kv} st={st} d={d} tg={tg} generic={gen}\n{log}")
            return 1
        if log.strip():
            print(f"kv={kv} st={st} d={d} tg={tg} generic={gen}: warnings\n{log}")
    probe = (KDIR / "probe.cu").read_text()
    r, log = compile_src(lib, probe, ["--gpu-architecture=compute_90", "--std=c++17"])
    if r != 0:
        print(f"FAILED probe\n{log}")
        return 1
    print(f"ok: {len(configs)} decode configurations and the probe module compile")
    return 0


if __name__ == "__main__":
    sys.exit(main())
