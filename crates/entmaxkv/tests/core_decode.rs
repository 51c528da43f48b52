//! The fast CPU dense decode against the f64 oracle, on fresh random problems.

use entmaxkv::attention::dense::dense_decode;
use entmaxkv::attention::oracle::oracle_decode;
use entmaxkv::attention::oracle::oracle_scores;
use entmaxkv::attention::AttentionParams;
use entmaxkv::cache::{CacheConfig, StatsDType};
use entmaxkv::cache::{PagedKvCache, SeqId};
use entmaxkv::metrics::{compare, compare_per_head};
use entmaxkv::synth::Problem;
use entmaxkv::synth::{Synth, Workload};
use entmaxkv::DType;
use proptest::prelude::*;

/// Bound on the relative output error of head `hh` of sequence `b` that f32 scores alone can
/// cause at α > 2, given the oracle's exact scores z_i = (α−1)·s_i and τ. Each f32 score is
/// within ε = 4·d·u·(scale·Σ_c|q_c·k_c| + |bias|) of the exact one (u = 2⁻²⁴), so the f32 τ is
/// within ε_z = (α−1)·ε of the exact τ (τ is monotone and shift-equivariant in the scores) and
/// every x_i = z_i − τ moves by at most 2ε_z. With β = 1/(α−1) < 1, a weight x^β then moves by
/// at most (4ε_z)^β where x ≤ 4ε_z (Hölder), else by β·(x − 2ε_z)^{β−1}·2ε_z (mean value);
/// tokens with x < −2ε_z stay at zero. The output moves by at most Σ_i Δw_i·|v_i|.
#[allow(clippy::too_many_arguments)]
fn conditioning_bound(
    cache: &PagedKvCache,
    id: SeqId,
    prob: &Problem,
    b: usize,
    hh: usize,
    params: &AttentionParams,
    tau: f64,
    o: &[f64],
) -> f64 {
    let (d, hkv) = (prob.d, prob.num_kv_heads);
    let kvh = hh / (prob.num_heads / hkv);
    let q = &prob.q[(b * prob.num_heads + hh) * d..(b * prob.num_heads + hh + 1) * d];
    let z = oracle_scores(cache, id, hh, q, params).unwrap();
    let a = params.alpha - 1.0;
    let beta = 1.0 / a;
    let scale = params.scale_for(d) as f64;
    let u = 2f64.powi(-24);
    let (kb, vb) = (&prob.k[b], &prob.v[b]);
    let mut dv = vec![0.0f64; d];
    for (t, &s) in z.iter().enumerate() {
        let row = (t * hkv + kvh) * d;
        let (mut dot, mut mag) = (0.0f64, 0.0f64);
        for c in 0..d {
            let x = q[c] as f64 * kb[row + c] as f64;
            dot += x;
            mag += x.abs();
        }
        let bias = (s - scale * dot).abs();
        let ez = a * 4.0 * (d as f64 + 2.0) * u * (scale * mag + bias);
        let x = a * s - tau;
        let dw = if x < -2.0 * ez {
            0.0
        } else if x <= 4.0 * ez {
            (4.0 * ez).powf(beta)
        } else {
            beta * (x - 2.0 * ez).powf(beta - 1.0) * 2.0 * ez
        };
        for c in 0..d {
            dv[c] += dw * (vb[row + c] as f64).abs();
        }
    }
    let num = dv.iter().map(|x| x * x).sum::<f64>().sqrt();
    let den = o.iter().map(|x| x * x).sum::<f64>().sqrt();
    if den > 0.0 {
        num / den
    } else {
        num
    }
}

fn alpha_strategy() -> impl Strategy<Value = f64> {
    prop_oneof![
        Just(1.0),
        Just(1.25),
        Just(4.0 / 3.0),
        Just(1.5),
        Just(2.0),
        Just(3.0)
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn dense_cpu_matches_oracle(
        dtype in prop_oneof![Just(DType::F32), Just(DType::F16), Just(DType::Bf16)],
        alpha in alpha_strategy(),
        hkv in 1usize..4,
        group in 1usize..5,
        d in prop_oneof![Just(1usize), Just(3), Just(16), Just(64), Just(80)],
        ps in prop_oneof![Just(1usize), Just(7), Just(16), Just(32)],
        lens in prop::collection::vec(1usize..400, 1..4),
        alibi in any::<bool>(),
        structured in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let h = hkv * group;
        let mut syn = Synth::new(seed);
        let wl = if structured { Workload::Structured } else { Workload::Iid };
        let prob = syn.problem(wl, &lens, h, hkv, d);
        let pages: usize = lens.iter().map(|l| l.div_ceil(ps)).sum();
        let cfg = CacheConfig::new(hkv, d, pages + 1)
            .with_page_size(ps)
            .with_kv_dtype(dtype)
            .with_stats_dtype(StatsDType::F32);
        let (cache, ids) = prob.build_cache(cfg, 37).unwrap();
        let mut params = AttentionParams::new(h, alpha);
        if alibi {
            params = params.with_alibi((0..h).map(|i| 0.5f32.powi(i as i32 + 1)).collect());
        }
        let oracle = oracle_decode(&cache, &ids, &prob.q, &params).unwrap();
        let mut out = vec![f32::NAN; prob.q.len()];
        let rep = dense_decode(&cache, &ids, &prob.q, &params, &mut out).unwrap();
        let m = compare(&out, &oracle.out).unwrap();
        // The oracle reads the same stored values, so only f32 accumulation differs.
        let tol = if dtype == DType::F32 { 1e-5 } else { 2e-3 };
        if alpha > 2.0 && dtype == DType::F32 {
            // β = 1/(α−1) < 1: x^β has an unbounded slope at 0, so a token whose score sits
            // within the f32 score error of the threshold moves its weight by up to (2ε)^β.
            // Per head: rel ≤ tol + the conditioning bound of `conditioning_bound`.
            let per = compare_per_head(&out, &oracle.out, d).unwrap();
            for (b, &id) in ids.iter().enumerate() {
                for hh in 0..h {
                    let bh = b * h + hh;
                    let bound = conditioning_bound(&cache, id, &prob, b, hh, &params, oracle.tau[bh],
                        &oracle.out[bh * d..(bh + 1) * d]);
                    prop_assert!(per[bh].rel <= tol + bound,
                        "head {bh}: rel {} > {tol} + {bound} (alpha {alpha}, d {d})", per[bh].rel);
                }
            }
        } else {
            prop_assert!(m.rel <= tol, "rel {} > {tol} (alpha {alpha}, d {d})", m.rel);
        }
        for (i, r) in rep.heads.iter().enumerate() {
            let t = oracle.tau[i];
            prop_assert!((r.tau - t).abs() <= 1e-4 * t.abs().max(1.0), "tau {} vs {}", r.tau, t);
        }
    }
}

#[test]
fn single_token_cache_returns_its_value() {
    let mut syn = Synth::new(7);
    let prob = syn.problem(Workload::Iid, &[1], 4, 2, 8);
    let (cache, ids) = prob
        .build_cache(CacheConfig::new(2, 8, 2).with_kv_dtype(DType::F32), 0)
        .unwrap();
    for alpha in [1.0, 1.5, 2.0, 7.0] {
        let mut out = vec![0.0; 4 * 8];
        dense_decode(
            &cache,
            &ids,
            &prob.q,
            &AttentionParams::new(4, alpha),
            &mut out,
        )
        .unwrap();
        for h in 0..4 {
            let kvh = h / 2;
            for c in 0..8 {
                assert!((out[h * 8 + c] - prob.v[0][kvh * 8 + c]).abs() < 1e-6);
            }
        }
    }
}

/// The dense (page-major) decoder sizes its workspace at plan time: steps over sequences up
/// to the planned length, softmax and entmax, with and without GQA, never grow it.
#[test]
fn dense_decoder_workspace_is_planned() {
    use entmaxkv::decode::{DecodeConfig, Decoder, Method};
    let mut syn = Synth::new(21);
    let lens = [5000, 77];
    for (h, hkv) in [(4, 4), (8, 2)] {
        let prob = syn.problem(Workload::Iid, &lens, h, hkv, 64);
        let (cache, ids) = prob.build_cache(CacheConfig::new(hkv, 64, 400), 0).unwrap();
        for alpha in [1.0, 1.5] {
            let cfg = DecodeConfig::new(AttentionParams::new(h, alpha), Method::Dense);
            let mut dec = Decoder::new(&cache, 2, 5000, cfg).unwrap();
            let planned = dec.workspace_bytes();
            let mut out = vec![0.0f32; prob.q.len()];
            for _ in 0..2 {
                dec.step(&cache, &ids, &prob.q, &mut out).unwrap();
                assert_eq!(
                    dec.workspace_bytes(),
                    planned,
                    "h {h} hkv {hkv} alpha {alpha}"
                );
            }
        }
    }
}
