#!/usr/bin/env python3
"""Dense softmax decode baseline: torch scaled_dot_product_attention, fp16, one query token.

Times the same shapes as `entmaxkv bench --device cuda` with the same protocol (the L2 cache
flushed before every call, the call replayed from a CUDA graph as our steps are, CUDA events
around the replay only, median of many calls) and writes JSON that the bench merges with
`--sdpa-json`. The graph keeps Python's dispatch time out of the measurement (timed eagerly,
a slow host adds its launch latency to the median); `--eager` times plain calls instead.

    python3 bench/sdpa_baseline.py --contexts 32K,128K,1M --batch 1 --heads 8 --kv-heads 8 \
        --head-dim 64 --json sdpa.json
"""
import argparse
import json
import sys

import torch
import torch.nn.functional as F


def tokens(s):
    s = s.strip()
    mul = {"k": 1024, "K": 1024, "m": 1 << 20, "M": 1 << 20}.get(s[-1], 1)
    return int(s[:-1] if mul > 1 else s) * mul


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--contexts", default="32K,128K,1M")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--kv-heads", type=int, default=None)
    ap.add_argument("--head-dim", type=int, default=64)
    ap.add_argument("--iters", type=int, default=100)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--no-flush", action="store_true", help="do not flush L2 between calls")
    ap.add_argument("--eager", action="store_true", help="time plain calls, not a CUDA graph replay")
    ap.add_argument("--json", default=None)
    ap.add_argument("--append", action="store_true", help="append to an existing --json file")
    a = ap.parse_args()
    kvh = a.kv_heads or a.heads
    dev = torch.device("cuda")
    torch.manual_seed(0)
    props = torch.cuda.get_device_properties(dev)
    flush = torch.empty(max(4 * props.L2_cache_size, 64 << 20), dtype=torch.uint8, device=dev)
    rows = []
    for ctx in [tokens(c) for c in a.contexts.split(",")]:
        q = torch.randn(a.batch, a.heads, 1, a.head_dim, device=dev, dtype=torch.float16)
        k = torch.randn(a.batch, kvh, ctx, a.head_dim, device=dev, dtype=torch.float16)
        v = torch.randn(a.batch, kvh, ctx, a.head_dim, device=dev, dtype=torch.float16)
        kw = {"enable_gqa": True} if kvh != a.heads else {}
        fn = lambda: F.scaled_dot_product_attention(q, k, v, **kw)
        backend = "default"
        try:
            from torch.nn.attention import SDPBackend, sdpa_kernel

            with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
                fn()
            backend = "flash"
        except Exception as e:  # noqa: BLE001
            print(f"flash backend unavailable ({e}); using the default choice", file=sys.stderr)

        def call():
            if backend == "flash":
                with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
                    return fn()
            return fn()

        for _ in range(a.warmup):
            call()
        torch.cuda.synchronize()
        run = call
        graphed = False
        if not a.eager:
            try:
                side = torch.cuda.Stream()
                side.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(side):
                    for _ in range(3):
                        call()
                torch.cuda.current_stream().wait_stream(side)
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph):
                    call()
                run = graph.replay
                graphed = True
                for _ in range(a.warmup):
                    run()
                torch.cuda.synchronize()
            except Exception as e:  # noqa: BLE001
                print(f"graph capture failed ({e}); timing plain calls", file=sys.stderr)
        times = []
        e0 = torch.cuda.Event(enable_timing=True)
        e1 = torch.cuda.Event(enable_timing=True)
        for _ in range(a.iters):
            if not a.no_flush:
                flush.zero_()
            e0.record()
            run()
            e1.record()
            e1.synchronize()
            times.append(e0.elapsed_time(e1))
        times.sort()
        med = times[len(times) // 2]
        row = {
            "batch": a.batch,
            "heads": a.heads,
            "kv_heads": kvh,
            "head_dim": a.head_dim,
            "context": ctx,
            "median_ms": med,
            "min_ms": times[0],
            "p90_ms": times[int(0.9 * (len(times) - 1) + 0.5)],
            "backend": backend,
            "kv_gbs": 2 * a.batch * kvh * ctx * a.head_dim * 2 / (med * 1e-3) / 1e9,
            "device": props.name,
            "torch": torch.__version__,
            "l2_flushed": not a.no_flush,
            "graph": graphed,
        }
        rows.append(row)
        print(f"sdpa B{a.batch} H{a.heads}/{kvh} D{a.head_dim} ctx {ctx}: {med:.4f} ms "
              f"(min {times[0]:.4f}, {row['kv_gbs']:.0f} GB/s K+V, {backend}{', graph' if graphed else ''})", flush=True)
        del q, k, v
        torch.cuda.empty_cache()
    if a.json:
        if a.append:
            try:
                rows = json.load(open(a.json)) + rows
            except FileNotFoundError:
                pass
        json.dump(rows, open(a.json, "w"), indent=1)


if __name__ == "__main__":
    main()
