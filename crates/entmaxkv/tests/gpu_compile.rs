//! Every GPU kernel module compiles with NVRTC (no device needed). Skips loudly when NVRTC
//! is not installed (point LD_LIBRARY_PATH at a libnvrtc.so to run it without a GPU).

use entmaxkv::DType;
use std::io::Write;

#[test]
fn every_kernel_module_compiles_for_sm90() {
    let mut configs = Vec::new();
    for kv in [DType::F16, DType::Bf16, DType::F32] {
        for stats in [kv, DType::F32] {
            for (d, tg) in [
                (64, 1),
                (64, 4),
                (128, 1),
                (128, 4),
                (128, 8),
                (80, 2),
                (256, 1),
                // D % 16 != 0: the robust kernels' other combining order (robust_bound.cuh).
                (40, 2),
            ] {
                configs.push((kv, stats, d, tg));
            }
        }
    }
    // D % 8 != 0 (f32 rows only): the robust kernels' portable page-sum order.
    configs.push((DType::F32, DType::F32, 36, 1));
    match entmaxkv::gpu::compile_check(&configs, (9, 0)) {
        Ok(sizes) => {
            // The probe, both variants of every configuration, the 7 family modules.
            assert_eq!(sizes.len(), 2 * configs.len() + 1 + 7);
            assert!(sizes.iter().all(|&s| s > 1000));
        }
        Err(entmaxkv::Error::NoCuda { reason, .. }) => {
            let _ = writeln!(std::io::stderr(), "SKIPPED: no NVRTC: {reason}");
        }
        Err(e) => panic!("{e}"),
    }
}
