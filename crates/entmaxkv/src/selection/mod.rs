//! selection stage (see crate docs).
