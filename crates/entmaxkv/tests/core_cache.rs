//! Cache statistics under random append/release sequences equal statistics recomputed from
//! scratch in f64; the sketch encloses every key.

use entmaxkv::cache::{CacheConfig, ChunkLayout, PagedKvCache, StatsDType};
use entmaxkv::stats::reference_stats;
use entmaxkv::DType;
use proptest::prelude::*;

fn check_all_pages(cache: &PagedKvCache, exact_f32_stats: bool) {
    let (d, ps) = (cache.head_dim(), cache.page_size());
    for id in cache.sequences() {
        let s = cache.seq(id).unwrap();
        for i in 0..s.pages.len() {
            let n = s.page_len(i, ps);
            for h in 0..cache.num_kv_heads() {
                let mut keys = vec![0.0f32; n * d];
                for t in 0..n {
                    cache
                        .read_key(id, i * ps + t, h, &mut keys[t * d..(t + 1) * d])
                        .unwrap();
                }
                let r = reference_stats(&keys, d);
                let got = cache.page_stats(id, i, h).unwrap();
                for c in 0..d {
                    // Bounds enclose every key, always.
                    assert!(got[0][c] as f64 <= r[0][c] && got[1][c] as f64 >= r[1][c]);
                    for st in 0..4 {
                        let (g, e) = (got[st][c] as f64, r[st][c]);
                        let tol = if exact_f32_stats {
                            1e-5 * e.abs().max(1e-3)
                        } else {
                            // stored in f16/bf16: one rounding of the value
                            1e-2 * e.abs().max(1e-2)
                        };
                        assert!(
                            (g - e).abs() <= tol,
                            "stat {st} page {i} head {h} ch {c}: {g} vs {e}"
                        );
                    }
                }
            }
        }
    }
}

fn dtype_strategy() -> impl Strategy<Value = DType> {
    prop_oneof![Just(DType::F32), Just(DType::F16), Just(DType::Bf16)]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn incremental_stats_match_recomputed(
        dtype in dtype_strategy(),
        f32_stats in any::<bool>(),
        ps in 1usize..20,
        hkv in 1usize..4,
        d in 1usize..20,
        ops in prop::collection::vec((0usize..3, 1usize..40, any::<bool>()), 1..25),
        seed in any::<u64>(),
    ) {
        let cfg = CacheConfig::new(hkv, d, 4096)
            .with_page_size(ps)
            .with_kv_dtype(dtype)
            .with_stats_dtype(if f32_stats { StatsDType::F32 } else { StatsDType::Kv });
        let mut cache = PagedKvCache::new(cfg).unwrap();
        let mut ids = [cache.add_sequence(), cache.add_sequence(), cache.add_sequence()];
        let mut syn = entmaxkv::synth::Synth::new(seed);
        for (which, n, release) in ops {
            if release && which == 2 {
                cache.release(ids[2]).unwrap();
                ids[2] = cache.add_sequence();
                continue;
            }
            let k: Vec<f32> = syn.normals(n * hkv * d).iter().map(|x| x * 3.0 + 1.0).collect();
            let v = syn.normals(n * hkv * d);
            let layout = if n % 2 == 0 { ChunkLayout::TokenMajor } else { ChunkLayout::HeadMajor };
            cache.append(ids[which], &k, &v, layout).unwrap();
        }
        check_all_pages(&cache, f32_stats);
    }
}

#[test]
fn appended_values_read_back_in_both_layouts() {
    let (hkv, d, n) = (2, 3, 5);
    let cfg = CacheConfig::new(hkv, d, 8)
        .with_page_size(2)
        .with_kv_dtype(DType::F32);
    let mut cache = PagedKvCache::new(cfg).unwrap();
    let a = cache.add_sequence();
    let b = cache.add_sequence();
    let k: Vec<f32> = (0..n * hkv * d).map(|i| i as f32).collect();
    cache.append(a, &k, &k, ChunkLayout::TokenMajor).unwrap();
    cache.append(b, &k, &k, ChunkLayout::HeadMajor).unwrap();
    let mut row = vec![0.0; d];
    for t in 0..n {
        for h in 0..hkv {
            cache.read_key(a, t, h, &mut row).unwrap();
            assert_eq!(row, k[(t * hkv + h) * d..(t * hkv + h + 1) * d]);
            cache.read_value(b, t, h, &mut row).unwrap();
            assert_eq!(row, k[(h * n + t) * d..(h * n + t + 1) * d]);
        }
    }
}

#[test]
fn release_returns_pages_and_they_are_reused() {
    let cfg = CacheConfig::new(1, 4, 10).with_page_size(4);
    let mut cache = PagedKvCache::new(cfg).unwrap();
    let a = cache.add_sequence();
    let x = vec![1.0f32; 4 * 9];
    cache.append(a, &x, &x, ChunkLayout::TokenMajor).unwrap();
    assert_eq!(cache.free_pages(), 7);
    let pages_a = cache.seq(a).unwrap().pages.to_vec();
    cache.release(a).unwrap();
    assert_eq!(cache.free_pages(), 10);
    let b = cache.add_sequence();
    cache.append(b, &x, &x, ChunkLayout::TokenMajor).unwrap();
    assert_eq!(cache.seq(b).unwrap().pages, &pages_a[..]);
}

#[test]
fn append_never_moves_existing_pages() {
    let cfg = CacheConfig::new(2, 8, 64)
        .with_page_size(16)
        .with_kv_dtype(DType::F32);
    let mut cache = PagedKvCache::new(cfg).unwrap();
    let a = cache.add_sequence();
    let x = vec![0.5f32; 2 * 8];
    let mut tables = Vec::new();
    for _ in 0..100 {
        cache.append(a, &x, &x, ChunkLayout::TokenMajor).unwrap();
        tables.push(cache.seq(a).unwrap().pages.to_vec());
    }
    // Each block table is a prefix of the next: pages never move.
    for w in tables.windows(2) {
        assert!(w[1].starts_with(&w[0]));
    }
}

/// Cache equality is bit for bit (what "unchanged" means after a refused call): a key stored
/// as −0 differs from one stored as +0. `clone_from` (which reuses the target's allocations)
/// gives an equal, independent cache, also from a cache of another shape and storage type.
#[test]
fn equality_is_bitwise_and_clone_from_copies_everything() {
    use ChunkLayout::TokenMajor;
    for dt in [DType::F32, DType::F16, DType::Bf16] {
        let cfg = CacheConfig::new(2, 3, 4)
            .with_page_size(2)
            .with_kv_dtype(dt);
        let mut a = PagedKvCache::new(cfg).unwrap();
        let id = a.add_sequence();
        // one token (H_kv = 2, D = 3), and the same token with +0 in place of −0
        let k = [0.5f32, -1.0, 2.0, 0.25, 3.0, -0.0];
        let mut pos = k;
        pos[5] = 0.0;
        a.append(id, &k, &k, TokenMajor).unwrap();
        let mut b = a.clone();
        assert_eq!(a, b);
        a.append(id, &k, &k, TokenMajor).unwrap();
        b.append(id, &pos, &pos, TokenMajor).unwrap();
        assert_ne!(a, b, "{dt:?}: a key stored as -0 equals one stored as +0");
        let mut c = PagedKvCache::new(CacheConfig::new(1, 1, 1)).unwrap();
        c.clone_from(&a);
        assert_eq!(c, a);
        b.clone_from(&a);
        assert_eq!(b, a);
        c.append(id, &k, &k, TokenMajor).unwrap();
        assert_ne!(c, a);
        assert_eq!(a.seq_len(id).unwrap(), 2);
    }
}
