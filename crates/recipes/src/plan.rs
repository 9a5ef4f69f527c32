//! The plan: for each step, its status and the effects that would bring the host to the wanted
//! state. Computed without side effects; the dry-run diff and the apply both come from the same
//! before/after contents.

use std::path::PathBuf;

use crate::context::Context;
use crate::error::{Error, Result};
use crate::host::{Cmd, Host};
use crate::pkg::{Manager, Presence, at_least, presence};
use crate::recipe::{Override, Recipe, Step};
use crate::steps::{Outcome, StepKind};

/// A step's status in a plan: [`StepStatus::Ok`], [`StepStatus::WouldChange`],
/// [`StepStatus::NotApplicable`] or [`StepStatus::Manual`] (the report's vocabulary, one enum).
pub use crate::report::StepStatus as Status;

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

/// A command that makes a service re-read the files a step wrote (`udevadm control --reload`).
#[derive(Debug, Clone)]
pub struct Reload {
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
    /// A reload command, run after the step's files are written.
    Reload(Reload),
}

impl Effect {
    /// The command line of a non-file effect.
    pub fn command(&self) -> Option<&Cmd> {
        match self {
            Effect::File(_) => None,
            Effect::Gsettings(g) => Some(&g.cmd),
            Effect::Regenerate(r) => Some(&r.cmd),
            Effect::Install(i) => Some(&i.cmd),
            Effect::Reload(r) => Some(&r.cmd),
        }
    }

    /// Whether apply runs it (false: reported only, under `--root`).
    pub fn runs(&self) -> bool {
        match self {
            Effect::Install(i) => i.run,
            Effect::Reload(r) => r.run,
            _ => true,
        }
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
    /// Why the step exists (history).
    pub why: String,
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
                Effect::File(f) => Some(hostkit_core::diff::unified(
                    &f.display,
                    f.before.as_deref(),
                    f.after.as_deref(),
                )),
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
}

/// Computes the plan: reads files and runs probes, writes nothing.
///
/// On the live system the steps are planned at the same time (their probes wait on child
/// processes: `gsettings`, `setpriv`, `ps`, `dmesg`, `modprobe -c`), then taken in order, so
/// the plan, and the first error, are those of planning them one after the other.
pub fn plan(recipe: &Recipe, ctx: &Context, host: &dyn Host) -> Result<Plan> {
    let steps: Vec<&Step> = recipe.steps_for(ctx.scope).collect();
    let one = |step: &Step| {
        plan_step(recipe, step, ctx, host).map_err(|e| Error::InStep {
            step: step.id.clone(),
            location: step.location.clone(),
            source: Box::new(e),
        })
    };
    let planned: Vec<Result<StepPlan>> = if ctx.live && !sequential(host) {
        crate::par::map(&steps, |step| one(step))
    } else {
        // Under --root nothing waits on a process: one after the other, stopping at an error.
        let mut planned = Vec::new();
        for step in &steps {
            let p = one(step);
            let failed = p.is_err();
            planned.push(p);
            if failed {
                break;
            }
        }
        planned
    };
    let mut steps: Vec<StepPlan> = Vec::new();
    for planned in planned {
        let planned = planned?;
        for effect in &planned.effects {
            let Effect::File(f) = effect else { continue };
            if let Some(other) = steps.iter().find(|s| {
                s.effects
                    .iter()
                    .any(|e| matches!(e, Effect::File(g) if g.path == f.path))
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

/// `HOSTKIT_SEQUENTIAL=1`: plan one step after the other (and `check all` one recipe after
/// the other), as it used to be done (the tests compare both). Test builds only: release
/// builds ignore it.
pub fn sequential(host: &dyn Host) -> bool {
    cfg!(debug_assertions) && host.env("HOSTKIT_SEQUENTIAL").as_deref() == Some("1")
}

fn plan_step(recipe: &Recipe, step: &Step, ctx: &Context, host: &dyn Host) -> Result<StepPlan> {
    let mut planned = StepPlan {
        id: step.id.clone(),
        kind: step.spec.kind(),
        summary: if step.summary.is_empty() {
            step.spec.describe(ctx)
        } else {
            ctx.render(&crate::recipe::Template::lenient(
                &step.summary,
                hostkit_core::Braces::Strict,
            ))
        },
        why: step.why.clone(),
        status: Status::Ok,
        reason: None,
        effects: Vec::new(),
    };
    if let Some(reason) = not_applicable(recipe, step, ctx, host)? {
        planned.status = Status::NotApplicable;
        planned.reason = Some(reason);
        return Ok(planned);
    }
    match step.spec.plan(&step.id, recipe, ctx, host)? {
        Outcome::Effects(effects) => {
            planned.status = if effects.is_empty() {
                Status::Ok
            } else {
                Status::WouldChange
            };
            planned.effects = effects;
        }
        Outcome::Ok(finding) => {
            planned.status = Status::Ok;
            planned.reason = Some(finding);
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
fn not_applicable(
    recipe: &Recipe,
    step: &Step,
    ctx: &Context,
    host: &dyn Host,
) -> Result<Option<String>> {
    let when = &step.when;
    if let Some((param, value)) = &when.param_equals
        && ctx.var(param) != Some(value.as_str())
    {
        return Ok(Some(format!("only with --set {param}={value}")));
    }
    let hint = when
        .override_param
        .as_ref()
        .map(|p| format!(" (--set {p}=always to apply anyway)"));
    if let Some(param) = &when.override_param {
        match ctx.var(param).and_then(Override::parse) {
            Some(Override::Always) => return Ok(None),
            Some(Override::Never) => {
                return Ok(Some(format!("disabled by --set {param}=never")));
            }
            Some(Override::Auto) | None => {}
        }
    }
    if let Some(path) = &when.exists {
        let logical = ctx.path(path)?;
        if std::fs::symlink_metadata(crate::context::join(&ctx.root, &logical)).is_err() {
            return Ok(Some(format!(
                "{} does not exist{}",
                logical.display(),
                hint.as_deref().unwrap_or("")
            )));
        }
    }
    if let Some(guard) = &when.guard
        && let Some(objection) = crate::probes::guard(guard, ctx, host)?
    {
        return Ok(Some(objection + hint.as_deref().unwrap_or("")));
    }
    Ok(package_reason(recipe, when, ctx, host).map(|r| r + hint.as_deref().unwrap_or("")))
}

/// Why `when.package` (with its versions) excludes a step, if it does.
fn package_reason(
    recipe: &Recipe,
    when: &crate::recipe::When,
    ctx: &Context,
    host: &dyn Host,
) -> Option<String> {
    let logical = when.package.as_ref()?;
    let names = recipe.packages.get(logical).cloned().unwrap_or_default();
    let reason = match presence(host, &ctx.root, logical, &names) {
        Presence::Installed(version) => match (&when.min_version, &when.below_version) {
            (Some(min), _) if !at_least(&version, min) => {
                format!("{logical} {version} is older than {min}")
            }
            (_, Some(below)) if at_least(&version, below) => {
                format!("{logical} {version} is {below} or newer")
            }
            _ => return None,
        },
        Presence::Missing(names) => format!("{logical} is not installed ({})", names.join(", ")),
        Presence::Unknown(reason) => reason,
    };
    Some(reason)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::Options;
    use crate::host::fake::FakeHost;
    use crate::recipe::{Catalog, Scope};

    fn catalog() -> Catalog {
        Catalog::load(&[] as &[&std::path::Path]).unwrap()
    }

    fn statuses(plan: &Plan) -> Vec<(&str, Status)> {
        plan.steps
            .iter()
            .map(|s| (s.id.as_str(), s.status))
            .collect()
    }

    #[test]
    fn live_user_plan_probes_gsettings_and_writes_nothing() {
        let home = tempfile::tempdir().unwrap();
        std::fs::write(home.path().join(".profile"), "# p\n").unwrap();
        let mut host = FakeHost::default();
        host.env
            .insert("HOME".into(), home.path().display().to_string());
        host.answer(
            "gsettings get org.gtk.Settings.FileChooser sort-directories-first",
            0,
            "false\n",
        );
        let catalog = catalog();
        let recipe = catalog.get("gtk-legacy").unwrap();
        let opts = Options {
            sets: vec!["settings_ini=never".into()],
            ..Options::default()
        };
        let ctx = Context::new(recipe, &opts, &host).unwrap();
        let plan = plan(recipe, &ctx, &host).unwrap();
        assert_eq!(
            statuses(&plan),
            [
                ("overlay-scrolling-env", Status::WouldChange),
                ("overlay-scrolling-ini", Status::NotApplicable),
                ("sort-directories-first", Status::WouldChange),
                ("file-chooser-typeahead", Status::Manual),
                // The fake answers no package query: whether GTK is older than 3.24 is unknown.
                ("file-chooser-single-click", Status::NotApplicable),
            ]
        );
        let Effect::Gsettings(g) = &plan.steps[2].effects[0] else {
            panic!("expected a gsettings effect")
        };
        assert_eq!(
            g.cmd.display(),
            "gsettings set org.gtk.Settings.FileChooser sort-directories-first true"
        );
        assert_eq!(
            (g.previous.as_str(), g.previous_is_default),
            ("false", true)
        );
        // Only probes ran: `gsettings get` twice (the second through the memory backend, for
        // the default), and possibly dpkg-query; never `gsettings set`.
        let calls = host.calls.lock().unwrap();
        assert_eq!(
            calls
                .iter()
                .filter(|c| c.starts_with("gsettings get"))
                .count(),
            2,
            "{calls:?}"
        );
        assert!(
            calls
                .iter()
                .all(|c| c.starts_with("gsettings get") || c.starts_with("dpkg-query")),
            "{calls:?}"
        );
        assert_eq!(std::fs::read_dir(home.path()).unwrap().count(), 1);
        let h = home.path().display().to_string();
        let h = h.trim_start_matches('/');
        assert_eq!(
            plan.steps.iter().map(StepPlan::diff).collect::<String>(),
            format!(
                "--- a/{h}/.profile\n+++ b/{h}/.profile\n@@ -1 +1,2 @@\n # p\n+export GTK_OVERLAY_SCROLLING=0\n"
            )
        );
    }

    #[test]
    fn package_conditions_use_the_roots_package_database() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("var/lib/dpkg")).unwrap();
        std::fs::write(root.path().join("var/lib/dpkg/status"), "").unwrap();
        let admindir = root.path().join("var/lib/dpkg").display().to_string();
        let query = |p: &str| {
            format!("dpkg-query --admindir {admindir} -W -f '${{Status}}\\t${{Version}}' {p}")
        };
        let mut host = FakeHost::default();
        host.answer(&query("libqtgui4"), 1, "");
        host.answer(
            &query("qt5-gtk-platformtheme"),
            0,
            "install ok installed\t5.15.8\n",
        );
        host.answer(
            &query("qt6-gtk-platformtheme"),
            0,
            "deinstall ok config-files\t6.4.2\n",
        );
        let catalog = catalog();
        let recipe = catalog.get("qt-gtk").unwrap();
        let opts = Options {
            root: Some(root.path().to_path_buf()),
            scope: Some(Scope::System),
            ..Options::default()
        };
        let ctx = Context::new(recipe, &opts, &host).unwrap();
        let plan = plan(recipe, &ctx, &host).unwrap();
        assert_eq!(
            plan.steps[0].reason.as_deref(),
            Some("qt4 is not installed (libqtgui4) (--set qt4=always to apply anyway)")
        );
        let Effect::Install(install) = &plan.steps[1].effects[0] else {
            panic!("expected an install effect")
        };
        assert_eq!(
            install.cmd.display(),
            "apt-get install -y qt6-gtk-platformtheme"
        );
        assert!(
            !install.run,
            "under --root the package manager is reported, not run"
        );
    }
}
