//! `check`, `apply` (and its dry run) and `revert`: plan, then act on the plan, journaling
//! every change before making it.

use std::path::{Path, PathBuf};

use crate::context::{Context, Options};
use crate::error::{Error, Result};
use crate::fsutil;
use crate::host::{Cmd, Host};
use crate::plan::{Effect, Plan, Status, StepPlan, plan};
use crate::recipe::Recipe;
use crate::report::{Action, CommandReport, FileText, Report, StepReport, StepStatus};
use crate::state::{self, Entry, FileEntry, Journal, State};
use crate::steps::{StepKind, StepSpec};
use hostkit_core::diff;

mod preview;
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
/// `crate::state`); commands come from the recipe, never from the journal.
pub fn revert(recipe: &Recipe, opts: &Options, host: &dyn Host) -> Result<Report> {
    let ctx = Context::new(recipe, opts, host)?;
    let mut report = Report::new(&ctx, Action::Revert);
    if state::load(&ctx)?.is_none() {
        report.message = format!(
            "nothing to revert: {} has not been applied (no journal at {})",
            recipe.name,
            state::journal_path(&ctx).display()
        );
        return Ok(report);
    }
    let state = State::open(&ctx, opts.wait)?;
    let journal = state::load(&ctx)?.ok_or_else(|| Error::Journal {
        path: state::journal_path(&ctx),
        reason: "removed while waiting for the lock".into(),
    })?;
    // Check every entry first, so a refusal changes nothing.
    let checked = journal
        .entries
        .iter()
        .map(|entry| check_entry(recipe, &ctx, opts, host, entry))
        .collect::<Result<Vec<_>>>()?;
    let mut steps: Vec<StepReport> = Vec::new();
    let mut rebuild: Vec<(Cmd, PathBuf)> = Vec::new();
    let mut reloads: Vec<Cmd> = Vec::new();
    for c in checked.into_iter().rev() {
        let mut done = StepReport {
            id: c.entry.step().to_string(),
            kind: recipe
                .steps
                .iter()
                .find(|s| s.id == c.entry.step())
                .map_or(StepKind::File, |s| s.spec.kind()),
            summary: String::new(),
            why: String::new(),
            status: StepStatus::Reverted,
            reason: None,
            files: Vec::new(),
            commands: Vec::new(),
            diff: String::new(),
            texts: Vec::new(),
        };
        match (c.entry, c.file) {
            (Entry::File(f) | Entry::Generated { file: f }, Some(file)) => {
                let generated = matches!(c.entry, Entry::Generated { .. });
                restore_file(&ctx, &state, f, &file, &mut done)?;
                if generated {
                    // A binary database: no diff.
                    done.diff.clear();
                    done.texts.clear();
                }
                if generated
                    && ctx.live
                    && let Some(regen) = step_regenerate(recipe, &ctx, f)?
                    && !rebuild.iter().any(|(cmd, _)| *cmd == regen.cmd)
                {
                    // On the live system, rebuild (and notify) once every file is restored,
                    // unless the databases' directory is gone with them.
                    let dir = regen
                        .output
                        .parent()
                        .map(Path::to_path_buf)
                        .unwrap_or_default();
                    rebuild.push((regen.cmd, dir));
                }
            }
            (
                Entry::Gsettings {
                    schema,
                    key,
                    previous,
                    previous_is_default,
                    ..
                },
                _,
            ) => {
                let cmd = if *previous_is_default {
                    Cmd::new(["gsettings", "reset", schema, key])
                } else {
                    Cmd::new(["gsettings", "set", schema, key, previous])
                };
                if c.restore {
                    if ctx.live {
                        run(host, &cmd)?;
                    }
                    done.commands.push(CommandReport {
                        command: cmd.display(),
                        run: ctx.live,
                    });
                }
            }
            (Entry::Reload { step }, _) => {
                // Run once every file is restored (below); under --root only reported.
                if let Some(cmd) = step_reload(recipe, step)
                    && !reloads.contains(&cmd)
                {
                    reloads.push(cmd);
                }
            }
            (
                Entry::Packages {
                    manager, packages, ..
                },
                _,
            ) => {
                done.reason = Some(format!(
                    "packages installed by apply are left installed ({}: {})",
                    manager.name(),
                    packages.join(", ")
                ));
            }
            (Entry::File(_) | Entry::Generated { .. }, None) => {}
        }
        match steps.iter_mut().find(|s| s.id == done.id) {
            Some(s) => {
                s.files.extend(done.files);
                s.commands.extend(done.commands);
                s.diff.push_str(&done.diff);
                s.texts.extend(done.texts);
                s.reason = s.reason.take().or(done.reason);
            }
            None => steps.push(done),
        }
    }
    let mut after: Vec<CommandReport> = Vec::new();
    for (cmd, dir) in &rebuild {
        if dir.is_dir() {
            run(host, cmd)?;
            after.push(CommandReport {
                command: cmd.display(),
                run: true,
            });
        }
    }
    for cmd in &reloads {
        if ctx.live {
            run(host, cmd)?;
        }
        after.push(CommandReport {
            command: cmd.display(),
            run: ctx.live,
        });
    }
    if let Some(step) = steps.first_mut() {
        step.commands.extend(after);
    }
    host.finish_revert()?;
    state.finish()?;
    steps.reverse();
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

/// Puts one file back (its backup, or removes it) and removes the directories apply created
/// for it, when they are empty.
fn restore_file(
    ctx: &Context,
    state: &State,
    f: &FileEntry,
    file: &CheckedFile,
    done: &mut StepReport,
) -> Result<()> {
    if let Restore::No = file.decision {
        return Ok(());
    }
    let original = match &f.backup {
        Some(name) => Some(state.read_backup(name)?),
        None => None,
    };
    // Mode and owner are the file's own at apply time, from state only this user could
    // have written (checked when the journal was loaded).
    let mode = f.mode & 0o7777;
    match &original {
        Some(bytes) => fsutil::write_atomic(&file.path, bytes, mode, f.owner)?,
        None => fsutil::remove(&file.path)?,
    }
    let dirs = f
        .created_dirs
        .iter()
        .map(|d| ctx.from_journal(d))
        .collect::<Result<Vec<_>>>()?;
    fsutil::remove_empty_dirs(&dirs, state.dir_owners());
    let display = ctx.display(&file.path);
    let text = |b: &Option<Vec<u8>>| b.as_ref().map(|b| String::from_utf8_lossy(b).into_owned());
    let (before, after) = (text(&file.current), text(&original));
    done.diff = diff::unified(&display, before.as_deref(), after.as_deref());
    done.texts.push(FileText {
        path: display.clone(),
        before,
        after,
    });
    done.files.push(display);
    Ok(())
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
    use crate::host::fake::FakeHost;
    use crate::recipe::Catalog;

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
}
