//! The machinery hostkit's crates share, once: what `hostkit-recipes`, `hostkit-patch` and
//! `hostkit-net` would otherwise each rebuild.
//!
//! * [`source`]: reading the files a user names that hostkit then acts on (recipes, patch
//!   rules) — regular files only, never blocking, only from owners hostkit takes
//!   instructions from.
#![deny(missing_docs)]

pub mod source;

pub use source::{SourceError, list_dir, read_text};
