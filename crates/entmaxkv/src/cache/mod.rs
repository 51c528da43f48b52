//! The paged KV cache: a fixed pool of pages, a block table per sequence, O(1) amortised
//! append that never moves existing K/V, and release that returns pages to the pool.
//!
//! Vocabulary as in vLLM / FlashInfer: a sequence owns a list of page ids (its block
//! table) and a length; only its last page may be partly filled ("open").
//!
//! Layouts (row-major):
//! * K, V: `[num_pages, H_kv, page_size, D]` — a (page, head) block is contiguous, so a
//!   kept page is one sequential read per head;
//! * statistics: four arrays `[num_pages, H_kv, D]` ([`crate::stats`]);
//! * key sketch: `[num_pages, H_kv, page_size, row_bytes]` ([`crate::stats::sketch`]).
//!
//! Every mutating call validates everything first and only then writes, so a rejected call
//! leaves the cache exactly as it was.

use crate::dtype::{bits_eq, DType, KvElem};
use crate::error::{check_finite, check_len, Error, Result};
use crate::stats::{sketch, OpenPageAcc, RowStats, Stat, StatsStorage};
use half::{bf16, f16};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Identifies a sequence in a [`PagedKvCache`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SeqId(pub u64);

impl std::fmt::Display for SeqId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// How statistics of closed pages are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StatsDType {
    /// Full f32.
    F32,
    /// The K/V dtype (half the bytes with f16/bf16 K/V; min/max rounded outward).
    Kv,
}

/// Shape and storage of a cache.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CacheConfig {
    pub num_kv_heads: usize,
    pub head_dim: usize,
    /// Tokens per page (default 16).
    pub page_size: usize,
    /// Pages in the pool (fixed at creation: the capacity).
    pub num_pages: usize,
    pub kv_dtype: DType,
    pub stats_dtype: StatsDType,
    /// Bits per channel of the per-token key sketch (1..=8), or 0 for none.
    pub sketch_bits: u32,
}

impl CacheConfig {
    /// A config with defaults: page 16, f16 K/V, statistics in the K/V dtype, 4-bit sketch.
    pub fn new(num_kv_heads: usize, head_dim: usize, num_pages: usize) -> Self {
        CacheConfig {
            num_kv_heads,
            head_dim,
            page_size: 16,
            num_pages,
            kv_dtype: DType::F16,
            stats_dtype: StatsDType::Kv,
            sketch_bits: 4,
        }
    }

    pub fn with_page_size(mut self, ps: usize) -> Self {
        self.page_size = ps;
        self
    }
    pub fn with_kv_dtype(mut self, dt: DType) -> Self {
        self.kv_dtype = dt;
        self
    }
    pub fn with_stats_dtype(mut self, dt: StatsDType) -> Self {
        self.stats_dtype = dt;
        self
    }
    pub fn with_sketch_bits(mut self, bits: u32) -> Self {
        self.sketch_bits = bits;
        self
    }

    /// Pages needed to hold `tokens` tokens.
    pub fn pages_for(&self, tokens: usize) -> usize {
        tokens.div_ceil(self.page_size)
    }

    /// The dtype statistics are stored in.
    pub fn resolved_stats_dtype(&self) -> DType {
        match self.stats_dtype {
            StatsDType::F32 => DType::F32,
            StatsDType::Kv => self.kv_dtype,
        }
    }

    fn validate(&self) -> Result<()> {
        const OP: &str = "CacheConfig";
        if self.num_kv_heads == 0 {
            return Err(Error::invalid(OP, "num_kv_heads", 0, "must be >= 1"));
        }
        if self.head_dim == 0 {
            return Err(Error::invalid(OP, "head_dim", 0, "must be >= 1"));
        }
        if self.page_size == 0 {
            return Err(Error::invalid(OP, "page_size", 0, "must be >= 1"));
        }
        if self.num_pages == 0 || self.num_pages > u32::MAX as usize {
            return Err(Error::invalid(
                OP,
                "num_pages",
                self.num_pages,
                "must be in 1..=u32::MAX",
            ));
        }
        if self.sketch_bits > 8 {
            return Err(Error::invalid(
                OP,
                "sketch_bits",
                self.sketch_bits,
                "must be 0 (off) or 1..=8",
            ));
        }
        Ok(())
    }
}

/// K and V of the whole pool in their storage type. Equality is bit for bit (a stored −0
/// differs from +0), which is what "unchanged" means for a cache.
#[derive(Debug)]
pub enum KvStorage {
    F32 { k: Vec<f32>, v: Vec<f32> },
    F16 { k: Vec<f16>, v: Vec<f16> },
    Bf16 { k: Vec<bf16>, v: Vec<bf16> },
}

impl Clone for KvStorage {
    fn clone(&self) -> Self {
        use KvStorage::*;
        match self {
            F32 { k, v } => F32 {
                k: k.clone(),
                v: v.clone(),
            },
            F16 { k, v } => F16 {
                k: k.clone(),
                v: v.clone(),
            },
            Bf16 { k, v } => Bf16 {
                k: k.clone(),
                v: v.clone(),
            },
        }
    }

    /// Reuses the allocations when the storage types match.
    fn clone_from(&mut self, o: &Self) {
        use KvStorage::*;
        match (self, o) {
            (F32 { k, v }, F32 { k: k2, v: v2 }) => {
                k.clone_from(k2);
                v.clone_from(v2);
            }
            (F16 { k, v }, F16 { k: k2, v: v2 }) => {
                k.clone_from(k2);
                v.clone_from(v2);
            }
            (Bf16 { k, v }, Bf16 { k: k2, v: v2 }) => {
                k.clone_from(k2);
                v.clone_from(v2);
            }
            (s, o) => *s = o.clone(),
        }
    }
}

impl PartialEq for KvStorage {
    fn eq(&self, o: &Self) -> bool {
        use KvStorage::*;
        match (self, o) {
            (F32 { k, v }, F32 { k: k2, v: v2 }) => bits_eq(k, k2) && bits_eq(v, v2),
            (F16 { k, v }, F16 { k: k2, v: v2 }) => bits_eq(k, k2) && bits_eq(v, v2),
            (Bf16 { k, v }, Bf16 { k: k2, v: v2 }) => bits_eq(k, k2) && bits_eq(v, v2),
            _ => false,
        }
    }
}

/// Dispatches generic code over the K/V storage type:
/// `with_kv!(cache.kv(), |k, v| f(k, v))` instantiates the body for f32, f16 and bf16.
#[macro_export]
macro_rules! with_kv {
    ($kv:expr, |$k:ident, $v:ident| $body:expr) => {
        match $kv {
            $crate::cache::KvStorage::F32 { k: $k, v: $v } => $body,
            $crate::cache::KvStorage::F16 { k: $k, v: $v } => $body,
            $crate::cache::KvStorage::Bf16 { k: $k, v: $v } => $body,
        }
    };
}

/// Layout of K/V chunks handed to [`PagedKvCache::append`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkLayout {
    /// `[n_tokens, H_kv, D]` — what a model produces per decode token.
    TokenMajor,
    /// `[H_kv, n_tokens, D]` — one sequence's slice of a `[B, H_kv, S, D]` prefill tensor.
    HeadMajor,
}

#[derive(Debug, Clone, PartialEq)]
struct Sequence {
    pages: Vec<u32>,
    len: usize,
    open: OpenPageAcc,
}

/// Read-only view of a sequence's block table.
#[derive(Debug, Clone, Copy)]
pub struct SeqView<'a> {
    pub id: SeqId,
    /// Page ids in token order.
    pub pages: &'a [u32],
    /// Tokens cached.
    pub len: usize,
}

impl SeqView<'_> {
    /// Tokens in page slot `i` of this sequence.
    pub fn page_len(&self, i: usize, page_size: usize) -> usize {
        let start = i * page_size;
        (self.len - start).min(page_size)
    }
    /// Tokens in the last page (1..=page_size), 0 if empty.
    pub fn last_page_len(&self, page_size: usize) -> usize {
        if self.len == 0 {
            0
        } else {
            self.len - (self.pages.len() - 1) * page_size
        }
    }
}

/// A paged KV cache on the host. `clone_from` reuses the target's allocations (a snapshot
/// taken before each call, as the error tests and the fuzzer do, costs a copy, not a pool
/// allocation).
#[derive(Debug)]
pub struct PagedKvCache {
    cfg: CacheConfig,
    kv: KvStorage,
    stats: StatsStorage,
    sketch: Vec<u8>,
    /// Scratch: the stored keys of the chunk being appended, widened (`[H_kv, n, D]`).
    chunk_f32: Vec<f32>,
    /// Scratch rows for writing statistics and sketching a page (`2·D + page_size·D`), sized
    /// once so appends do not allocate.
    row_scratch: Vec<f32>,
    free: Vec<u32>,
    seqs: BTreeMap<u64, Sequence>,
    next_id: u64,
}

impl Clone for PagedKvCache {
    fn clone(&self) -> Self {
        PagedKvCache {
            cfg: self.cfg.clone(),
            kv: self.kv.clone(),
            stats: self.stats.clone(),
            sketch: self.sketch.clone(),
            chunk_f32: self.chunk_f32.clone(),
            row_scratch: self.row_scratch.clone(),
            free: self.free.clone(),
            seqs: self.seqs.clone(),
            next_id: self.next_id,
        }
    }

    fn clone_from(&mut self, o: &Self) {
        self.cfg.clone_from(&o.cfg);
        self.kv.clone_from(&o.kv);
        self.stats.clone_from(&o.stats);
        self.sketch.clone_from(&o.sketch);
        self.chunk_f32.clone_from(&o.chunk_f32);
        self.row_scratch.clone_from(&o.row_scratch);
        self.free.clone_from(&o.free);
        self.seqs.clone_from(&o.seqs);
        self.next_id = o.next_id;
    }
}

/// Equality of everything observable (scratch buffers excluded).
impl PartialEq for PagedKvCache {
    fn eq(&self, o: &Self) -> bool {
        self.cfg == o.cfg
            && self.kv == o.kv
            && self.stats == o.stats
            && self.sketch == o.sketch
            && self.free == o.free
            && self.seqs == o.seqs
            && self.next_id == o.next_id
    }
}

use crate::workspace::huge_zeroed;

impl PagedKvCache {
    /// Allocates the pool. Memory is reserved once; pages are handed out on append.
    pub fn new(cfg: CacheConfig) -> Result<Self> {
        cfg.validate()?;
        let block = cfg.num_pages * cfg.num_kv_heads * cfg.page_size * cfg.head_dim;
        let kv = match cfg.kv_dtype {
            DType::F32 => KvStorage::F32 {
                k: huge_zeroed(block),
                v: huge_zeroed(block),
            },
            DType::F16 => KvStorage::F16 {
                k: huge_zeroed(block),
                v: huge_zeroed(block),
            },
            DType::Bf16 => KvStorage::Bf16 {
                k: huge_zeroed(block),
                v: huge_zeroed(block),
            },
        };
        let stats = StatsStorage::new(
            cfg.resolved_stats_dtype(),
            cfg.num_pages * cfg.num_kv_heads * cfg.head_dim,
        );
        let sketch_len = if cfg.sketch_bits > 0 {
            cfg.num_pages
                * cfg.num_kv_heads
                * cfg.page_size
                * sketch::row_bytes(cfg.head_dim, cfg.sketch_bits)
        } else {
            0
        };
        // Free list as a stack, lowest ids handed out first (deterministic).
        let free: Vec<u32> = (0..cfg.num_pages as u32).rev().collect();
        let row_scratch = vec![0.0; (2 + cfg.page_size) * cfg.head_dim];
        Ok(PagedKvCache {
            cfg,
            kv,
            stats,
            sketch: huge_zeroed(sketch_len),
            chunk_f32: Vec::new(),
            row_scratch,
            free,
            seqs: BTreeMap::new(),
            next_id: 0,
        })
    }

    pub fn config(&self) -> &CacheConfig {
        &self.cfg
    }
    pub fn num_kv_heads(&self) -> usize {
        self.cfg.num_kv_heads
    }
    pub fn head_dim(&self) -> usize {
        self.cfg.head_dim
    }
    pub fn page_size(&self) -> usize {
        self.cfg.page_size
    }
    pub fn kv_dtype(&self) -> DType {
        self.cfg.kv_dtype
    }
    pub fn free_pages(&self) -> usize {
        self.free.len()
    }
    pub fn capacity_pages(&self) -> usize {
        self.cfg.num_pages
    }

    /// K/V of the whole pool (see the module docs for the layout).
    pub fn kv(&self) -> &KvStorage {
        &self.kv
    }
    /// Page statistics of the whole pool.
    pub fn stats(&self) -> &StatsStorage {
        &self.stats
    }
    /// Key sketch of the whole pool (empty when `sketch_bits == 0`).
    pub fn sketch(&self) -> &[u8] {
        &self.sketch
    }

    /// Element offset of `(page, head)` in K/V.
    #[inline]
    pub fn kv_offset(&self, page: u32, head: usize) -> usize {
        (page as usize * self.cfg.num_kv_heads + head) * self.cfg.page_size * self.cfg.head_dim
    }
    /// Element offset of `(page, head)` in each statistics array.
    #[inline]
    pub fn stats_offset(&self, page: u32, head: usize) -> usize {
        (page as usize * self.cfg.num_kv_heads + head) * self.cfg.head_dim
    }
    /// Byte offset of `(page, head)` in the sketch.
    #[inline]
    pub fn sketch_offset(&self, page: u32, head: usize) -> usize {
        (page as usize * self.cfg.num_kv_heads + head)
            * self.cfg.page_size
            * sketch::row_bytes(self.cfg.head_dim, self.cfg.sketch_bits)
    }

    /// Creates an empty sequence.
    pub fn add_sequence(&mut self) -> SeqId {
        let id = self.next_id;
        self.next_id += 1;
        self.seqs.insert(
            id,
            Sequence {
                pages: Vec::new(),
                len: 0,
                open: OpenPageAcc::new(self.cfg.num_kv_heads * self.cfg.head_dim),
            },
        );
        SeqId(id)
    }

    /// Live sequence ids in creation order.
    pub fn sequences(&self) -> Vec<SeqId> {
        self.seqs.keys().map(|&k| SeqId(k)).collect()
    }

    /// The block table and length of a sequence.
    pub fn seq(&self, id: SeqId) -> Result<SeqView<'_>> {
        self.seq_op("seq", id)
    }

    /// The free-page stack (the next page handed out is the last entry).
    pub(crate) fn free_list(&self) -> &[u32] {
        &self.free
    }

    /// The id the next [`PagedKvCache::add_sequence`] returns.
    pub(crate) fn next_seq_id(&self) -> u64 {
        self.next_id
    }

    /// The open-page accumulators of a sequence: `(mean, m2, min, max)`, each `[H_kv·D]`.
    #[allow(clippy::type_complexity)]
    pub(crate) fn open_accumulators(&self, id: SeqId) -> Option<(&[f64], &[f64], &[f32], &[f32])> {
        self.seqs.get(&id.0).map(|s| {
            (
                &s.open.mean[..],
                &s.open.m2[..],
                &s.open.min[..],
                &s.open.max[..],
            )
        })
    }

    pub(crate) fn seq_op(&self, op: &'static str, id: SeqId) -> Result<SeqView<'_>> {
        let s = self
            .seqs
            .get(&id.0)
            .ok_or(Error::UnknownSequence { op, id: id.0 })?;
        Ok(SeqView {
            id,
            pages: &s.pages,
            len: s.len,
        })
    }

    /// Tokens cached for `id`.
    pub fn seq_len(&self, id: SeqId) -> Result<usize> {
        Ok(self.seq(id)?.len)
    }

    /// Returns the pages of a sequence to the pool and forgets the sequence.
    pub fn release(&mut self, id: SeqId) -> Result<()> {
        let s = self.seqs.remove(&id.0).ok_or(Error::UnknownSequence {
            op: "release",
            id: id.0,
        })?;
        // Push in reverse so the next sequence gets the same ids in the same order.
        self.free.extend(s.pages.iter().rev());
        Ok(())
    }

    /// Appends `n` tokens of K and V (f32, f16 or bf16) to a sequence. `k` and `v` hold
    /// `n·H_kv·D` elements in `layout`. The new keys are rounded to the cache dtype first;
    /// statistics are updated from the rounded values.
    pub fn append<T: KvElem>(
        &mut self,
        id: SeqId,
        k: &[T],
        v: &[T],
        layout: ChunkLayout,
    ) -> Result<()> {
        const OP: &str = "append";
        let hd = self.cfg.num_kv_heads * self.cfg.head_dim;
        if !k.len().is_multiple_of(hd) || k.is_empty() {
            let n = (k.len() / hd).max(1);
            check_len(
                OP,
                "k",
                k.len(),
                &[n, self.cfg.num_kv_heads, self.cfg.head_dim],
            )?;
        }
        let n = k.len() / hd;
        let shape = match layout {
            ChunkLayout::TokenMajor => [n, self.cfg.num_kv_heads, self.cfg.head_dim],
            ChunkLayout::HeadMajor => [self.cfg.num_kv_heads, n, self.cfg.head_dim],
        };
        check_len(OP, "v", v.len(), &shape)?;
        check_finite(OP, "k", k)?;
        check_finite(OP, "v", v)?;
        let seq = self
            .seqs
            .get(&id.0)
            .ok_or(Error::UnknownSequence { op: OP, id: id.0 })?;
        let ps = self.cfg.page_size;
        let needed = (seq.len + n).div_ceil(ps) - seq.pages.len();
        if needed > self.free.len() {
            return Err(Error::OutOfPages {
                op: OP,
                needed,
                free: self.free.len(),
                capacity: self.cfg.num_pages,
            });
        }
        // Validated: from here on nothing can fail.
        let mut seq = self.seqs.remove(&id.0).expect("checked above");
        let (nkv, hdim) = (self.cfg.num_kv_heads, self.cfg.head_dim);
        let index = move |t: usize, h: usize| -> usize {
            match layout {
                ChunkLayout::TokenMajor => (t * nkv + h) * hdim,
                ChunkLayout::HeadMajor => (h * n + t) * hdim,
            }
        };
        let mut t0 = 0;
        while t0 < n {
            if seq.len.is_multiple_of(ps) {
                let page = self.free.pop().expect("page count checked");
                seq.pages.push(page);
                seq.open.reset();
            }
            let page = *seq.pages.last().expect("just pushed");
            let slot = seq.len % ps;
            let take = (ps - slot).min(n - t0);
            let cfg = &self.cfg;
            let (kvh, d) = (cfg.num_kv_heads, cfg.head_dim);
            with_kv!(&mut self.kv, |kk, vv| {
                for t in 0..take {
                    for h in 0..kvh {
                        let src = index(t0 + t, h);
                        let dst = ((page as usize * kvh + h) * ps + slot + t) * d;
                        for c in 0..d {
                            kk[dst + c] = KvElem::from_f32(k[src + c].to_f32());
                            vv[dst + c] = KvElem::from_f32(v[src + c].to_f32());
                        }
                    }
                }
            });
            // Merge the stored (rounded) keys of this chunk into the open-page accumulators.
            let chunk = &mut self.chunk_f32;
            chunk.resize(kvh * take * d, 0.0);
            for h in 0..kvh {
                let src = (page as usize * kvh + h) * ps * d + slot * d;
                with_kv!(&self.kv, |kk, _vv| KvElem::slice_to_f32(
                    &kk[src..src + take * d],
                    &mut chunk[h * take * d..(h + 1) * take * d]
                ));
            }
            let chunk = &self.chunk_f32;
            seq.open.merge_chunk(take, |t, i| {
                let (h, c) = (i / d, i % d);
                chunk[(h * take + t) * d + c]
            });
            seq.len += take;
            t0 += take;
            self.write_page_stats(page, &seq.open);
            if seq.len.is_multiple_of(ps) && self.cfg.sketch_bits > 0 {
                self.sketch_page(page);
            }
        }
        self.seqs.insert(id.0, seq);
        Ok(())
    }

    /// Prefill: appends a `[B, H_kv, S, D]` tensor pair, batch row `b` to `ids[b]`.
    pub fn append_bhsd<T: KvElem>(&mut self, ids: &[SeqId], k: &[T], v: &[T]) -> Result<()> {
        const OP: &str = "append_bhsd";
        let hd = self.cfg.num_kv_heads * self.cfg.head_dim;
        let b = ids.len();
        if b == 0 {
            return Err(Error::invalid(OP, "ids", "[]", "at least one sequence"));
        }
        let s = k.len() / (b * hd).max(1);
        check_len(
            OP,
            "k",
            k.len(),
            &[b, self.cfg.num_kv_heads, s, self.cfg.head_dim],
        )?;
        check_len(
            OP,
            "v",
            v.len(),
            &[b, self.cfg.num_kv_heads, s, self.cfg.head_dim],
        )?;
        // Validate every sequence and the total page demand up front.
        let mut needed = 0;
        for (i, id) in ids.iter().enumerate() {
            let seq = self.seq_op(OP, *id)?;
            if ids[..i].contains(id) {
                return Err(Error::invalid(OP, "ids", id, "sequence listed twice"));
            }
            needed += (seq.len + s).div_ceil(self.cfg.page_size) - seq.pages.len();
        }
        if needed > self.free.len() {
            return Err(Error::OutOfPages {
                op: OP,
                needed,
                free: self.free.len(),
                capacity: self.cfg.num_pages,
            });
        }
        check_finite(OP, "k", k)?;
        check_finite(OP, "v", v)?;
        let per = hd * s;
        for (i, id) in ids.iter().enumerate() {
            let r = i * per..(i + 1) * per;
            self.append(*id, &k[r.clone()], &v[r], ChunkLayout::HeadMajor)?;
        }
        Ok(())
    }

    fn write_page_stats(&mut self, page: u32, acc: &OpenPageAcc) {
        let (kvh, d) = (self.cfg.num_kv_heads, self.cfg.head_dim);
        // Taken out of `self` (no allocation) so the offset helpers stay callable.
        let mut scratch = std::mem::take(&mut self.row_scratch);
        let (mean, rest) = scratch.split_at_mut(d);
        let std = &mut rest[..d];
        for h in 0..kvh {
            acc.finalize_head(h, mean, std);
            let row = RowStats {
                min: &acc.min[h * d..(h + 1) * d],
                max: &acc.max[h * d..(h + 1) * d],
                mean,
                std,
            };
            let base = self.stats_offset(page, h);
            self.stats.write_row(base, &row);
        }
        self.row_scratch = scratch;
    }

    fn sketch_page(&mut self, page: u32) {
        let (kvh, d, ps, bits) = (
            self.cfg.num_kv_heads,
            self.cfg.head_dim,
            self.cfg.page_size,
            self.cfg.sketch_bits,
        );
        let rb = sketch::row_bytes(d, bits);
        let mut lo = vec![0.0f32; d];
        let mut hi = vec![0.0f32; d];
        let mut keys = vec![0.0f32; ps * d];
        for h in 0..kvh {
            let sb = self.stats_offset(page, h);
            self.stats.read_row(Stat::Min, sb, &mut lo);
            self.stats.read_row(Stat::Max, sb, &mut hi);
            let kb = self.kv_offset(page, h);
            with_kv!(&self.kv, |kk, _vv| KvElem::slice_to_f32(
                &kk[kb..kb + ps * d],
                &mut keys
            ));
            let skb = self.sketch_offset(page, h);
            for t in 0..ps {
                let out = &mut self.sketch[skb + t * rb..skb + (t + 1) * rb];
                sketch::encode_row(&keys[t * d..(t + 1) * d], &lo, &hi, bits, out);
            }
        }
    }

    /// Copies token `t` of a sequence's keys (head `h`) into `out` as f32.
    pub fn read_key(&self, id: SeqId, t: usize, h: usize, out: &mut [f32]) -> Result<()> {
        self.read_row(id, t, h, out, true)
    }
    /// Copies token `t` of a sequence's values (head `h`) into `out` as f32.
    pub fn read_value(&self, id: SeqId, t: usize, h: usize, out: &mut [f32]) -> Result<()> {
        self.read_row(id, t, h, out, false)
    }

    fn read_row(&self, id: SeqId, t: usize, h: usize, out: &mut [f32], key: bool) -> Result<()> {
        const OP: &str = "read_row";
        let s = self.seq_op(OP, id)?;
        if t >= s.len {
            return Err(Error::invalid(
                OP,
                "t",
                t,
                format!("sequence has {} tokens", s.len),
            ));
        }
        if h >= self.cfg.num_kv_heads {
            return Err(Error::invalid(OP, "h", h, "kv head out of range"));
        }
        check_len(OP, "out", out.len(), &[self.cfg.head_dim])?;
        let ps = self.cfg.page_size;
        let off = self.kv_offset(s.pages[t / ps], h) + (t % ps) * self.cfg.head_dim;
        with_kv!(&self.kv, |kk, vv| {
            let src = if key { kk } else { vv };
            for (o, x) in out.iter_mut().zip(&src[off..off + self.cfg.head_dim]) {
                *o = x.to_f32();
            }
        });
        Ok(())
    }

    /// Statistics of page slot `i` of a sequence, head `h`, as f32 rows of length D.
    pub fn page_stats(&self, id: SeqId, i: usize, h: usize) -> Result<[Vec<f32>; 4]> {
        const OP: &str = "page_stats";
        let s = self.seq_op(OP, id)?;
        if i >= s.pages.len() {
            return Err(Error::invalid(
                OP,
                "i",
                i,
                format!("sequence has {} pages", s.pages.len()),
            ));
        }
        if h >= self.cfg.num_kv_heads {
            return Err(Error::invalid(OP, "h", h, "kv head out of range"));
        }
        let base = self.stats_offset(s.pages[i], h);
        let d = self.cfg.head_dim;
        let mut out: [Vec<f32>; 4] = std::array::from_fn(|_| vec![0.0; d]);
        for (st, o) in [Stat::Min, Stat::Max, Stat::Mean, Stat::Std]
            .into_iter()
            .zip(out.iter_mut())
        {
            self.stats.read_row(st, base, o);
        }
        Ok(out)
    }

    /// Bytes of device/host memory the pool holds (K, V, statistics, sketch).
    pub fn pool_bytes(&self) -> usize {
        let c = &self.cfg;
        let kv = 2 * c.num_pages * c.num_kv_heads * c.page_size * c.head_dim * c.kv_dtype.size();
        let st = 4 * c.num_pages * c.num_kv_heads * c.head_dim * c.resolved_stats_dtype().size();
        kv + st + self.sketch.len()
    }
}
