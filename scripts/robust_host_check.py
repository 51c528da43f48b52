#!/usr/bin/env python3
"""Checks the GPU port of the CPU's page and token score bounds (gpu/kernels/robust_bound.cuh,
used by the robust Gaussian criterion's kernels in robust.cu) bit for bit against the CPU,
without a GPU:

    python3 scripts/robust_host_check.py [--target-dir DIR]

1. `cargo test --release -p entmaxkv --lib robust_device_reference_dump -- --ignored` writes
   the CPU's bounds (certificate/bounds.rs: box ends, quantised weights, every token's
   interval) for 288 random pages: head dims 64, 128, 40, 36, 256, 8 (both combining orders
   of the page sums and of the quantisation error), sketch widths 0-8, magnitudes 1e-3 to
   300, ALiBi slopes, a non-finite row; once on the CPU's AVX-512 path (where present) and
   once with ENTMAXKV_NO_AVX512=1 (AVX2/portable);
2. scripts/robust_host.cpp (the same .cuh text NVRTC compiles, built as host C++ with
   -ffp-contract=off, the 8-lane combination of robust.cu replayed on arrays) recomputes
   them and compares every bit;
3. `robust_selection_reference_dump` (selection/gaussian/robust.rs) writes 100+ tasks of the
   CPU's robust selection (Iid, structured and adversarial keys; GQA groups 1, 2, 4; head
   dims 64, 128, 40; page sizes 16, 32; sketch widths 0, 2, 3, 4, 8; α 1.5, 2, 4/3, 1.7;
   ALiBi; sink pages 0-2) with its inputs and τ̂, and `robust_host sel` replays the device
   kernels' control flow (rob_box, rob_tok1, rob_solve1, rob_tok2, rob_solve2, rob_pack:
   the same decisions, the shared robust_bound.cuh arithmetic and solver) on them: kept pages
   must be equal and T within 1e-12. Its last 24 trials are the softmax mode (α = 1: rob_box,
   rob_bmax, rob_tok1, rob_solve1, rob_tok2, rob_solve2, rob_pack with softmax = 1, the
   rb_sm_* helpers of robust_bound.cuh): kept pages equal, L (the log-sum-exp lower bound)
   within 1e-12 of the CPU's.
Exit status 0 iff every case matches.
"""
import argparse
import os
import pathlib
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--target-dir", default=os.environ.get("CARGO_TARGET_DIR"))
    a = ap.parse_args()
    env = dict(os.environ)
    if a.target_dir:
        env["CARGO_TARGET_DIR"] = a.target_dir
    with tempfile.TemporaryDirectory() as tmp:
        exe = pathlib.Path(tmp) / "robust_host"
        subprocess.run(["g++", "-O2", "-std=c++17", "-ffp-contract=off", "-o", str(exe),
                        str(ROOT / "scripts/robust_host.cpp")], check=True)
        status = 0
        for name, extra in [("default", {}), ("no-avx512", {"ENTMAXKV_NO_AVX512": "1"})]:
            ref = pathlib.Path(tmp) / f"ref-{name}.txt"
            e = dict(env, ENTMAXKV_ROBUST_REF=str(ref), **extra)
            subprocess.run(["cargo", "test", "--release", "-q", "-p", "entmaxkv", "--lib",
                            "robust_device_reference_dump", "--", "--ignored"],
                           cwd=ROOT, env=e, check=True, stdout=subprocess.DEVNULL)
            r = subprocess.run([str(exe), str(ref)], capture_output=True, text=True)
            print(f"{name}: {r.stdout.strip()}")
            if r.returncode != 0:
                print(r.stderr[-4000:])
                status = 1
        ref = pathlib.Path(tmp) / "sel.txt"
        subprocess.run(["cargo", "test", "--release", "-q", "-p", "entmaxkv", "--lib",
                        "robust_selection_reference_dump", "--", "--ignored"],
                       cwd=ROOT, env=dict(env, ENTMAXKV_ROBUST_SEL_REF=str(ref)), check=True,
                       stdout=subprocess.DEVNULL)
        r = subprocess.run([str(exe), "sel", str(ref)], capture_output=True, text=True)
        print(f"selection: {r.stdout.strip()}")
        if r.returncode != 0:
            print(r.stderr[-4000:])
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
