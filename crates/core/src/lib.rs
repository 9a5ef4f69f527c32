//! The machinery hostkit's crates share, once: what `hostkit-recipes`, `hostkit-patch` and
//! `hostkit-net` would otherwise each rebuild.
//!
//! * [`source`]: reading the files a user names that hostkit then acts on (recipes, patch
//!   rules, tunnel configurations) — regular files only, never blocking, only from owners
//!   hostkit takes instructions from;
//! * [`toml`]: the strict TOML reader with spans (`FILE:LINE:COLUMN` errors, unknown keys
//!   refused), worded per file format;
//! * [`template`]: `{name}` templates, strict (recipes) or for source text (patches);
//! * [`set`]: `--set KEY=VALUE` arguments;
//! * [`catalog`]: built-in plus directory definitions, a name defined twice refused;
//! * [`diff`]: unified diffs;
//! * [`atomic`]: replacing a file atomically relative to a directory the caller opened —
//!   temporary file `O_EXCL | O_NOFOLLOW`, owner, mode, fsync, `renameat`, fsync of the
//!   directory, nothing left behind on failure;
//! * [`lock`]: the `flock` that serializes runs, naming its holder's pid to the next one.
#![deny(missing_docs)]

pub mod atomic;
pub mod catalog;
pub mod diff;
pub mod lock;
pub mod set;
pub mod source;
pub mod template;
pub mod toml;

pub use catalog::{Catalog, Duplicate, Entry};
pub use set::{SetError, parse_sets};
pub use source::{SourceError, list_dir, read_file, read_text};
pub use template::{Braces, Template, TemplateError};
pub use toml::{Expected, Fields, Located, Source, Wording};

/// The version of hostkit's JSON contract: the `schema_version` field of every object
/// `--format json` prints (`check`, `apply`, `revert`, `list`, `tun status`) and of the Ansible
/// module's result, written down in `docs/json.md`. A new field keeps it; anything else — a
/// field renamed, removed or retyped, a new enum value, a changed meaning — bumps it.
pub const JSON_SCHEMA_VERSION: u32 = 1;
