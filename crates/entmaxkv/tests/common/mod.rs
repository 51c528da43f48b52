//! Shared by the GPU test files.

use entmaxkv::gpu::Gpu;
use entmaxkv::Error;
use std::io::Write;
use std::sync::Arc;

/// The GPU, or `None` after a loud skip message when this machine has none (any other error
/// than `NoCuda` fails the test).
pub fn gpu_or_skip(test: &str) -> Option<Arc<Gpu>> {
    match Gpu::get() {
        Ok(g) => Some(g),
        Err(e) => {
            assert!(
                matches!(e, Error::NoCuda { .. }),
                "expected NoCuda, got {e:?}"
            );
            // Written to the process stderr directly so the harness does not capture it.
            let _ = writeln!(std::io::stderr(), "SKIPPED: no CUDA device: {e} ({test})");
            None
        }
    }
}
