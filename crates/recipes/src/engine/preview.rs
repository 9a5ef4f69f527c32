//! What `revert` would do, changing nothing: the Ansible module's check mode for
//! `state: reverted` (Ansible trusts a module to honour check mode, and check mode must predict
//! the real run).

use super::{Checked, Restore, check_entry, step_regenerate, step_reload};
use crate::context::{Context, Options};
use crate::error::Result;
use crate::host::{Cmd, Host};
use crate::recipe::Recipe;
use crate::report::{Action, CommandReport, FileText, Report, StepReport, StepStatus};
use crate::state::{self, Entry};
use crate::steps::StepKind;
use hostkit_core::diff;

/// The report `revert` would give, without the lock and without writing anything: every
/// journal entry is checked exactly as `revert` checks it (so a refusal shows here too), each
/// file's diff runs from what is there now to its backup, and the commands revert would run
/// are listed. Steps are `would change`; `changed` is true when there is a journal.
pub fn revert_preview(recipe: &Recipe, opts: &Options, host: &dyn Host) -> Result<Report> {
    let ctx = Context::new(recipe, opts, host)?;
    let mut report = Report::new(&ctx, Action::Revert);
    let Some(journal) = state::load(&ctx)? else {
        report.message = format!(
            "nothing to revert: {} has not been applied (no journal at {})",
            recipe.name,
            state::journal_path(&ctx).display()
        );
        return Ok(report);
    };
    let checked = journal
        .entries
        .iter()
        .map(|entry| check_entry(recipe, &ctx, opts, host, entry))
        .collect::<Result<Vec<_>>>()?;
    let mut steps: Vec<StepReport> = Vec::new();
    let mut after: Vec<CommandReport> = Vec::new();
    for c in checked.into_iter().rev() {
        let done = preview_entry(recipe, &ctx, c, &mut after)?;
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
    if let Some(step) = steps.first_mut() {
        step.commands.extend(after);
    }
    steps.reverse();
    report.changed = true;
    report.message = format!(
        "would revert: {}",
        steps
            .iter()
            .map(|s| s.id.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    report.steps = steps;
    Ok(report.finish())
}

/// One journal entry, previewed; commands that revert runs once at the end go to `after`.
fn preview_entry(
    recipe: &Recipe,
    ctx: &Context,
    c: Checked<'_>,
    after: &mut Vec<CommandReport>,
) -> Result<StepReport> {
    let spec = recipe.steps.iter().find(|s| s.id == c.entry.step());
    let mut done = StepReport {
        id: c.entry.step().to_string(),
        kind: spec.map_or(StepKind::File, |s| s.spec.kind()),
        summary: spec.map(|s| s.summary.clone()).unwrap_or_default(),
        why: String::new(),
        status: StepStatus::WouldChange,
        reason: None,
        files: Vec::new(),
        commands: Vec::new(),
        diff: String::new(),
        texts: Vec::new(),
    };
    let mut once = |cmd: Cmd, run: bool| {
        let command = cmd.display();
        if !after.iter().any(|a| a.command == command) {
            after.push(CommandReport { command, run });
        }
    };
    match (c.entry, c.file) {
        (Entry::File(f) | Entry::Generated { file: f }, Some(file)) => {
            if let Restore::No = file.decision {
                return Ok(done);
            }
            let original = match &f.backup {
                Some(name) => Some(state::read_backup_unlocked(ctx, name)?),
                None => None,
            };
            let display = ctx.display(&file.path);
            if matches!(c.entry, Entry::Generated { .. }) {
                // A binary database: no diff; rebuilt on the live system.
                if ctx.live
                    && let Some(regen) = step_regenerate(recipe, ctx, f)?
                {
                    once(regen.cmd, true);
                }
            } else {
                let text = |b: &Option<Vec<u8>>| {
                    b.as_ref().map(|b| String::from_utf8_lossy(b).into_owned())
                };
                let (before, after) = (text(&file.current), text(&original));
                done.diff = diff::unified(&display, before.as_deref(), after.as_deref());
                done.texts.push(FileText {
                    path: display.clone(),
                    before,
                    after,
                });
            }
            done.files.push(display);
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
            if c.restore {
                let cmd = if *previous_is_default {
                    Cmd::new(["gsettings", "reset", schema, key])
                } else {
                    Cmd::new(["gsettings", "set", schema, key, previous])
                };
                done.commands.push(CommandReport {
                    command: cmd.display(),
                    run: ctx.live,
                });
            }
        }
        (Entry::Reload { step }, _) => {
            if let Some(cmd) = step_reload(recipe, step) {
                once(cmd, ctx.live);
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
    Ok(done)
}
