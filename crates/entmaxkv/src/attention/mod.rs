//! attention stage (see crate docs).
