//! lcfast's Rust token engine. The pure-Rust modules are usable (and tested) without Python;
//! `python` (feature-gated) is the thin PyO3 layer exposed as `lcfast._core`.

#[cfg(feature = "python")]
mod python;
