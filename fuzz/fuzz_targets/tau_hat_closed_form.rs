//! The closed-form τ̂ paths (α ∈ {1, 5/4, 4/3, 3/2, 2}: the ones decoding uses by default)
//! on arbitrary μ, σ, n: never panic, never return a non-finite τ. The quadrature path for
//! other α is fuzzed by `tau_hat`.
#![no_main]
use libfuzzer_sys::fuzz_target;

#[path = "tau_common.rs"]
mod tau_common;
use tau_common::{check, Input, FAST};

fuzz_target!(|inp: Input| {
    check(&inp, FAST[inp.alpha_pick as usize % FAST.len()]);
});
