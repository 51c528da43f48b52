//! Storage element types for K/V and page statistics.
//!
//! The cache stores K/V in f32, f16 or bf16 (`half`); all arithmetic is f32 (fast paths)
//! or f64 (oracles). [`KvElem`] is the one trait the generic code needs.

use half::{bf16, f16};
use serde::{Deserialize, Serialize};

/// The element type of a K/V (or statistics) buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    F32,
    F16,
    Bf16,
}

impl DType {
    /// Bytes per element.
    pub const fn size(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F16 | DType::Bf16 => 2,
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::Bf16 => "bf16",
        }
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for DType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "fp32" | "float32" => Ok(DType::F32),
            "f16" | "fp16" | "float16" | "half" => Ok(DType::F16),
            "bf16" | "bfloat16" => Ok(DType::Bf16),
            other => Err(format!(
                "unknown dtype `{other}` (expected f32, f16 or bf16)"
            )),
        }
    }
}

/// A scalar that can be stored in the cache: converts to and from f32.
pub trait KvElem: Copy + Send + Sync + Default + Into<f64> + 'static {
    const DTYPE: DType;
    fn to_f32(self) -> f32;
    /// Round to nearest.
    fn from_f32(x: f32) -> Self;
    /// The largest representable value ≤ x (for rigorous lower bounds).
    fn from_f32_down(x: f32) -> Self {
        let r = Self::from_f32(x);
        if r.to_f32() > x {
            Self::next_down(r)
        } else {
            r
        }
    }
    /// The smallest representable value ≥ x (for rigorous upper bounds).
    fn from_f32_up(x: f32) -> Self {
        let r = Self::from_f32(x);
        if r.to_f32() < x {
            Self::next_up(r)
        } else {
            r
        }
    }
    fn next_up(self) -> Self;
    fn next_down(self) -> Self;
    /// Widens a slice (SIMD where the CPU has it).
    #[inline]
    fn slice_to_f32(src: &[Self], dst: &mut [f32]) {
        for (d, s) in dst.iter_mut().zip(src) {
            *d = s.to_f32();
        }
    }
}

impl KvElem for f32 {
    const DTYPE: DType = DType::F32;
    #[inline]
    fn slice_to_f32(src: &[Self], dst: &mut [f32]) {
        dst.copy_from_slice(src);
    }
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
    #[inline(always)]
    fn from_f32(x: f32) -> Self {
        x
    }
    fn next_up(self) -> Self {
        self.next_up()
    }
    fn next_down(self) -> Self {
        self.next_down()
    }
}

/// Steps a 16-bit IEEE-like float (sign-magnitude bits) one ulp up or down.
fn step_bits16(bits: u16, up: bool) -> u16 {
    let neg = bits & 0x8000 != 0;
    let mag = bits & 0x7fff;
    if mag == 0 {
        // ±0: the smallest subnormal of the requested sign.
        return if up { 0x0001 } else { 0x8001 };
    }
    if neg == up {
        // moving towards zero
        (bits & 0x8000) | (mag - 1)
    } else {
        (bits & 0x8000) | (mag + 1)
    }
}

/// Bit-for-bit equality of two slices of a storage type: one `memcmp` of their bytes (no
/// per-element comparison, so it also stays cheap in coverage-instrumented fuzzing builds).
pub(crate) fn bits_eq<T: bytemuck::Pod>(a: &[T], b: &[T]) -> bool {
    bytemuck::cast_slice::<T, u8>(a) == bytemuck::cast_slice::<T, u8>(b)
}

impl KvElem for f16 {
    const DTYPE: DType = DType::F16;
    #[inline]
    fn slice_to_f32(src: &[Self], dst: &mut [f32]) {
        use half::slice::HalfFloatSliceExt;
        src.convert_to_f32_slice(dst);
    }
    #[inline(always)]
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
    #[inline(always)]
    fn from_f32(x: f32) -> Self {
        f16::from_f32(x)
    }
    fn next_up(self) -> Self {
        f16::from_bits(step_bits16(self.to_bits(), true))
    }
    fn next_down(self) -> Self {
        f16::from_bits(step_bits16(self.to_bits(), false))
    }
}

impl KvElem for bf16 {
    const DTYPE: DType = DType::Bf16;
    #[inline]
    fn slice_to_f32(src: &[Self], dst: &mut [f32]) {
        // bf16 → f32 is a 16-bit shift; this loop vectorises.
        for (d, s) in dst.iter_mut().zip(src) {
            *d = f32::from_bits((s.to_bits() as u32) << 16);
        }
    }
    #[inline(always)]
    fn to_f32(self) -> f32 {
        bf16::to_f32(self)
    }
    #[inline(always)]
    fn from_f32(x: f32) -> Self {
        bf16::from_f32(x)
    }
    fn next_up(self) -> Self {
        bf16::from_bits(step_bits16(self.to_bits(), true))
    }
    fn next_down(self) -> Self {
        bf16::from_bits(step_bits16(self.to_bits(), false))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directed_rounding_brackets_the_value() {
        for &x in &[0.1f32, -0.1, 1.0 / 3.0, -7.77, 1e-6, -1e-6, 0.0, 65000.0] {
            let lo = f16::from_f32_down(x).to_f32();
            let hi = f16::from_f32_up(x).to_f32();
            assert!(lo <= x && x <= hi, "f16 {x}: {lo} {hi}");
            let lo = bf16::from_f32_down(x).to_f32();
            let hi = bf16::from_f32_up(x).to_f32();
            assert!(lo <= x && x <= hi, "bf16 {x}: {lo} {hi}");
        }
    }
}
