//! Honest CPU timings: a decode step meets its layer's cache after every other layer's step
//! has streamed through the caches, so timing steps back to back on a machine whose
//! last-level cache holds part of the KV cache flatters them (BENCHMARKS, "CPU, session 9").
//! [`CacheEvictor`] streams a buffer of twice the last-level cache before a timed step.
use rayon::prelude::*;

/// Evicts the CPU caches by streaming a buffer of twice the last-level cache (at least
/// 256 MiB; 64 MiB assumed where sysfs does not say): the next step then reads its cache
/// from memory. The buffer is allocated and touched once, at construction.
#[derive(Debug)]
pub struct CacheEvictor {
    buf: Vec<u64>,
}

impl CacheEvictor {
    /// A buffer sized from [`last_level_cache_bytes`].
    pub fn new() -> Self {
        let llc = last_level_cache_bytes().unwrap_or(64 << 20);
        Self::with_bytes((2 * llc).max(256 << 20))
    }

    /// A buffer of `bytes` (rounded up to 8).
    pub fn with_bytes(bytes: usize) -> Self {
        let mut buf: Vec<u64> = crate::huge_zeroed(bytes.div_ceil(8));
        buf.par_iter_mut()
            .enumerate()
            .for_each(|(i, x)| *x = i as u64);
        Self { buf }
    }

    /// Bytes read by each [`Self::evict`].
    pub fn bytes(&self) -> usize {
        self.buf.len() * 8
    }

    /// Reads the whole buffer (on the current rayon pool).
    pub fn evict(&self) {
        let x = self
            .buf
            .par_chunks(1 << 15)
            .map(|c| c.iter().fold(0u64, |a, &x| a ^ x))
            .reduce(|| 0, |a, b| a ^ b);
        std::hint::black_box(x);
    }
}

impl Default for CacheEvictor {
    fn default() -> Self {
        Self::new()
    }
}

/// The largest data cache of cpu0 as sysfs reports it (Linux), in bytes.
pub fn last_level_cache_bytes() -> Option<usize> {
    let mut best = None;
    for i in 0..8 {
        let dir = format!("/sys/devices/system/cpu/cpu0/cache/index{i}");
        let Ok(kind) = std::fs::read_to_string(format!("{dir}/type")) else {
            continue;
        };
        if kind.trim() == "Instruction" {
            continue;
        }
        let Ok(size) = std::fs::read_to_string(format!("{dir}/size")) else {
            continue;
        };
        if let Some(n) = parse_cache_size(&size) {
            best = best.max(Some(n));
        }
    }
    best
}

/// A sysfs cache size (`32K`, `2048K`, `480M`, `1G`, or plain bytes) in bytes.
pub fn parse_cache_size(size: &str) -> Option<usize> {
    let size = size.trim();
    let (num, mult) = match size.chars().last()? {
        'K' => (&size[..size.len() - 1], 1usize << 10),
        'M' => (&size[..size.len() - 1], 1 << 20),
        'G' => (&size[..size.len() - 1], 1 << 30),
        _ => (size, 1),
    };
    num.parse::<usize>().ok()?.checked_mul(mult)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_sizes_parse() {
        assert_eq!(parse_cache_size("491520K\n"), Some(480 << 20));
        assert_eq!(parse_cache_size("48K"), Some(48 << 10));
        assert_eq!(parse_cache_size("2M"), Some(2 << 20));
        assert_eq!(parse_cache_size("1G"), Some(1 << 30));
        assert_eq!(parse_cache_size("4096"), Some(4096));
        assert_eq!(parse_cache_size(""), None);
        assert_eq!(parse_cache_size("K"), None);
        assert_eq!(parse_cache_size("12X"), None);
    }

    #[test]
    fn evictor_reads_its_buffer() {
        let e = CacheEvictor::with_bytes(1 << 20);
        assert_eq!(e.bytes(), 1 << 20);
        e.evict();
    }
}
