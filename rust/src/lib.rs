//! lcfast's Rust token engine. The pure-Rust modules are usable (and tested) without Python;
//! `python` (feature-gated) is the thin PyO3 layer exposed as `lcfast._core`.
//!
//! - [`shard`]: the `.lcshard` format (writer, memory-mapped validated reader)
//! - [`tokenize`]: documents → token ids (parallel, streaming) → train/val shards + counts
//! - [`count`]: token histograms and imbalance statistics
//! - [`ambiguity`]: n-gram context ambiguity, H(next | context)
//! - [`windows`]: random training windows and sequential collection windows
//! - [`classstats`]: the fused CPU accumulation behind `ClassStats.update` (per-class sums)

pub mod ambiguity;
pub mod classstats;
pub mod count;
pub mod error;
pub mod shard;
pub mod tokenize;
pub mod windows;

#[cfg(feature = "python")]
mod python;

pub use error::{Error, ErrorKind, Result};
