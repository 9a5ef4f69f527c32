//! What `check`, `apply` (and its dry run) and `revert` report: the typed vocabulary the engine
//! and the command line share. The JSON field values are the strings documented in the README
//! (`"would change"`, `"dry-run"`, …), pinned by the tests.

use std::fmt;

use serde::Serialize;

use crate::context::Context;
use crate::recipe::Scope;
use crate::steps::StepKind;

/// The version of the JSON contract, the reports' `schema_version` (`docs/json.md`).
pub use hostkit_core::JSON_SCHEMA_VERSION as SCHEMA_VERSION;

/// What a command did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// `hostkit check`.
    Check,
    /// `hostkit apply --dry-run`.
    DryRun,
    /// `hostkit apply`.
    Apply,
    /// `hostkit revert`.
    Revert,
}

/// A step's status in a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum StepStatus {
    /// Already as wanted (check, dry run, apply).
    #[serde(rename = "ok")]
    Ok,
    /// Something would change (check, dry run).
    #[serde(rename = "would change")]
    WouldChange,
    /// The step does not apply to this host.
    #[serde(rename = "not applicable")]
    NotApplicable,
    /// A person must act.
    #[serde(rename = "manual")]
    Manual,
    /// Changed by this apply.
    #[serde(rename = "changed")]
    Changed,
    /// Its commands were only reported (under `--root`), not run.
    #[serde(rename = "reported")]
    Reported,
    /// It failed; apply stopped there.
    #[serde(rename = "failed")]
    Failed,
    /// Not done, because a step before it failed.
    #[serde(rename = "not done")]
    NotDone,
    /// Put back by revert.
    #[serde(rename = "reverted")]
    Reverted,
}

impl StepStatus {
    /// The status as shown (and in JSON).
    pub fn as_str(self) -> &'static str {
        match self {
            StepStatus::Ok => "ok",
            StepStatus::WouldChange => "would change",
            StepStatus::NotApplicable => "not applicable",
            StepStatus::Manual => "manual",
            StepStatus::Changed => "changed",
            StepStatus::Reported => "reported",
            StepStatus::Failed => "failed",
            StepStatus::NotDone => "not done",
            StepStatus::Reverted => "reverted",
        }
    }

    /// Whether something is left to do after it (exit status 1 for `check` and `apply`).
    pub fn pending(self) -> bool {
        matches!(self, StepStatus::WouldChange | StepStatus::Reported)
    }

    /// Whether the step's commands were run or are to be run (not for steps that did nothing).
    pub fn acts(self) -> bool {
        matches!(
            self,
            StepStatus::WouldChange
                | StepStatus::Changed
                | StepStatus::Reported
                | StepStatus::Reverted
        )
    }
}

impl fmt::Display for StepStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `pad` so that widths (`{:<15}`) apply.
        f.pad(self.as_str())
    }
}

/// A command in a report.
#[derive(Debug, Clone, Serialize)]
pub struct CommandReport {
    /// The command line (shell-quoted).
    pub command: String,
    /// Whether it is (or was) run; false when only reported (under `--root`).
    pub run: bool,
}

/// A file's whole text before and after a step — what its `diff` is made from — for callers
/// that render their own (the Ansible module's `diff`). Not part of the JSON output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileText {
    /// The path relative to the root, as in [`StepReport::files`].
    pub path: String,
    /// The text before (`None`: the file is absent).
    pub before: Option<String>,
    /// The text after (`None`: the file is removed).
    pub after: Option<String>,
}

/// One step in a report.
#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    /// The step's id.
    pub id: String,
    /// Its kind.
    pub kind: StepKind,
    /// What it sets.
    pub summary: String,
    /// Why it exists (one or two lines of history).
    pub why: String,
    /// Its status.
    pub status: StepStatus,
    /// Why not applicable, what to do by hand, or what failed.
    pub reason: Option<String>,
    /// Files (relative to the root) it changes or changed.
    pub files: Vec<String>,
    /// Non-file effects.
    pub commands: Vec<CommandReport>,
    /// The unified diff of its files.
    pub diff: String,
    /// The texts `diff` is made from (text files only).
    #[serde(skip)]
    pub texts: Vec<FileText>,
}

/// What a command did, for text or JSON output.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The version of the JSON contract ([`SCHEMA_VERSION`], `docs/json.md`).
    pub schema_version: u32,
    /// The recipe.
    pub recipe: String,
    /// What was done.
    pub action: Action,
    /// The scope.
    pub scope: Scope,
    /// The root (`/` for the live system).
    pub root: String,
    /// Whether anything was (check, dry run: would be) changed.
    pub changed: bool,
    /// One line: "already applied", "2 steps would change", …
    pub message: String,
    /// The steps.
    pub steps: Vec<StepReport>,
    /// The whole diff.
    pub diff: String,
}

impl Report {
    /// True when something is left to do: `check` found a change, or `apply` could only report
    /// a command (under `--root`). Maps to exit status 1.
    pub fn pending(&self) -> bool {
        self.steps.iter().any(|s| s.status.pending()) && self.action != Action::DryRun
    }

    pub(crate) fn new(ctx: &Context, action: Action) -> Report {
        Report {
            schema_version: SCHEMA_VERSION,
            recipe: ctx.recipe.clone(),
            action,
            scope: ctx.scope,
            root: ctx.root.display().to_string(),
            changed: false,
            message: String::new(),
            steps: Vec::new(),
            diff: String::new(),
        }
    }

    pub(crate) fn finish(mut self) -> Report {
        self.diff = self.steps.iter().map(|s| s.diff.as_str()).collect();
        self
    }
}
