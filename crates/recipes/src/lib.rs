//! hostkit's recipe engine.
//!
//! A recipe (a TOML file) says what a host should look like: lines in shell profiles, keys in
//! INI files, whole drop-in files, GSettings keys, installed packages, and the things no setting
//! can do (`manual`). The engine answers three questions about it:
//!
//! * [`check`]: is the host already right? Each step is `ok`, `would change`,
//!   `not applicable` (with the reason) or `manual` (with what a person must do).
//! * [`dry_run`]: what exactly would change? A unified diff of every file and the command line
//!   of every other effect; nothing is written, not even the state directory.
//! * [`apply`] / [`revert`]: make the change, safely (atomic writes, trusted symbolic links
//!   only, a lock, a journal with backups) and reversibly (byte-for-byte).
//!
//! Report-only `probe` steps (`probes/`) look at the host without changing it (group limits,
//! the procps version, the Realtek card and the effective modprobe.d configuration, udev rules)
//! and can guard other steps (`when.probe`).
//!
//! The flow is: [`Catalog::load`] → [`Recipe`] → [`Context`] (root, scope, parameters) →
//! `plan::plan` (pure: before and after contents per file) → report or apply. Host effects
//! (running `gsettings`, `dconf`, `dpkg-query`, the package manager) go through the [`Host`]
//! trait.

#![deny(missing_docs)]

mod context;
mod engine;
mod error;
mod fsutil;
mod host;
pub mod par;
mod pkg;
mod plan;
mod probes;
mod recipe;
mod report;
mod session;
mod state;
mod steps;
mod text;
mod wording;

pub use context::{Context, Options};
pub use engine::{Applied, apply, check, dry_run, revert, revert_preview};
pub use error::{Error, Result};
pub use host::{Host, RealHost};
pub use plan::sequential;
pub use recipe::{BUILTIN, Catalog, Recipe, Scope, parse as parse_recipe};
pub use report::{Action, CommandReport, FileText, Report, SCHEMA_VERSION, StepReport, StepStatus};
pub use session::SessionHost;
pub use steps::{StepKind, StepSpec};
