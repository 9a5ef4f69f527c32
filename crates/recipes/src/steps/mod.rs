//! Step kinds: one module each. A step's planner reads the host (files, probes) and returns the
//! effects that would bring it to the wanted state; it never writes anything.
//!
//! Adding a kind: a module with `KEYS`, `parse` and `plan`, a variant in [`StepKind`] and
//! [`StepSpec`], and a line in each `match` below. Report-only kinds (probes that only say
//! `ok`/`not applicable`/`manual`) return [`Outcome::NotApplicable`] or [`Outcome::Manual`] and
//! no effects.

pub mod file;
pub mod gsettings;
pub mod ini;
pub mod line;
pub mod manual;
pub mod package;
pub mod probe;

use std::path::Path;

use serde::Serialize;

use crate::context::Context;
use crate::error::Result;
use crate::host::Host;
use crate::plan::{Effect, FileChange};
use crate::recipe::{Recipe, StepContext};
use crate::wording::Fields;

/// The kinds of step a recipe may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StepKind {
    /// A line present (or absent) in a text file, e.g. a shell profile.
    Line,
    /// A key in a section of an INI-style file.
    Ini,
    /// A whole file managed by hostkit (a drop-in).
    File,
    /// A GSettings key: `gsettings` in user scope, a dconf keyfile + `dconf update` in system scope.
    Gsettings,
    /// Packages that should be installed.
    Package,
    /// Something no setting can do: reported as `manual` with what a person must do.
    Manual,
    /// A report-only probe of the host (see `crate::probes`): `ok` with what it found,
    /// `manual` when a person must act, `not applicable` when it cannot run here.
    Probe,
}

const KINDS: &[StepKind] = &[
    StepKind::Line,
    StepKind::Ini,
    StepKind::File,
    StepKind::Gsettings,
    StepKind::Package,
    StepKind::Manual,
    StepKind::Probe,
];

impl StepKind {
    /// The kind's name in recipes.
    pub fn name(self) -> &'static str {
        match self {
            StepKind::Line => "line",
            StepKind::Ini => "ini",
            StepKind::File => "file",
            StepKind::Gsettings => "gsettings",
            StepKind::Package => "package",
            StepKind::Manual => "manual",
            StepKind::Probe => "probe",
        }
    }

    /// Every kind's name.
    pub fn names() -> Vec<&'static str> {
        KINDS.iter().map(|k| k.name()).collect()
    }

    /// The kind called `name`.
    pub fn from_name(name: &str) -> Option<StepKind> {
        KINDS.iter().copied().find(|k| k.name() == name)
    }

    /// The keys this kind adds to the common step keys.
    pub fn keys(self) -> &'static [&'static str] {
        match self {
            StepKind::Line => line::KEYS,
            StepKind::Ini => ini::KEYS,
            StepKind::File => file::KEYS,
            StepKind::Gsettings => gsettings::KEYS,
            StepKind::Package => package::KEYS,
            StepKind::Manual => manual::KEYS,
            StepKind::Probe => probe::KEYS,
        }
    }

    pub(crate) fn parse(self, f: &Fields<'_>, ctx: &StepContext<'_>) -> Result<StepSpec> {
        Ok(match self {
            StepKind::Line => StepSpec::Line(line::parse(f, ctx)?),
            StepKind::Ini => StepSpec::Ini(ini::parse(f, ctx)?),
            StepKind::File => StepSpec::File(file::parse(f, ctx)?),
            StepKind::Gsettings => StepSpec::Gsettings(gsettings::parse(f, ctx)?),
            StepKind::Package => StepSpec::Package(package::parse(f, ctx)?),
            StepKind::Manual => StepSpec::Manual(manual::parse(f, ctx)?),
            StepKind::Probe => StepSpec::Probe(probe::parse(f)?),
        })
    }
}

/// A step's kind-specific settings.
#[derive(Debug, Clone)]
pub enum StepSpec {
    /// See `line::Spec`.
    Line(line::Spec),
    /// See `ini::Spec`.
    Ini(ini::Spec),
    /// See `file::Spec`.
    File(file::Spec),
    /// See `gsettings::Spec`.
    Gsettings(gsettings::Spec),
    /// See `package::Spec`.
    Package(package::Spec),
    /// See `manual::Spec`.
    Manual(manual::Spec),
    /// See `probe::Spec`.
    Probe(probe::Spec),
}

/// What a step's planner found.
#[derive(Debug)]
pub enum Outcome {
    /// These effects are needed (none: the step is satisfied).
    Effects(Vec<Effect>),
    /// Satisfied, with what a probe found (shown as the step's reason; may span lines).
    Ok(String),
    /// The step does not apply here, and why.
    NotApplicable(String),
    /// No setting can do it; what a person must do.
    Manual(String),
}

impl StepSpec {
    /// The kind.
    pub fn kind(&self) -> StepKind {
        match self {
            StepSpec::Line(_) => StepKind::Line,
            StepSpec::Ini(_) => StepKind::Ini,
            StepSpec::File(_) => StepKind::File,
            StepSpec::Gsettings(_) => StepKind::Gsettings,
            StepSpec::Package(_) => StepKind::Package,
            StepSpec::Manual(_) => StepKind::Manual,
            StepSpec::Probe(_) => StepKind::Probe,
        }
    }

    /// A one-line description of what the step sets, with placeholders rendered.
    pub fn describe(&self, ctx: &Context) -> String {
        match self {
            StepSpec::Line(s) => s.describe(ctx),
            StepSpec::Ini(s) => s.describe(ctx),
            StepSpec::File(s) => s.describe(ctx),
            StepSpec::Gsettings(s) => s.describe(ctx),
            StepSpec::Package(s) => s.describe(),
            StepSpec::Manual(s) => s.describe(),
            StepSpec::Probe(s) => s.describe(),
        }
    }

    pub(crate) fn plan(
        &self,
        id: &str,
        recipe: &Recipe,
        ctx: &Context,
        host: &dyn Host,
    ) -> Result<Outcome> {
        match self {
            StepSpec::Line(s) => s.plan(ctx),
            StepSpec::Ini(s) => s.plan(ctx),
            StepSpec::File(s) => s.plan(ctx),
            StepSpec::Gsettings(s) => s.plan(id, ctx, host),
            StepSpec::Package(s) => s.plan(recipe, ctx, host),
            StepSpec::Manual(s) => Ok(s.plan(ctx)),
            StepSpec::Probe(s) => s.plan(ctx, host),
        }
    }
}

/// Parses an octal `mode` key (default 0644).
pub(crate) fn parse_mode(f: &Fields<'_>) -> Result<u32> {
    match f.string("mode")? {
        None => Ok(0o644),
        Some(m) => u32::from_str_radix(m.trim_start_matches("0o"), 8)
            .ok()
            .filter(|&m| m <= 0o7777)
            .ok_or_else(|| {
                f.error(
                    "mode",
                    format!("`{m}` is not an octal mode such as \"0644\""),
                )
            }),
    }
}

/// The common core of file steps: reads `logical` as text, lets `edit` compute the wanted text
/// from the current one (`None`: the file does not exist; returning `None`: remove it), and
/// returns the change when there is one. New files get `mode`.
pub(crate) fn edit_file(
    ctx: &Context,
    logical: &Path,
    mode: u32,
    edit: impl FnOnce(Option<&str>) -> Option<String>,
) -> Result<Vec<Effect>> {
    let (path, existing, before) = ctx.read_text(logical)?;
    let after = edit(before.as_deref());
    if after == before {
        return Ok(Vec::new());
    }
    let (mode, owner) = match &existing {
        Some(e) => (e.mode, (e.uid, e.gid)),
        None => (mode, ctx.owner),
    };
    Ok(vec![Effect::File(FileChange {
        display: ctx.display(&path),
        path,
        before,
        after,
        mode,
        owner,
    })])
}
