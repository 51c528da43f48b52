//! Device out of memory: a plan whose workspaces cannot fit on the card is a typed
//! `Error::DeviceOutOfMemory` naming the request, the partial allocations are returned, and
//! the cache and the GPU keep working afterwards. Skips loudly without a GPU.

use entmaxkv::attention::oracle::oracle_decode;
use entmaxkv::attention::AttentionParams;
use entmaxkv::cache::{CacheConfig, ChunkLayout, PagedKvCache, StatsDType};
use entmaxkv::decode::{DecodeConfig, Method};
use entmaxkv::gpu::cache::host_bytes;
use entmaxkv::gpu::{DeviceCacheOptions, DeviceKvCache, GpuDecoder};
use entmaxkv::metrics::compare;
use entmaxkv::selection::topk::Budget;
use entmaxkv::synth::Synth;
use entmaxkv::{DType, Error};

mod common;

#[test]
fn oversized_plan_is_a_typed_out_of_memory_and_leaves_everything_usable() {
    let Some(gpu) = common::gpu_or_skip("gpu_oom") else {
        return;
    };
    let (h, hkv, d, b) = (64, 8, 64, 128);
    let cfg = CacheConfig::new(hkv, d, 4 * b)
        .with_kv_dtype(DType::F16)
        .with_stats_dtype(StatsDType::Kv);
    let mut host = PagedKvCache::new(cfg).unwrap();
    let mut syn = Synth::new(5);
    let ids: Vec<_> = (0..b).map(|_| host.add_sequence()).collect();
    for &id in &ids {
        let n = 40;
        let k: Vec<f32> = (0..n * hkv * d).map(|_| syn.normal()).collect();
        let v: Vec<f32> = (0..n * hkv * d).map(|_| syn.normal()).collect();
        host.append(id, &k, &v, ChunkLayout::TokenMajor).unwrap();
    }
    let dev = DeviceKvCache::upload(&host, DeviceCacheOptions::default()).unwrap();
    let before = host_bytes(&host);
    let free0 = gpu.mem_info().unwrap().0;
    // 128 sequences × 64 query heads per-head top-k, planned for 4M tokens each: the
    // candidate workspaces alone need ~270 GB, more than any card holds.
    let params = AttentionParams::new(h, 1.5);
    let big = DecodeConfig::new(params.clone(), Method::TopK(Budget::Fraction(0.125)));
    let err = GpuDecoder::new(&dev, &ids, 4 << 20, big)
        .err()
        .expect("the plan must fail");
    assert!(
        matches!(err, Error::DeviceOutOfMemory { bytes, .. } if bytes > 0),
        "expected DeviceOutOfMemory with the request size, got {err:?}"
    );
    eprintln!("oversized plan: {err}");
    // Partial allocations were returned.
    let free1 = gpu.mem_info().unwrap().0;
    assert!(
        free1 + (64 << 20) >= free0,
        "device memory not returned: free {free0} -> {free1}"
    );
    // The cache is untouched and a normal plan on it works and is right.
    assert!(host_bytes(&host) == before);
    let (dk, dv) = dev.download_kv().unwrap();
    assert!(dk == before.0 && dv == before.1, "device pool changed");
    let q: Vec<f32> = (0..b * h * d).map(|_| syn.normal()).collect();
    let dense = DecodeConfig::new(params.clone(), Method::Dense);
    let mut dec = GpuDecoder::new(&dev, &ids, 64, dense).unwrap();
    let mut out = vec![0.0f32; q.len()];
    dec.step(&dev, &q, &mut out).unwrap();
    let oracle = oracle_decode(&host, &ids, &q, &params).unwrap();
    let rel = compare(&out, &oracle.out).unwrap().rel;
    assert!(rel <= 2e-3, "dense step after the failed plan: rel {rel}");
    eprintln!("after the failed plan: dense step rel {rel:.2e}, free memory {free0} -> {free1}");
}
