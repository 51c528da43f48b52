//! Top-k with sketch page scores: every page score is a rigorous upper bound of the page's
//! best exact score and never above Quest's key-range bound; a full budget equals dense.

use entmaxkv::attention::AttentionParams;
use entmaxkv::cache::{CacheConfig, StatsDType};
use entmaxkv::decode::{DecodeConfig, Decoder, Method};
use entmaxkv::metrics::compare;
use entmaxkv::selection::topk::{self, Budget, TopkScoring};
use entmaxkv::selection::{topk_sketch, SelectScratch, SelectionContext};
use entmaxkv::synth::{Synth, Workload};
use entmaxkv::DType;
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn sketch_scores_bound_the_best_score_and_beat_the_box(
        bits in prop_oneof![Just(0u32), Just(2), Just(3), Just(4), Just(8)],
        group in 1usize..4,
        len in 17usize..400,
        structured in any::<bool>(),
        alibi in any::<bool>(),
        kv in prop_oneof![Just(DType::F16), Just(DType::F32)],
        seed in any::<u64>(),
    ) {
        let (hkv, d, ps) = (2, 64, 16);
        let h = hkv * group;
        let mut syn = Synth::new(seed);
        let wl = if structured { Workload::Structured } else { Workload::Iid };
        let prob = syn.problem(wl, &[len], h, hkv, d);
        let cfg = CacheConfig::new(hkv, d, len.div_ceil(ps) + 2)
            .with_kv_dtype(kv)
            .with_stats_dtype(StatsDType::F32)
            .with_sketch_bits(bits);
        let (cache, ids) = prob.build_cache(cfg, 0).unwrap();
        let scale = 1.0 / (d as f32).sqrt();
        let qs: Vec<f32> = prob.q.iter().map(|x| x * scale).collect();
        let slopes: Vec<f32> = (0..h).map(|i| if alibi { 0.05 * (i + 1) as f32 } else { 0.0 }).collect();
        let seq = cache.seq(ids[0]).unwrap();
        let mut key = vec![0.0f32; d];
        for kvh in 0..hkv {
            let ctx = SelectionContext {
                cache: &cache,
                seq,
                kv_head: kvh,
                q_scaled: &qs[kvh * group * d..(kvh + 1) * group * d],
                slopes: &slopes[kvh * group..(kvh + 1) * group],
                alpha: 1.5,
            };
            let mut sc = SelectScratch::new(64, d);
            topk::page_bounds(&ctx, &mut sc);
            let boxes: Vec<f32> = sc.scored.iter().map(|e| e.0).collect();
            topk_sketch::page_scores(&ctx, TopkScoring::Sketch, &mut sc);
            let q_pos = (len - 1) as f64;
            for (i, &(s, slot)) in sc.scored.iter().enumerate() {
                prop_assert_eq!(slot as usize, i);
                let mut best = f64::NEG_INFINITY;
                for t in i * ps..(i + 1) * ps {
                    cache.read_key(ids[0], t, kvh, &mut key).unwrap();
                    for hg in 0..group {
                        let w = &ctx.q_scaled[hg * d..(hg + 1) * d];
                        let dot: f64 = w.iter().zip(&key).map(|(a, b)| *a as f64 * *b as f64).sum();
                        let bias = ctx.slopes[hg] as f64 * (t as f64 - q_pos);
                        best = best.max(dot + bias);
                    }
                }
                prop_assert!(s as f64 >= best, "page {}: score {} below its best {}", i, s, best);
                // Within the box, up to the two bounds' own widening for rounding (relative
                // to the score magnitude Σ|w_d|·max|k_d| ≈ 10–50 here).
                let tol = 1e-3 * (1.0 + boxes[i].abs());
                prop_assert!(s <= boxes[i] + tol, "page {}: sketch {} above box {}", i, s, boxes[i]);
            }
        }
    }
}

#[test]
fn full_budget_with_sketch_scores_equals_dense() {
    let (hkv, h, d) = (2, 6, 64);
    let mut syn = Synth::new(5);
    let lens = [300, 1000];
    let prob = syn.problem(Workload::Structured, &lens, h, hkv, d);
    let cfg = CacheConfig::new(hkv, d, 100).with_kv_dtype(DType::F32);
    let (cache, ids) = prob.build_cache(cfg, 0).unwrap();
    for alpha in [1.0, 1.5] {
        let params = AttentionParams::new(h, alpha);
        let mut dense = Decoder::new(
            &cache,
            2,
            1000,
            DecodeConfig::new(params.clone(), Method::Dense),
        )
        .unwrap();
        let mut want = vec![0.0; prob.q.len()];
        dense.step(&cache, &ids, &prob.q, &mut want).unwrap();
        let want: Vec<f64> = want.iter().map(|&x| x as f64).collect();
        let cfg = DecodeConfig::new(params, Method::TopK(Budget::Fraction(1.0)))
            .with_topk_scoring(TopkScoring::Sketch);
        let mut dec = Decoder::new(&cache, 2, 1000, cfg).unwrap();
        let mut out = vec![0.0; prob.q.len()];
        dec.step(&cache, &ids, &prob.q, &mut out).unwrap();
        let rel = compare(&out, &want).unwrap().rel;
        assert!(rel <= 1e-6, "alpha {alpha}: rel {rel}");
    }
}

/// On structured keys (planted high-scoring pages) sketch scores keep at least as much of
/// the dense softmax mass as Quest's box at the same budget, summed over many queries.
#[test]
fn sketch_scores_keep_more_attention_mass_than_the_box() {
    let (hkv, h, d, len) = (1, 4, 64, 2048);
    let mut mass = [0.0f64; 2];
    for seed in 0..6 {
        let mut syn = Synth::new(100 + seed);
        let prob = syn.problem(Workload::Structured, &[len], h, hkv, d);
        let cfg = CacheConfig::new(hkv, d, len / 16 + 2).with_kv_dtype(DType::F16);
        let (cache, ids) = prob.build_cache(cfg, 0).unwrap();
        let params = AttentionParams::new(h, 1.0);
        for (k, scoring) in [TopkScoring::Box, TopkScoring::Sketch]
            .into_iter()
            .enumerate()
        {
            let cfg = DecodeConfig::new(params.clone(), Method::TopK(Budget::Fraction(0.0625)))
                .with_topk_scoring(scoring)
                .with_certificate(entmaxkv::certificate::CertificateLevel::Token);
            let mut dec = Decoder::new(&cache, 1, len, cfg).unwrap();
            let mut out = vec![0.0; prob.q.len()];
            let rep = dec.step(&cache, &ids, &prob.q, &mut out).unwrap();
            // 1 − the proven bound on the mass left out: a lower bound of the kept mass.
            mass[k] += rep.heads.iter().map(|r| 1.0 - r.mass_bound).sum::<f64>();
        }
    }
    assert!(
        mass[1] >= mass[0],
        "kept mass (lower bounds): box {} sketch {}",
        mass[0],
        mass[1]
    );
}
