//! The machinery hostkit's crates share, once: what `hostkit-recipes`, `hostkit-patch` and
//! `hostkit-net` would otherwise each rebuild.
//!
//! * [`source`]: reading the files a user names that hostkit then acts on (recipes, patch
//!   rules) — regular files only, never blocking, only from owners hostkit takes
//!   instructions from.
//! * [`atomic`]: replacing a file atomically relative to a directory the caller opened —
//!   temporary file `O_EXCL | O_NOFOLLOW`, owner, mode, fsync, `renameat`, fsync of the
//!   directory, nothing left behind on failure.
//! * [`lock`]: the `flock` that serializes runs, naming its holder's pid to the next one.
#![deny(missing_docs)]

pub mod atomic;
pub mod lock;
pub mod source;

pub use source::{SourceError, list_dir, read_text};
