//! The plan: for each step, its status and the effects that would bring the host to the wanted
//! state. Computed without side effects; the dry-run diff and the apply both come from the same
//! before/after contents.

use std::path::PathBuf;

use serde::Serialize;

use crate::context::Context;
use crate::error::{Error, Result};
use crate::host::{Cmd, Host};
use crate::pkg::{Manager, Presence, at_least, presence};
use crate::recipe::{OVERRIDE_VALUES, Recipe, Step};
use crate::steps::{Outcome, StepKind};

/// A step's status in a check (and, for the parts not done, in a dry run).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Status {
    /// Already as wanted.
    #[serde(rename = "ok")]
    Ok,
    /// Something would change.
    #[serde(rename = "would change")]
    WouldChange,
    /// The step does not apply to this host (see the reason).
    #[serde(rename = "not applicable")]
    NotApplicable,
    /// No setting exists; a person must act (see the reason).
    #[serde(rename = "manual")]
    Manual,
}

impl Status {
    /// The status as shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::WouldChange => "would change",
            Status::NotApplicable => "not applicable",
            Status::Manual => "manual",
        }
    }
}

/// A file to write (or remove).
#[derive(Debug, Clone)]
pub struct FileChange {
    /// The resolved host path.
    pub path: PathBuf,
    /// The path relative to the root, for diffs.
    pub display: String,
    /// The current text (`None`: absent).
    pub before: Option<String>,
    /// The wanted text (`None`: remove).
    pub after: Option<String>,
    /// Mode to keep or give.
    pub mode: u32,
    /// Owner to keep or give.
    pub owner: (u32, u32),
}

/// A `gsettings set` to run.
#[derive(Debug, Clone)]
pub struct GsettingsChange {
    /// The schema.
    pub schema: String,
    /// The key.
    pub key: String,
    /// The wanted value.
    pub value: String,
    /// The value before (GVariant text).
    pub previous: String,
    /// Whether the value before was the schema's default (revert then resets the key).
    pub previous_is_default: bool,
    /// The command.
    pub cmd: Cmd,
}

/// A command that rebuilds a generated file (the dconf database).
#[derive(Debug, Clone)]
pub struct Regenerate {
    /// The command.
    pub cmd: Cmd,
    /// The file it writes (backed up and restored by revert).
    pub output: PathBuf,
    /// `output` relative to the root.
    pub display: String,
}

/// Packages to install.
#[derive(Debug, Clone)]
pub struct Install {
    /// The package manager.
    pub manager: Manager,
    /// The distribution's package names.
    pub packages: Vec<String>,
    /// The command.
    pub cmd: Cmd,
    /// False under `--root`: the command is reported, not run.
    pub run: bool,
}

/// One thing a step changes.
#[derive(Debug, Clone)]
pub enum Effect {
    /// A file.
    File(FileChange),
    /// A GSettings key.
    Gsettings(GsettingsChange),
    /// A generated file.
    Regenerate(Regenerate),
    /// Packages.
    Install(Install),
}

impl Effect {
    /// The command line of a non-file effect.
    pub fn command(&self) -> Option<&Cmd> {
        match self {
            Effect::File(_) => None,
            Effect::Gsettings(g) => Some(&g.cmd),
            Effect::Regenerate(r) => Some(&r.cmd),
            Effect::Install(i) => Some(&i.cmd),
        }
    }

    /// Whether apply runs it (false: reported only, under `--root`).
    pub fn runs(&self) -> bool {
        !matches!(self, Effect::Install(i) if !i.run)
    }
}

/// One step's plan.
#[derive(Debug, Clone)]
pub struct StepPlan {
    /// The step's id.
    pub id: String,
    /// Its kind.
    pub kind: StepKind,
    /// What it sets, one line.
    pub summary: String,
    /// Where it is defined.
    pub location: String,
    /// Its status.
    pub status: Status,
    /// Why not applicable, or what to do by hand.
    pub reason: Option<String>,
    /// What would change.
    pub effects: Vec<Effect>,
}

impl StepPlan {
    /// The unified diff of this step's files.
    pub fn diff(&self) -> String {
        self.effects
            .iter()
            .filter_map(|e| match e {
                Effect::File(f) => Some(crate::diff::unified(&f.display, f.before.as_deref(), f.after.as_deref())),
                _ => None,
            })
            .collect()
    }
}

/// The plan of a recipe in a context.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The steps of the scope, in order.
    pub steps: Vec<StepPlan>,
}

impl Plan {
    /// True when nothing would change.
    pub fn satisfied(&self) -> bool {
        self.steps.iter().all(|s| s.status != Status::WouldChange)
    }

    /// The diff of every file.
    pub fn diff(&self) -> String {
        self.steps.iter().map(StepPlan::diff).collect()
    }
}

/// Computes the plan: reads files and runs probes, writes nothing.
pub fn plan(recipe: &Recipe, ctx: &Context, host: &dyn Host) -> Result<Plan> {
    let mut steps: Vec<StepPlan> = Vec::new();
    for step in recipe.steps_for(ctx.scope) {
        let planned = plan_step(recipe, step, ctx, host).map_err(|e| Error::InStep {
            step: step.id.clone(),
            location: step.location.clone(),
            source: Box::new(e),
        })?;
        for effect in &planned.effects {
            let Effect::File(f) = effect else { continue };
            if let Some(other) = steps.iter().find(|s| {
                s.effects.iter().any(|e| matches!(e, Effect::File(g) if g.path == f.path))
            }) {
                return Err(Error::Conflict {
                    recipe: recipe.name.clone(),
                    first: other.id.clone(),
                    second: planned.id.clone(),
                    path: f.path.clone(),
                });
            }
        }
        steps.push(planned);
    }
    Ok(Plan { steps })
}

fn plan_step(recipe: &Recipe, step: &Step, ctx: &Context, host: &dyn Host) -> Result<StepPlan> {
    let mut planned = StepPlan {
        id: step.id.clone(),
        kind: step.spec.kind(),
        summary: if step.summary.is_empty() { step.spec.describe(ctx) } else { step.summary.clone() },
        location: step.location.clone(),
        status: Status::Ok,
        reason: None,
        effects: Vec::new(),
    };
    if let Some(reason) = not_applicable(recipe, step, ctx, host) {
        planned.status = Status::NotApplicable;
        planned.reason = Some(reason);
        return Ok(planned);
    }
    match step.spec.plan(&step.id, recipe, ctx, host)? {
        Outcome::Effects(effects) => {
            planned.status = if effects.is_empty() { Status::Ok } else { Status::WouldChange };
            planned.effects = effects;
        }
        Outcome::NotApplicable(reason) => {
            planned.status = Status::NotApplicable;
            planned.reason = Some(reason);
        }
        Outcome::Manual(what) => {
            planned.status = Status::Manual;
            planned.reason = Some(what);
        }
    }
    Ok(planned)
}

/// Why a step's `when` excludes it here, if it does.
fn not_applicable(recipe: &Recipe, step: &Step, ctx: &Context, host: &dyn Host) -> Option<String> {
    let when = &step.when;
    let hint = when.override_param.as_ref().map(|p| format!(" (--set {p}=always to apply anyway)"));
    if let Some(param) = &when.override_param {
        match ctx.var(param) {
            Some(v) if v == OVERRIDE_VALUES[1] => return None,
            Some(v) if v == OVERRIDE_VALUES[2] => return Some(format!("disabled by --set {param}=never")),
            _ => {}
        }
    }
    let logical = when.package.as_ref()?;
    let names = recipe.packages.get(logical).cloned().unwrap_or_default();
    let reason = match presence(host, &ctx.root, logical, &names) {
        Presence::Installed(version) => match &when.min_version {
            Some(min) if !at_least(&version, min) => format!("{logical} {version} is older than {min}"),
            _ => return None,
        },
        Presence::Missing(names) => format!("{logical} is not installed ({})", names.join(", ")),
        Presence::Unknown(reason) => reason,
    };
    Some(reason + hint.as_deref().unwrap_or(""))
}
