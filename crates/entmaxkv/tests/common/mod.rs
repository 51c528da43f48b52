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

/// `f` over every case on up to 4 threads (fewer where the machine has fewer cores),
/// results in the cases' order. A cold GPU test is bound by compiling its module configurations (NVRTC and
/// the driver's PTX JIT, tens of seconds each); the crate compiles different configurations
/// in parallel, so cases that need different ones should not wait for one another. A
/// panicking case fails the test with its own message.
// Not every test file that includes this module uses it.
#[allow(dead_code)]
pub fn par_cases<T: Sync, R: Send>(cases: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;
    // At most 4 threads a test: the tests themselves run in parallel, and on an H200
    // machine's 16 cores one thread per core and case made the whole suite slower (session
    // 17 run 2: 10 of 20 tests done in 330 s, against 18 with one thread a test).
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(4)
        .min(cases.len())
        .max(1);
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<R>>> = Mutex::new((0..cases.len()).map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(c) = cases.get(i) else { break };
                let r = f(c);
                results.lock().unwrap()[i] = Some(r);
            });
        }
    });
    results
        .into_inner()
        .unwrap()
        .into_iter()
        .map(|r| r.expect("every case ran"))
        .collect()
}

/// Values in device memory allocated outside the crate (through cudarc, as an engine's
/// tensors are), for the device-pointer APIs; freed on drop. The crate's context must be
/// current on the calling thread (any crate call that touched the GPU on this thread made it
/// so).
#[allow(dead_code)]
pub struct DevVec<T> {
    pub ptr: u64,
    pub len: usize,
    _t: std::marker::PhantomData<T>,
}

/// f32 values (q, K/V, outputs) in device memory.
#[allow(dead_code)]
pub type DevF32 = DevVec<f32>;
/// 16-bit values (f16 or bf16 bits) in device memory, as an engine's K/V tensors are.
#[allow(dead_code)]
pub type DevU16 = DevVec<u16>;

#[allow(dead_code)]
impl<T: Copy + Default> DevVec<T> {
    pub fn new(src: &[T]) -> DevVec<T> {
        let bytes = src.len().max(1) * std::mem::size_of::<T>();
        let ptr = unsafe { cudarc::driver::result::malloc_sync(bytes) }.unwrap();
        unsafe { cudarc::driver::result::memcpy_htod_sync(ptr, src) }.unwrap();
        DevVec {
            ptr,
            len: src.len(),
            _t: std::marker::PhantomData,
        }
    }

    /// The values (synchronous: waits for all work on the context's null stream only, so
    /// callers order it after their own streams first).
    pub fn read(&self) -> Vec<T> {
        let mut v = vec![T::default(); self.len];
        unsafe { cudarc::driver::result::memcpy_dtoh_sync(&mut v, self.ptr) }.unwrap();
        v
    }

    pub fn bytes(&self) -> usize {
        self.len * std::mem::size_of::<T>()
    }
}

impl<T> Drop for DevVec<T> {
    fn drop(&mut self) {
        let _ = unsafe { cudarc::driver::result::free_sync(self.ptr) };
    }
}
