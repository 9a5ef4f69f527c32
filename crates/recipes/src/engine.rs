//! `check`, `apply` (and its dry run) and `revert`: plan, then act on the plan, journaling
//! every change before making it.

use std::path::PathBuf;

use crate::context::{Context, Options};
use crate::error::{Error, Result};
use crate::fsutil;
use crate::host::{Cmd, Host};
use crate::plan::{Effect, Plan, Status, StepPlan, plan};
use crate::recipe::Recipe;
use crate::report::{Action, CommandReport, FileText, Report, StepReport, StepStatus};
use crate::state::{self, Entry, FileEntry, Journal, State};
use crate::steps::{StepKind, StepSpec};

mod preview;
mod revert;
pub use preview::revert_preview;

fn step_report(sp: &StepPlan, status: StepStatus) -> StepReport {
    StepReport {
        id: sp.id.clone(),
        kind: sp.kind,
        summary: sp.summary.clone(),
        why: sp.why.clone(),
        status,
        reason: sp.reason.clone(),
        files: sp
            .effects
            .iter()
            .filter_map(|e| match e {
                Effect::File(f) => Some(f.display.clone()),
                Effect::Regenerate(r) => Some(r.display.clone()),
                _ => None,
            })
            .collect(),
        commands: sp
            .effects
            .iter()
            .filter_map(|e| {
                e.command().map(|c| CommandReport {
                    command: c.display(),
                    run: e.runs(),
                })
            })
            .collect(),
        diff: sp.diff(),
        texts: sp
            .effects
            .iter()
            .filter_map(|e| match e {
                Effect::File(f) => Some(FileText {
                    path: f.display.clone(),
                    before: f.before.clone(),
                    after: f.after.clone(),
                }),
                _ => None,
            })
            .collect(),
    }
}

fn plan_report(ctx: &Context, plan: &Plan, action: Action) -> Report {
    let mut report = Report::new(ctx, action);
    report.steps = plan
        .steps
        .iter()
        .map(|s| step_report(s, s.status))
        .collect();
    let n = plan
        .steps
        .iter()
        .filter(|s| s.status == Status::WouldChange)
        .count();
    let manual = plan
        .steps
        .iter()
        .filter(|s| s.status == Status::Manual)
        .count();
    report.changed = n > 0;
    report.message = match n {
        0 => "nothing to change".to_string(),
        1 => "1 step would change".to_string(),
        n => format!("{n} steps would change"),
    };
    match manual {
        0 => {}
        1 => report.message.push_str("; 1 step needs a person (manual)"),
        m => report
            .message
            .push_str(&format!("; {m} steps need a person (manual)")),
    }
    report.finish()
}

/// `hostkit check`: the status of every step; changes nothing.
pub fn check(recipe: &Recipe, opts: &Options, host: &dyn Host) -> Result<Report> {
    planned(recipe, opts, host, Action::Check)
}

/// `hostkit apply --dry-run`: the diff and the commands; changes nothing, not even the state
/// directory.
pub fn dry_run(recipe: &Recipe, opts: &Options, host: &dyn Host) -> Result<Report> {
    planned(recipe, opts, host, Action::DryRun)
}

fn planned(recipe: &Recipe, opts: &Options, host: &dyn Host, action: Action) -> Result<Report> {
    let ctx = Context::new(recipe, opts, host)?;
    let plan = plan(recipe, &ctx, host)?;
    Ok(plan_report(&ctx, &plan, action))
}

/// The result of an apply: the report, and the error that stopped it half-way, if any (the
/// report then says which steps were done).
#[derive(Debug)]
pub struct Applied {
    /// What was done.
    pub report: Report,
    /// What stopped it.
    pub error: Option<Error>,
}

/// `hostkit apply`: makes the changes, journaling each one first.
pub fn apply(recipe: &Recipe, opts: &Options, host: &dyn Host) -> Result<Applied> {
    let ctx = Context::new(recipe, opts, host)?;
    let first = plan(recipe, &ctx, host)?;
    let runnable = |p: &Plan| p.steps.iter().flat_map(|s| &s.effects).any(Effect::runs);
    if !runnable(&first) {
        return Ok(Applied {
            report: applied_report(&ctx, &first, &[], None),
            error: None,
        });
    }
    let state = State::open(&ctx, opts.wait)?;
    // Plan again under the lock: another apply may have finished in between.
    let plan = plan(recipe, &ctx, host)?;
    let mut journal = match state::load(&ctx)? {
        Some(j) => j,
        None => state.new_journal(&ctx),
    };
    let fail_after = fail_after_step(host);
    let mut done: Vec<String> = Vec::new();
    let mut failure = None;
    for sp in plan
        .steps
        .iter()
        .filter(|s| s.status == Status::WouldChange)
    {
        if fail_after == Some(done.len()) {
            failure = Some((sp.id.clone(), Error::Injected(done.len())));
            break;
        }
        if let Err(e) = apply_step(sp, &ctx, &state, &mut journal, host) {
            failure = Some((sp.id.clone(), e));
            break;
        }
        if sp.effects.iter().any(Effect::runs) {
            done.push(sp.id.clone());
        }
    }
    let report = applied_report(
        &ctx,
        &plan,
        &done,
        failure.as_ref().map(|(id, e)| (id.as_str(), e)),
    );
    let error = failure.map(|(step, source)| Error::StepFailed {
        recipe: recipe.name.clone(),
        step,
        done: if done.is_empty() {
            "none".into()
        } else {
            done.join(", ")
        },
        source: Box::new(source),
    });
    Ok(Applied { report, error })
}

/// `HOSTKIT_FAIL_AFTER_STEP=N`: fail before the step after the N-th changed one. Test builds
/// only: release builds ignore it.
fn fail_after_step(host: &dyn Host) -> Option<usize> {
    if cfg!(debug_assertions) {
        host.env("HOSTKIT_FAIL_AFTER_STEP")
            .and_then(|v| v.parse().ok())
    } else {
        None
    }
}

fn applied_report(
    ctx: &Context,
    plan: &Plan,
    done: &[String],
    failed: Option<(&str, &Error)>,
) -> Report {
    let mut report = Report::new(ctx, Action::Apply);
    let mut after_failure = false;
    for sp in &plan.steps {
        let mut sr = step_report(sp, sp.status);
        if sp.status == Status::WouldChange {
            if done.contains(&sp.id) {
                sr.status = StepStatus::Changed;
                // Commands that only reported stay visible as such.
                if sp.effects.iter().any(|e| !e.runs()) {
                    sr.reason = Some(
                        "some commands are not run under --root: run them in the image".into(),
                    );
                }
            } else if failed.is_some_and(|(id, _)| id == sp.id) {
                sr.status = StepStatus::Failed;
                sr.reason = failed.map(|(_, e)| e.to_string());
                sr.diff.clear();
                sr.texts.clear();
                after_failure = true;
            } else if after_failure {
                sr.status = StepStatus::NotDone;
                sr.diff.clear();
                sr.texts.clear();
            } else {
                sr.status = StepStatus::Reported;
                sr.reason = Some("not run under --root: run the command inside the image".into());
            }
        }
        report.steps.push(sr);
    }
    report.changed = !done.is_empty();
    let changes_host = plan
        .steps
        .iter()
        .any(|s| s.status == Status::Ok && !matches!(s.kind, StepKind::Probe | StepKind::Manual));
    report.message = if plan.satisfied() && !changes_host {
        "nothing to do on this host: no step here needs a change (the others only report)"
            .to_string()
    } else if plan.satisfied() {
        "already applied, nothing to change".to_string()
    } else if done.is_empty() {
        "nothing changed".to_string()
    } else {
        format!("changed: {}", done.join(", "))
    };
    report.finish()
}

fn run(host: &dyn Host, cmd: &Cmd) -> Result<()> {
    cmd.check(host.run(cmd)?).map(|_| ())
}

/// Journals then makes one step's changes.
fn apply_step(
    sp: &StepPlan,
    ctx: &Context,
    state: &State,
    journal: &mut Journal,
    host: &dyn Host,
) -> Result<()> {
    for effect in &sp.effects {
        match effect {
            Effect::File(f) => {
                let after_sha = f.after.as_ref().map(|a| fsutil::sha256(a.as_bytes()));
                let rel = ctx.relative(&f.path)?;
                if let Some(entry) = journal.file_mut(&rel) {
                    entry.after_sha = after_sha;
                } else {
                    let mut entry = FileEntry::new(&sp.id, rel, f.mode, f.owner);
                    if let Some(b) = &f.before {
                        entry.backup = Some(state.backup(journal, b.as_bytes())?);
                        entry.before_sha = Some(fsutil::sha256(b.as_bytes()));
                    }
                    let created_dirs = match f.after {
                        Some(_) => fsutil::create_parents(&f.path, ctx.dir_mode, ctx.owner)?,
                        None => Vec::new(),
                    };
                    state.record_dirs(&created_dirs)?;
                    entry.created_dirs = created_dirs
                        .iter()
                        .map(|d| ctx.relative(d))
                        .collect::<Result<_>>()?;
                    entry.after_sha = after_sha;
                    journal.entries.push(Entry::File(entry));
                }
                state.save(journal)?;
                match &f.after {
                    Some(text) => fsutil::write_atomic(&f.path, text.as_bytes(), f.mode, f.owner)?,
                    None => fsutil::remove(&f.path)?,
                }
            }
            Effect::Gsettings(g) => {
                let known = journal.entries.iter().any(
                    |e| matches!(e, Entry::Gsettings { schema, key, .. } if *schema == g.schema && *key == g.key),
                );
                if !known {
                    journal.entries.push(Entry::Gsettings {
                        step: sp.id.clone(),
                        schema: g.schema.clone(),
                        key: g.key.clone(),
                        value: g.value.clone(),
                        previous: g.previous.clone(),
                        previous_is_default: g.previous_is_default,
                    });
                    state.save(journal)?;
                }
                run(host, &g.cmd)?;
            }
            Effect::Regenerate(r) => {
                let current = fsutil::read(&r.output)?;
                let rel = ctx.relative(&r.output)?;
                if journal.file_mut(&rel).is_none() {
                    let mut entry = FileEntry::new(
                        &sp.id,
                        rel.clone(),
                        current.as_ref().map_or(0o644, |c| c.mode),
                        current.as_ref().map_or(ctx.owner, |c| (c.uid, c.gid)),
                    );
                    if let Some(c) = &current {
                        entry.backup = Some(state.backup(journal, &c.bytes)?);
                        entry.before_sha = Some(fsutil::sha256(&c.bytes));
                    }
                    journal.entries.push(Entry::Generated { file: entry });
                    state.save(journal)?;
                }
                run(host, &r.cmd)?;
                let after = fsutil::read(&r.output)?.map(|e| fsutil::sha256(&e.bytes));
                if let Some(entry) = journal.file_mut(&rel) {
                    entry.after_sha = after;
                }
                state.save(journal)?;
            }
            Effect::Reload(r) => {
                let known = journal
                    .entries
                    .iter()
                    .any(|e| matches!(e, Entry::Reload { step } if *step == sp.id));
                if !known {
                    journal.entries.push(Entry::Reload {
                        step: sp.id.clone(),
                    });
                    state.save(journal)?;
                }
                if r.run {
                    run(host, &r.cmd)?;
                }
            }
            Effect::Install(i) => {
                if !i.run {
                    continue;
                }
                run(host, &i.cmd)?;
                journal.entries.push(Entry::Packages {
                    step: sp.id.clone(),
                    manager: i.manager,
                    packages: i.packages.clone(),
                });
                state.save(journal)?;
            }
        }
    }
    Ok(())
}

/// What revert will do with one file.
enum Restore {
    /// Put the backup back (or remove the file when there is none).
    Yes,
    /// Already as before.
    No,
}

/// One journal entry, checked: for files, where it is now (resolved under this root) and what
/// to do with it.
struct Checked<'j> {
    entry: &'j Entry,
    file: Option<CheckedFile>,
    /// For a setting: false when it already holds the value from before apply (a write that
    /// never took effect) — nothing to put back.
    restore: bool,
}

struct CheckedFile {
    path: PathBuf,
    decision: Restore,
    current: Option<Vec<u8>>,
}

/// `hostkit revert`: puts every changed file back as it was before the first apply, removes
/// files apply created, restores GSettings values; refuses to overwrite a file changed since
/// apply unless `opts.force`. Everything read back from the journal is checked first (see
/// `crate::state`); commands come from the recipe, never from the journal. What it does is
/// one plan (`revert::plan`) carried out against the host; [`revert_preview`] goes through
/// the same plan without acting.
pub fn revert(recipe: &Recipe, opts: &Options, host: &dyn Host) -> Result<Report> {
    let ctx = Context::new(recipe, opts, host)?;
    revert_in(recipe, &ctx, opts, host)
}

/// [`revert`] in a given context.
fn revert_in(recipe: &Recipe, ctx: &Context, opts: &Options, host: &dyn Host) -> Result<Report> {
    let mut report = Report::new(ctx, Action::Revert);
    if state::load(ctx)?.is_none() {
        report.message = format!(
            "nothing to revert: {} has not been applied (no journal at {})",
            recipe.name,
            state::journal_path(ctx).display()
        );
        return Ok(report);
    }
    let state = State::open(ctx, opts.wait)?;
    let journal = state::load(ctx)?.ok_or_else(|| Error::Journal {
        path: state::journal_path(ctx),
        reason: "removed while waiting for the lock".into(),
    })?;
    // Check every entry first, so a refusal changes nothing.
    let checked = journal
        .entries
        .iter()
        .map(|entry| check_entry(recipe, ctx, opts, host, entry))
        .collect::<Result<Vec<_>>>()?;
    let plan = revert::plan(recipe, ctx, checked)?;
    let mut act = revert::Act {
        state: &state,
        host,
    };
    let steps = revert::carry_out(ctx, plan, &mut act, StepStatus::Reverted)?;
    host.finish_revert()?;
    state.finish()?;
    report.changed = true;
    report.message = format!(
        "reverted: {}",
        steps
            .iter()
            .map(|s| s.id.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    report.steps = steps;
    Ok(report.finish())
}

/// Checks one journal entry against the host before anything is changed: a file must resolve
/// under this root (inside the home in user scope) and be as apply left it (or as before, or
/// `--force`); a GSettings key must belong to the recipe's step and hold apply's value.
fn check_entry<'j>(
    recipe: &Recipe,
    ctx: &Context,
    opts: &Options,
    host: &dyn Host,
    entry: &'j Entry,
) -> Result<Checked<'j>> {
    match entry {
        Entry::Gsettings {
            step,
            schema,
            key,
            value,
            previous,
            ..
        } => {
            let declared = recipe.steps.iter().any(|s| {
                s.id == *step
                    && matches!(&s.spec, StepSpec::Gsettings(g) if g.schema == *schema && g.key == *key)
            });
            if !declared {
                return Err(Error::Journal {
                    path: state::journal_path(ctx),
                    reason: format!(
                        "gsettings {schema} {key} is not set by step `{step}` of recipe {}; refusing to change it",
                        recipe.name
                    ),
                });
            }
            let mut restore = true;
            if ctx.live && !opts.force {
                let get = Cmd::new(["gsettings", "get", schema, key]);
                let current = get.check(host.run(&get)?)?.stdout.trim().to_string();
                if current == *previous {
                    // Apply's write never took effect (it failed half-way): as before.
                    restore = false;
                } else if current != *value {
                    return Err(Error::SettingChangedSince {
                        setting: format!("{schema} {key}"),
                        value: current,
                        recipe: recipe.name.clone(),
                    });
                }
            }
            Ok(Checked {
                entry,
                file: None,
                restore,
            })
        }
        Entry::File(f) | Entry::Generated { file: f } => {
            let path = ctx.from_journal(&f.path)?;
            let current = fsutil::read(&path)?;
            let sha = current.as_ref().map(|c| fsutil::sha256(&c.bytes));
            let decision = if sha == f.before_sha {
                Restore::No
            } else if sha == f.after_sha || opts.force {
                Restore::Yes
            } else {
                return Err(Error::ChangedSince {
                    path,
                    recipe: recipe.name.clone(),
                });
            };
            Ok(Checked {
                entry,
                restore: true,
                file: Some(CheckedFile {
                    path,
                    decision,
                    current: current.map(|c| c.bytes),
                }),
            })
        }
        Entry::Reload { .. } | Entry::Packages { .. } => Ok(Checked {
            entry,
            file: None,
            restore: true,
        }),
    }
}

/// The command that rebuilds a generated file, from the recipe's step (never the journal).
fn step_regenerate(
    recipe: &Recipe,
    ctx: &Context,
    f: &FileEntry,
) -> Result<Option<crate::plan::Regenerate>> {
    let is_gsettings = recipe
        .steps
        .iter()
        .any(|s| s.id == f.step && matches!(s.spec, StepSpec::Gsettings(_)));
    if !is_gsettings {
        return Ok(None);
    }
    crate::steps::gsettings::regenerate(ctx).map(Some)
}

/// A step's reload command, from the recipe (never the journal).
fn step_reload(recipe: &Recipe, step: &str) -> Option<Cmd> {
    recipe.steps.iter().find_map(|s| match &s.spec {
        StepSpec::File(file) if s.id == step => file
            .reload
            .as_ref()
            .map(|argv| Cmd::new(argv.iter().cloned())),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::Output;
    use crate::host::fake::FakeHost;
    use crate::recipe::Catalog;
    use std::path::Path;
    use std::sync::Mutex;

    const GET: &str = "gsettings get org.gtk.Settings.FileChooser sort-directories-first";

    /// A live user-scope run of gtk-legacy's gsettings step alone, against a fake `gsettings`.
    fn setup() -> (tempfile::TempDir, FakeHost, Options) {
        let home = tempfile::tempdir().unwrap();
        let mut host = FakeHost::default();
        host.env
            .insert("HOME".into(), home.path().display().to_string());
        host.answer(GET, 0, "false\n");
        host.answer(
            "gsettings set org.gtk.Settings.FileChooser sort-directories-first true",
            0,
            "",
        );
        host.answer(
            "gsettings reset org.gtk.Settings.FileChooser sort-directories-first",
            0,
            "",
        );
        let opts = Options {
            sets: vec!["settings_ini=never".into()],
            ..Options::default()
        };
        (home, host, opts)
    }

    #[test]
    fn revert_refuses_a_setting_changed_to_a_third_value_and_leaves_one_set_back() {
        let catalog = Catalog::load(&[] as &[&Path]).unwrap();
        let recipe = catalog.get("gtk-legacy").unwrap();
        let (_home, mut host, opts) = setup();
        let applied = apply(recipe, &opts, &host).unwrap();
        assert!(applied.error.is_none(), "{:?}", applied.error);
        // Someone changed the key to a value that is neither apply's nor the one before.
        host.answer(GET, 0, "'elsewhere'\n");
        let err = revert(recipe, &opts, &host).unwrap_err();
        assert!(
            matches!(&err, Error::SettingChangedSince { value, .. } if value == "'elsewhere'"),
            "{err}"
        );
        // Set back to the value from before apply: as before, nothing to reset.
        host.answer(GET, 0, "false\n");
        host.calls.lock().unwrap().clear();
        revert(recipe, &opts, &host).unwrap();
        assert!(
            !host
                .calls
                .lock()
                .unwrap()
                .iter()
                .any(|c| c.starts_with("gsettings reset")),
            "{:?}",
            host.calls.lock().unwrap()
        );
    }

    /// A recipe with a system GSettings key (a dconf database rebuilt) and a file with a reload
    /// command, journaled in that order.
    const DB_AND_RELOAD: &str = r#"
summary = "a database and a reload"
description = "test"
scopes = ["system"]

[[steps]]
id = "key"
kind = "gsettings"
summary = "a key"
why = "test"
schema = "org.example.Test"
key = "flag"
value = "true"
dconf_path = "/org/example/test/"

[[steps]]
id = "rule"
kind = "file"
summary = "a rule"
why = "test"
path = "/etc/udev/rules.d/99-test.rules"
content = "RULE\n"
reload = ["udevadm", "control", "--reload"]
"#;

    /// A stand-in for every command: answers success, records each call, and writes the
    /// database `dconf compile DB DIR` (or `dconf update`, under `root`) would.
    struct StandIn {
        root: PathBuf,
        calls: Mutex<Vec<String>>,
    }

    impl Host for StandIn {
        fn run(&self, cmd: &Cmd) -> Result<Output> {
            self.calls.lock().unwrap().push(cmd.display());
            let argv: Vec<&str> = cmd.argv.iter().map(String::as_str).collect();
            let db = match argv[..] {
                ["dconf", "compile", db, _] => Some(PathBuf::from(db)),
                ["dconf", "update"] => Some(self.root.join("etc/dconf/db/local")),
                _ => None,
            };
            if let Some(db) = db {
                std::fs::write(db, b"GVariant database").unwrap();
            }
            Ok(Output {
                code: Some(0),
                stdout: String::new(),
                stderr: String::new(),
            })
        }

        fn env(&self, name: &str) -> Option<String> {
            (name == "HOME").then(|| "/home/u".to_string())
        }

        fn ids(&self) -> (u32, u32) {
            (
                nix::unistd::geteuid().as_raw(),
                nix::unistd::getegid().as_raw(),
            )
        }
    }

    /// What a revert report lists, in order: the step ids, the files, the commands (with
    /// whether each runs).
    type Listed = (Vec<String>, Vec<String>, Vec<(String, bool)>);

    fn listed(report: &Report) -> Listed {
        let steps = report.steps.iter().map(|s| s.id.clone()).collect();
        let files = report.steps.iter().flat_map(|s| s.files.clone()).collect();
        let commands = report
            .steps
            .iter()
            .flat_map(|s| &s.commands)
            .map(|c| (c.command.clone(), c.run))
            .collect();
        (steps, files, commands)
    }

    /// Applies `recipe` in a temporary root (offline, as `--root` does), then previews and
    /// reverts it there as on the live system (`dconf update`, reloads run) against the stand-in:
    /// returns the preview's listing, the revert's, and the commands revert ran.
    fn preview_and_revert(
        recipe: &Recipe,
        opts: &Options,
        root: &Path,
    ) -> (Listed, Listed, Vec<String>) {
        let host = StandIn {
            root: root.to_path_buf(),
            calls: Mutex::new(Vec::new()),
        };
        let applied = apply(recipe, opts, &host).unwrap();
        assert!(applied.error.is_none(), "{:?}", applied.error);
        let mut ctx = Context::new(recipe, opts, &host).unwrap();
        // The live system's revert, inside the temporary root: paths still resolve under it.
        ctx.live = true;
        let preview = preview::preview_in(recipe, &ctx, opts, &host).unwrap();
        host.calls.lock().unwrap().clear();
        let reverted = revert_in(recipe, &ctx, opts, &host).unwrap();
        let ran = host.calls.lock().unwrap().clone();
        (listed(&preview), listed(&reverted), ran)
    }

    fn db_and_reload() -> (tempfile::TempDir, Catalog) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("db-and-reload.toml"), DB_AND_RELOAD).unwrap();
        let catalog = Catalog::load(&[dir.path()]).unwrap();
        (dir, catalog)
    }

    fn in_root(root: &Path) -> Options {
        Options {
            root: Some(root.to_path_buf()),
            ..Options::default()
        }
    }

    /// Apply created /etc/dconf/db; revert removes it with the files, so the real revert skips
    /// the rebuild (it would leave a database that was not there): the preview must not list it.
    #[test]
    fn preview_leaves_out_the_rebuild_revert_skips_when_the_database_directory_goes() {
        let (_recipes, catalog) = db_and_reload();
        let recipe = catalog.get("db-and-reload").unwrap();
        let root = tempfile::tempdir().unwrap();
        let root_path = std::fs::canonicalize(root.path()).unwrap();
        let (preview, reverted, ran) = preview_and_revert(recipe, &in_root(&root_path), &root_path);
        assert!(!root_path.join("etc/dconf/db").exists());
        assert!(!ran.iter().any(|c| c.starts_with("dconf")), "{ran:?}");
        assert!(
            !preview.2.iter().any(|(c, _)| c.starts_with("dconf")),
            "the preview lists a rebuild revert does not run: {:?}",
            preview.2
        );
        assert_eq!(preview, reverted);
    }

    /// With /etc/dconf/db there before apply, revert rebuilds the database, then reloads: the
    /// preview lists the same commands in the same order.
    #[test]
    fn preview_lists_the_final_commands_in_the_order_revert_runs_them() {
        let (_recipes, catalog) = db_and_reload();
        let recipe = catalog.get("db-and-reload").unwrap();
        let root = tempfile::tempdir().unwrap();
        let root_path = std::fs::canonicalize(root.path()).unwrap();
        std::fs::create_dir_all(root_path.join("etc/dconf/db")).unwrap();
        let (preview, reverted, ran) = preview_and_revert(recipe, &in_root(&root_path), &root_path);
        assert_eq!(ran, ["dconf update", "udevadm control --reload"]);
        let commands: Vec<&str> = preview.2.iter().map(|(c, _)| c.as_str()).collect();
        assert_eq!(
            commands,
            ["dconf update", "udevadm control --reload"],
            "the preview orders the final commands differently from revert"
        );
        assert_eq!(preview, reverted);
    }

    /// The database removed by hand after apply (as before apply: nothing to put back): revert
    /// still rebuilds it while its directory is there, and the preview says so.
    #[test]
    fn preview_lists_the_rebuild_of_a_database_already_as_before() {
        let (_recipes, catalog) = db_and_reload();
        let recipe = catalog.get("db-and-reload").unwrap();
        let root = tempfile::tempdir().unwrap();
        let root_path = std::fs::canonicalize(root.path()).unwrap();
        std::fs::create_dir_all(root_path.join("etc/dconf/db")).unwrap();
        let opts = in_root(&root_path);
        let host = StandIn {
            root: root_path.clone(),
            calls: Mutex::new(Vec::new()),
        };
        assert!(apply(recipe, &opts, &host).unwrap().error.is_none());
        std::fs::remove_file(root_path.join("etc/dconf/db/local")).unwrap();
        let mut ctx = Context::new(recipe, &opts, &host).unwrap();
        ctx.live = true;
        let preview = listed(&preview::preview_in(recipe, &ctx, &opts, &host).unwrap());
        host.calls.lock().unwrap().clear();
        let reverted = listed(&revert_in(recipe, &ctx, &opts, &host).unwrap());
        assert_eq!(
            *host.calls.lock().unwrap(),
            ["dconf update", "udevadm control --reload"]
        );
        assert_eq!(preview, reverted);
    }

    /// Every recipe that applies in a temporary root, in each of its scopes: the preview lists
    /// exactly what revert then does, in order, and the commands it says run are the ones run.
    #[test]
    fn preview_lists_what_revert_does_for_every_recipe() {
        let (_recipes, catalog) = db_and_reload();
        let mut tried = 0;
        for recipe in catalog.recipes() {
            for scope in recipe.scopes.clone() {
                for with_db_dir in [false, true] {
                    let root = tempfile::tempdir().unwrap();
                    let root_path = std::fs::canonicalize(root.path()).unwrap();
                    std::fs::create_dir_all(root_path.join("home/u")).unwrap();
                    if with_db_dir {
                        std::fs::create_dir_all(root_path.join("etc/dconf/db")).unwrap();
                    }
                    let opts = Options {
                        scope: Some(scope),
                        ..in_root(&root_path)
                    };
                    let (preview, reverted, ran) = preview_and_revert(recipe, &opts, &root_path);
                    let what = format!("{} in {} scope", recipe.name, scope.as_str());
                    assert_eq!(preview, reverted, "{what}");
                    let said: Vec<String> = preview
                        .2
                        .iter()
                        .filter(|(_, run)| *run)
                        .map(|(c, _)| c.clone())
                        .collect();
                    // `gsettings get` is revert's check before any change, not an action.
                    let acted: Vec<String> = ran
                        .into_iter()
                        .filter(|c| !c.starts_with("gsettings get"))
                        .collect();
                    assert_eq!(said, acted, "{what}");
                    tried += 1;
                }
            }
        }
        assert!(tried >= 10, "{tried}");
    }
}
