//! The same step run twice gives identical bits (rayon parallelism never reorders a
//! floating-point reduction: each task's sums, and each block of pages within a task, run
//! in a fixed order, and block results are combined in block order), and so does the same
//! step on thread pools of different sizes.

use entmaxkv::attention::AttentionParams;
use entmaxkv::cache::CacheConfig;
use entmaxkv::decode::{DecodeConfig, Decoder, Method};
use entmaxkv::selection::gaussian::{Criterion, GaussianOpts};
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

/// Blocks of pages run in parallel within a task (dense K/V passes, the sketch bound
/// passes): the output and report must not depend on how many threads run them.
#[test]
fn thread_count_does_not_change_bits() {
    let mut syn = Synth::new(5);
    // Long enough for several blocks of 128 pages per task.
    let lens = [9000, 2100];
    let prob = syn.problem(Workload::Structured, &lens, 4, 2, 64);
    let (cache, ids) = prob
        .build_cache(CacheConfig::new(2, 64, 800).with_page_size(16), 0)
        .unwrap();
    let robust = GaussianOpts::default().with_criterion(Criterion::Robust);
    for (method, alpha) in [
        (Method::Dense, 1.0),
        (Method::Dense, 1.5),
        (Method::Certified, 1.5),
        (Method::Gaussian(robust), 1.5),
        (Method::TopK(Budget::Fraction(0.2)), 1.5),
        (Method::TopK(Budget::Fraction(0.2)), 1.0),
    ] {
        for gqa in [GqaMode::PerHead, GqaMode::Shared] {
            let cfg =
                DecodeConfig::new(AttentionParams::new(4, alpha), method.clone()).with_gqa(gqa);
            let mut outs = Vec::new();
            for threads in [1, 3, 4] {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap();
                let mut dec = Decoder::new(&cache, 2, 9000, cfg.clone()).unwrap();
                let mut out = vec![0.0f32; prob.q.len()];
                let rep =
                    pool.install(|| dec.step(&cache, &ids, &prob.q, &mut out).unwrap().clone());
                let kept: Vec<u32> = rep
                    .heads
                    .iter()
                    .map(|h| h.pages_kept + h.candidates)
                    .collect();
                outs.push((out.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), kept));
            }
            for o in &outs[1..] {
                assert_eq!(o, &outs[0], "{method:?} alpha {alpha} {gqa:?}");
            }
        }
    }
}
