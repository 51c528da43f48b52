//! The same step run twice gives identical bits (rayon parallelism never reorders a
//! floating-point reduction: each task's sums run in a fixed order on one thread).

use entmaxkv::attention::AttentionParams;
use entmaxkv::cache::CacheConfig;
use entmaxkv::decode::{DecodeConfig, Decoder, Method};
use entmaxkv::selection::topk::Budget;
use entmaxkv::selection::GqaMode;
use entmaxkv::synth::{Synth, Workload};

#[test]
fn repeated_steps_are_bit_identical() {
    let mut syn = Synth::new(11);
    let lens = [3000, 1234, 17];
    let prob = syn.problem(Workload::Structured, &lens, 8, 2, 64);
    let (cache, ids) = prob.build_cache(CacheConfig::new(2, 64, 400), 0).unwrap();
    for method in [Method::Dense, Method::TopK(Budget::Fraction(0.2))] {
        for alpha in [1.0, 1.5, 2.0, 2.5] {
            for gqa in [GqaMode::PerHead, GqaMode::Shared] {
                let cfg =
                    DecodeConfig::new(AttentionParams::new(8, alpha), method.clone()).with_gqa(gqa);
                let mut outs = Vec::new();
                for _ in 0..2 {
                    let mut dec = Decoder::new(&cache, 3, 3000, cfg.clone()).unwrap();
                    for _ in 0..2 {
                        let mut out = vec![0.0f32; prob.q.len()];
                        dec.step(&cache, &ids, &prob.q, &mut out).unwrap();
                        outs.push(out.iter().map(|x| x.to_bits()).collect::<Vec<_>>());
                    }
                }
                for o in &outs[1..] {
                    assert_eq!(o, &outs[0], "{method:?} alpha {alpha} {gqa:?}");
                }
            }
        }
    }
}
