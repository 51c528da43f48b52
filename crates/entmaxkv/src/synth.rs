//! Synthetic decode workloads: seeded q/k/v for tests, `check` and `bench`.
//!
//! iid N(0,1) is the original's test distribution and the worst case for page selection
//! (no locality). The structured kinds mimic what real attention has: a sink on the first
//! token, planted high-scoring pages, outlier channels, long runs of near-equal keys.

use crate::cache::{CacheConfig, PagedKvCache, SeqId};
use crate::error::Result;
use rand::{rngs::SmallRng, Rng, SeedableRng};
use rand_distr::StandardNormal;
use serde::{Deserialize, Serialize};

/// Which synthetic distribution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Workload {
    /// iid standard normal q, k, v.
    #[default]
    Iid,
    /// A sink key on token 0 aligned with q, a few planted pages of keys aligned with q,
    /// two outlier channels, and runs of near-duplicate keys.
    Structured,
    /// Hard cases for score bounds: exact ties at the top score, 16-token blocks of one
    /// repeated key (zero key range), a channel 50× larger than the rest, and a crowd of
    /// near-equal keys whose scores sit near the entmax threshold.
    Adversarial,
}

impl std::str::FromStr for Workload {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "iid" => Ok(Workload::Iid),
            "structured" => Ok(Workload::Structured),
            "adversarial" => Ok(Workload::Adversarial),
            o => Err(format!(
                "unknown workload `{o}` (iid, structured, adversarial)"
            )),
        }
    }
}

/// A seeded generator of decode problems.
pub struct Synth {
    rng: SmallRng,
}

impl Synth {
    pub fn new(seed: u64) -> Self {
        Synth {
            rng: SmallRng::seed_from_u64(seed),
        }
    }

    pub fn normal(&mut self) -> f32 {
        self.rng.sample(StandardNormal)
    }

    pub fn uniform(&mut self) -> f64 {
        self.rng.random::<f64>()
    }

    pub fn below(&mut self, n: usize) -> usize {
        self.rng.random_range(0..n)
    }

    /// `n` iid N(0,1) values.
    pub fn normals(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.normal()).collect()
    }

    /// Queries `[B, H, D]` and keys/values `[len, H_kv, D]` per sequence.
    pub fn problem(
        &mut self,
        workload: Workload,
        lens: &[usize],
        num_heads: usize,
        num_kv_heads: usize,
        d: usize,
    ) -> Problem {
        let q = self.normals(lens.len() * num_heads * d);
        let mut k = Vec::with_capacity(lens.len());
        let mut v = Vec::with_capacity(lens.len());
        for (b, &len) in lens.iter().enumerate() {
            let mut kb = self.normals(len * num_kv_heads * d);
            let vb = self.normals(len * num_kv_heads * d);
            if workload == Workload::Structured {
                let g = num_heads / num_kv_heads;
                for kvh in 0..num_kv_heads {
                    // Mean query direction of the group.
                    let mut dir = vec![0.0f32; d];
                    for hg in 0..g {
                        let h = kvh * g + hg;
                        for c in 0..d {
                            dir[c] += q[(b * num_heads + h) * d + c] / g as f32;
                        }
                    }
                    let norm = dir.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-6);
                    let at = |t: usize, c: usize| (t * num_kv_heads + kvh) * d + c;
                    // Sink.
                    for c in 0..d {
                        kb[at(0, c)] = 4.0 * dir[c] / norm * (d as f32).sqrt() / 2.0;
                    }
                    // Planted pages: a few 16-token runs aligned with the query.
                    for _ in 0..3 {
                        if len < 64 {
                            break;
                        }
                        let start = 1 + self.below(len - 17);
                        let strength = 1.0 + 2.0 * self.uniform() as f32;
                        for t in start..start + 16 {
                            for c in 0..d {
                                kb[at(t, c)] += strength * dir[c] / norm * (d as f32).sqrt() / 4.0;
                            }
                        }
                    }
                    // Outlier channels.
                    for t in 0..len {
                        kb[at(t, 0)] *= 6.0;
                        kb[at(t, d / 2)] += 3.0;
                    }
                    // A run of near-equal keys.
                    if len > 200 {
                        let start = self.below(len - 100);
                        for t in start + 1..start + 100 {
                            for c in 0..d {
                                let noise = 1e-3 * self.normal();
                                kb[at(t, c)] = kb[at(start, c)] + noise;
                            }
                        }
                    }
                }
            }
            if workload == Workload::Adversarial {
                self.adversarial(&mut kb, &q, b, len, num_heads, num_kv_heads, d);
            }
            k.push(kb);
            v.push(vb);
        }
        Problem {
            q,
            k,
            v,
            num_heads,
            num_kv_heads,
            d,
        }
    }
}

impl Synth {
    /// The [`Workload::Adversarial`] edits of one sequence's keys `[len, H_kv, D]`.
    #[allow(clippy::too_many_arguments)]
    fn adversarial(
        &mut self,
        kb: &mut [f32],
        q: &[f32],
        b: usize,
        len: usize,
        num_heads: usize,
        num_kv_heads: usize,
        d: usize,
    ) {
        let g = num_heads / num_kv_heads;
        for kvh in 0..num_kv_heads {
            let at = |t: usize, c: usize| (t * num_kv_heads + kvh) * d + c;
            let h = kvh * g + self.below(g);
            let qh = &q[(b * num_heads + h) * d..(b * num_heads + h + 1) * d];
            let norm = qh.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-6);
            let scale = (d as f32).sqrt();
            // Exact ties at the top: a few tokens share one key aligned with a query.
            let strength = 1.0 + 2.0 * self.uniform() as f32;
            for _ in 0..3.min(len) {
                let t = self.below(len);
                for c in 0..d {
                    kb[at(t, c)] = strength * qh[c] / norm * scale / 2.0;
                }
            }
            // Blocks of one repeated key: zero key range on every channel.
            let mut t0 = 0;
            while t0 + 16 <= len {
                if self.below(4) == 0 {
                    for t in t0 + 1..t0 + 16 {
                        for c in 0..d {
                            kb[at(t, c)] = kb[at(t0, c)];
                        }
                    }
                }
                t0 += 16;
            }
            // One huge channel.
            let big = self.below(d);
            for t in 0..len {
                kb[at(t, big)] *= 50.0;
            }
            // A crowd of near-equal keys with scores near the threshold.
            if len >= 80 {
                let start = self.below(len - 64);
                let base = 0.5 + self.uniform() as f32;
                for t in start..start + 64 {
                    for c in 0..d {
                        kb[at(t, c)] = base * qh[c] / norm * scale / 2.0 + 1e-3 * self.normal();
                    }
                }
            }
        }
    }
}

/// The splitmix64 output function (Steele, Lea, Flood): a bijective 64-bit mix.
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The splitmix64 value of counter `z`: [`mix64`] of `z` plus the golden-ratio increment.
pub fn splitmix64(z: u64) -> u64 {
    mix64(z.wrapping_add(0x9e37_79b9_7f4a_7c15))
}

/// A generated problem: q `[B, H, D]`, per-sequence k/v `[len, H_kv, D]` (token-major).
#[derive(Debug, Clone)]
pub struct Problem {
    pub q: Vec<f32>,
    pub k: Vec<Vec<f32>>,
    pub v: Vec<Vec<f32>>,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub d: usize,
}

impl Problem {
    /// Builds a cache holding the problem's sequences (appending in chunks of `chunk`
    /// tokens, 0 = all at once) and returns it with the sequence ids.
    pub fn build_cache(
        &self,
        cfg: CacheConfig,
        chunk: usize,
    ) -> Result<(PagedKvCache, Vec<SeqId>)> {
        let mut cache = PagedKvCache::new(cfg)?;
        let hd = self.num_kv_heads * self.d;
        let mut ids = Vec::with_capacity(self.k.len());
        for (kb, vb) in self.k.iter().zip(&self.v) {
            let id = cache.add_sequence();
            let len = kb.len() / hd;
            let step = if chunk == 0 { len.max(1) } else { chunk };
            let mut t = 0;
            while t < len {
                let e = (t + step).min(len);
                cache.append(
                    id,
                    &kb[t * hd..e * hd],
                    &vb[t * hd..e * hd],
                    crate::cache::ChunkLayout::TokenMajor,
                )?;
                t = e;
            }
            ids.push(id);
        }
        Ok((cache, ids))
    }
}
