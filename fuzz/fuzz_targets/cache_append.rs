//! Random interleavings of sequence creation, appends of random lengths (both layouts),
//! releases and bad calls: no panic, free-page accounting exact, incremental statistics
//! equal to statistics recomputed from the stored keys, rejected calls change nothing.
#![no_main]
use arbitrary::Arbitrary;
use entmaxkv::cache::{CacheConfig, ChunkLayout, PagedKvCache, SeqId, StatsDType};
use entmaxkv::stats::reference_stats;
use entmaxkv::DType;
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
enum Op {
    Add,
    Append { seq: u8, n: u8, head_major: bool, bad: u8 },
    Release { seq: u8 },
}

#[derive(Debug, Arbitrary)]
struct Input {
    dtype: u8,
    f32_stats: bool,
    ps: u8,
    hkv: u8,
    d: u8,
    pages: u8,
    ops: Vec<Op>,
}

fuzz_target!(|inp: Input| {
    let dtype = [DType::F32, DType::F16, DType::Bf16][inp.dtype as usize % 3];
    let (ps, hkv, d) = (1 + inp.ps as usize % 20, 1 + inp.hkv as usize % 3, 1 + inp.d as usize % 24);
    let cfg = CacheConfig::new(hkv, d, 1 + inp.pages as usize % 64)
        .with_page_size(ps)
        .with_kv_dtype(dtype)
        .with_stats_dtype(if inp.f32_stats { StatsDType::F32 } else { StatsDType::Kv });
    let mut cache = PagedKvCache::new(cfg).unwrap();
    let mut ids: Vec<SeqId> = Vec::new();
    let mut x = 0.37f32;
    for op in inp.ops.iter().take(64) {
        match *op {
            Op::Add => ids.push(cache.add_sequence()),
            Op::Append { seq, n, head_major, bad } => {
                let id = if ids.is_empty() { SeqId(1_000_000) } else { ids[seq as usize % ids.len()] };
                let n = n as usize % 40;
                let mut k: Vec<f32> = (0..n * hkv * d)
                    .map(|_| {
                        x = (x * 3.9).fract() * 2.0 - 0.5;
                        x * 7.0
                    })
                    .collect();
                let v = k.clone();
                if bad % 7 == 0 && !k.is_empty() {
                    k[0] = f32::NAN;
                }
                let layout = if head_major { ChunkLayout::HeadMajor } else { ChunkLayout::TokenMajor };
                let before = cache.clone();
                if cache.append(id, &k, &v, layout).is_err() {
                    assert!(cache == before, "rejected append changed the cache");
                }
            }
            Op::Release { seq } => {
                if !ids.is_empty() {
                    let i = seq as usize % ids.len();
                    cache.release(ids.remove(i)).unwrap();
                }
            }
        }
    }
    let used: usize = ids.iter().map(|&i| cache.seq(i).unwrap().pages.len()).sum();
    assert_eq!(used + cache.free_pages(), cache.capacity_pages());
    for &id in &ids {
        let s = cache.seq(id).unwrap();
        for i in 0..s.pages.len() {
            let n = s.page_len(i, ps);
            for h in 0..hkv {
                let mut keys = vec![0.0f32; n * d];
                for t in 0..n {
                    cache.read_key(id, i * ps + t, h, &mut keys[t * d..(t + 1) * d]).unwrap();
                }
                let r = reference_stats(&keys, d);
                let got = cache.page_stats(id, i, h).unwrap();
                for c in 0..d {
                    assert!(got[0][c] as f64 <= r[0][c] && got[1][c] as f64 >= r[1][c]);
                    if inp.f32_stats {
                        for st in 2..4 {
                            let (g, e) = (got[st][c] as f64, r[st][c]);
                            assert!((g - e).abs() <= 1e-5 * e.abs().max(1e-3), "stat drift {g} vs {e}");
                        }
                    }
                }
            }
        }
    }
});
