//! tau stage (see crate docs).
