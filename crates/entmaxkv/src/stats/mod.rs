//! Per-page key statistics and the per-token key sketch.
//!
//! Every page keeps, per kv head and channel, the min, max, mean and population std of its
//! keys. Selection reads them on every decode step, so closed pages may store them
//! compactly (f32 or the K/V dtype). min is rounded down and max up when stored compactly,
//! so `[min, max]` always encloses every stored key: the certificate relies on that.
//!
//! The open (last) page of a sequence keeps exact f64 accumulators (Chan/Welford merge),
//! updated on every append of one or many tokens; its compact statistics are rewritten
//! from them after each append.

pub mod sketch;

use crate::dtype::{bits_eq, DType, KvElem};
use half::{bf16, f16};

/// Which statistic of a page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stat {
    Min = 0,
    Max = 1,
    Mean = 2,
    Std = 3,
}

/// Storage of the four statistics arrays, each `[num_pages, H_kv, D]`. Equality is bit for
/// bit, as for [`crate::cache::KvStorage`].
#[derive(Debug)]
pub enum StatsStorage {
    F32([Vec<f32>; 4]),
    F16([Vec<f16>; 4]),
    Bf16([Vec<bf16>; 4]),
}

impl Clone for StatsStorage {
    fn clone(&self) -> Self {
        use StatsStorage::*;
        match self {
            F32(a) => F32(a.clone()),
            F16(a) => F16(a.clone()),
            Bf16(a) => Bf16(a.clone()),
        }
    }

    /// Reuses the allocations when the storage types match.
    fn clone_from(&mut self, o: &Self) {
        use StatsStorage::*;
        match (self, o) {
            (F32(a), F32(b)) => a.iter_mut().zip(b).for_each(|(x, y)| x.clone_from(y)),
            (F16(a), F16(b)) => a.iter_mut().zip(b).for_each(|(x, y)| x.clone_from(y)),
            (Bf16(a), Bf16(b)) => a.iter_mut().zip(b).for_each(|(x, y)| x.clone_from(y)),
            (s, o) => *s = o.clone(),
        }
    }
}

impl PartialEq for StatsStorage {
    fn eq(&self, o: &Self) -> bool {
        use StatsStorage::*;
        match (self, o) {
            (F32(a), F32(b)) => (0..4).all(|i| bits_eq(&a[i], &b[i])),
            (F16(a), F16(b)) => (0..4).all(|i| bits_eq(&a[i], &b[i])),
            (Bf16(a), Bf16(b)) => (0..4).all(|i| bits_eq(&a[i], &b[i])),
            _ => false,
        }
    }
}

/// Dispatches generic code over the statistics storage type:
/// `with_stats!(cache.stats(), |a| f(&a[Stat::Min as usize], ...))` instantiates the body for
/// f32, f16 and bf16; `a` is `&[Vec<T>; 4]` indexed by [`Stat`].
#[macro_export]
macro_rules! with_stats {
    ($st:expr, |$a:ident| $body:expr) => {
        match $st {
            $crate::stats::StatsStorage::F32($a) => $body,
            $crate::stats::StatsStorage::F16($a) => $body,
            $crate::stats::StatsStorage::Bf16($a) => $body,
        }
    };
}

/// A borrowed view of the statistics arrays in their storage type.
#[derive(Debug, Clone, Copy)]
pub enum StatsView<'a> {
    F32(&'a [Vec<f32>; 4]),
    F16(&'a [Vec<f16>; 4]),
    Bf16(&'a [Vec<bf16>; 4]),
}

impl StatsStorage {
    pub(crate) fn new(dtype: DType, len: usize) -> Self {
        fn arrays<T: KvElem + bytemuck::Zeroable>(len: usize) -> [Vec<T>; 4] {
            std::array::from_fn(|_| crate::workspace::huge_zeroed(len))
        }
        match dtype {
            DType::F32 => StatsStorage::F32(arrays(len)),
            DType::F16 => StatsStorage::F16(arrays(len)),
            DType::Bf16 => StatsStorage::Bf16(arrays(len)),
        }
    }

    pub fn dtype(&self) -> DType {
        match self {
            StatsStorage::F32(_) => DType::F32,
            StatsStorage::F16(_) => DType::F16,
            StatsStorage::Bf16(_) => DType::Bf16,
        }
    }

    pub fn view(&self) -> StatsView<'_> {
        match self {
            StatsStorage::F32(a) => StatsView::F32(a),
            StatsStorage::F16(a) => StatsView::F16(a),
            StatsStorage::Bf16(a) => StatsView::Bf16(a),
        }
    }

    /// Writes one page/head row of all four statistics (`base` = (page·H_kv + h)·D).
    pub(crate) fn write_row(&mut self, base: usize, acc: &RowStats<'_>) {
        fn put<T: KvElem>(a: &mut [Vec<T>; 4], base: usize, acc: &RowStats<'_>) {
            let d = acc.min.len();
            for c in 0..d {
                a[0][base + c] = T::from_f32_down(acc.min[c]);
                a[1][base + c] = T::from_f32_up(acc.max[c]);
                a[2][base + c] = T::from_f32(acc.mean[c]);
                a[3][base + c] = T::from_f32(acc.std[c]);
            }
        }
        match self {
            StatsStorage::F32(a) => put(a, base, acc),
            StatsStorage::F16(a) => put(a, base, acc),
            StatsStorage::Bf16(a) => put(a, base, acc),
        }
    }

    /// Starts loading one statistic row (`d` values at `base`) into cache.
    #[inline]
    pub fn prefetch_row(&self, stat: Stat, base: usize, d: usize) {
        use crate::attention::cpu::prefetch;
        match self {
            StatsStorage::F32(a) => prefetch(&a[stat as usize][base..base + d]),
            StatsStorage::F16(a) => prefetch(&a[stat as usize][base..base + d]),
            StatsStorage::Bf16(a) => prefetch(&a[stat as usize][base..base + d]),
        }
    }

    /// Reads one statistic row as f32 into `out` (length D).
    #[inline]
    pub fn read_row(&self, stat: Stat, base: usize, out: &mut [f32]) {
        fn get<T: KvElem>(a: &[Vec<T>; 4], stat: Stat, base: usize, out: &mut [f32]) {
            T::slice_to_f32(&a[stat as usize][base..base + out.len()], out);
        }
        match self {
            StatsStorage::F32(a) => get(a, stat, base, out),
            StatsStorage::F16(a) => get(a, stat, base, out),
            StatsStorage::Bf16(a) => get(a, stat, base, out),
        }
    }

    /// Bytes of one (page, head) row of the given statistics.
    pub fn row_bytes(&self, d: usize) -> usize {
        self.dtype().size() * d
    }
}

/// Finalised statistics of one (page, head) row, in f32.
pub(crate) struct RowStats<'a> {
    pub min: &'a [f32],
    pub max: &'a [f32],
    pub mean: &'a [f32],
    pub std: &'a [f32],
}

/// Exact accumulators of the open page of one sequence: per kv head and channel, count,
/// running mean and M2 (sum of squared deviations) in f64, min and max in f32.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct OpenPageAcc {
    pub count: usize,
    pub mean: Vec<f64>,
    pub m2: Vec<f64>,
    pub min: Vec<f32>,
    pub max: Vec<f32>,
}

impl OpenPageAcc {
    pub fn new(len: usize) -> Self {
        OpenPageAcc {
            count: 0,
            mean: vec![0.0; len],
            m2: vec![0.0; len],
            min: vec![f32::INFINITY; len],
            max: vec![f32::NEG_INFINITY; len],
        }
    }

    pub fn reset(&mut self) {
        self.count = 0;
        self.mean.fill(0.0);
        self.m2.fill(0.0);
        self.min.fill(f32::INFINITY);
        self.max.fill(f32::NEG_INFINITY);
    }

    /// Merges a chunk of `n` tokens into the accumulators (Chan et al. parallel update).
    /// `row(t, i)` returns the stored (already rounded) key of chunk token `t`, element
    /// `i` of the `[H_kv·D]` row.
    pub fn merge_chunk(&mut self, n: usize, row: impl Fn(usize, usize) -> f32) {
        if n == 0 {
            return;
        }
        let na = self.count as f64;
        let nb = n as f64;
        let nt = na + nb;
        for i in 0..self.mean.len() {
            let mut sum = 0.0f64;
            let mut lo = self.min[i];
            let mut hi = self.max[i];
            for t in 0..n {
                let x = row(t, i);
                sum += x as f64;
                lo = lo.min(x);
                hi = hi.max(x);
            }
            let mean_b = sum / nb;
            let mut m2_b = 0.0f64;
            for t in 0..n {
                let dx = row(t, i) as f64 - mean_b;
                m2_b += dx * dx;
            }
            let delta = mean_b - self.mean[i];
            self.mean[i] += delta * nb / nt;
            self.m2[i] += m2_b + delta * delta * na * nb / nt;
            self.min[i] = lo;
            self.max[i] = hi;
        }
        self.count += n;
    }

    /// Finalised f32 mean and std of head `h` (channels `h·D .. (h+1)·D`) into `mean`/`std`.
    pub fn finalize_head(&self, h: usize, mean: &mut [f32], std: &mut [f32]) {
        let d = mean.len();
        let n = self.count.max(1) as f64;
        for (c, i) in (h * d..(h + 1) * d).enumerate() {
            mean[c] = self.mean[i] as f32;
            std[c] = (self.m2[i].max(0.0) / n).sqrt() as f32;
        }
    }
}

/// Recomputes statistics of a set of keys from scratch in f64 (the reference the tests use).
/// `keys` is `[n, D]`; returns (min, max, mean, population std) per channel.
pub fn reference_stats(keys: &[f32], d: usize) -> [Vec<f64>; 4] {
    let n = keys.len() / d;
    let mut min = vec![f64::INFINITY; d];
    let mut max = vec![f64::NEG_INFINITY; d];
    let mut mean = vec![0.0; d];
    let mut std = vec![0.0; d];
    for t in 0..n {
        for c in 0..d {
            let x = keys[t * d + c] as f64;
            min[c] = min[c].min(x);
            max[c] = max[c].max(x);
            mean[c] += x;
        }
    }
    for m in mean.iter_mut() {
        *m /= n.max(1) as f64;
    }
    for t in 0..n {
        for c in 0..d {
            let dx = keys[t * d + c] as f64 - mean[c];
            std[c] += dx * dx;
        }
    }
    for s in std.iter_mut() {
        *s = (*s / n.max(1) as f64).sqrt();
    }
    [min, max, mean, std]
}
