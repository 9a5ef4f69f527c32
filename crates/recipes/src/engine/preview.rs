//! What `revert` would do, changing nothing: the Ansible module's check mode for
//! `state: reverted` (Ansible trusts a module to honour check mode, and check mode must predict
//! the real run).

use super::{check_entry, revert};
use crate::context::{Context, Options};
use crate::error::Result;
use crate::host::Host;
use crate::recipe::Recipe;
use crate::report::{Action, Report, StepStatus};
use crate::state;

/// The report `revert` would give, without the lock and without writing anything: every
/// journal entry is checked exactly as `revert` checks it (so a refusal shows here too), and
/// the same plan `revert` carries out is gone through without acting (see
/// `revert::Look`): each file's diff runs from what is there now to its backup, and the
/// commands revert would run are listed, in its order. Steps are `would change`; `changed` is
/// true when there is a journal.
pub fn revert_preview(recipe: &Recipe, opts: &Options, host: &dyn Host) -> Result<Report> {
    let ctx = Context::new(recipe, opts, host)?;
    preview_in(recipe, &ctx, opts, host)
}

/// [`revert_preview`] in a given context.
pub(super) fn preview_in(
    recipe: &Recipe,
    ctx: &Context,
    opts: &Options,
    host: &dyn Host,
) -> Result<Report> {
    let mut report = Report::new(ctx, Action::Revert);
    let Some(journal) = state::load(ctx)? else {
        report.message = format!(
            "nothing to revert: {} has not been applied (no journal at {})",
            recipe.name,
            state::journal_path(ctx).display()
        );
        return Ok(report);
    };
    let checked = journal
        .entries
        .iter()
        .map(|entry| check_entry(recipe, ctx, opts, host, entry))
        .collect::<Result<Vec<_>>>()?;
    let plan = revert::plan(recipe, ctx, checked)?;
    let mut look = revert::Look::new(ctx);
    let mut steps = revert::carry_out(ctx, plan, &mut look, StepStatus::WouldChange)?;
    for step in &mut steps {
        if let Some(spec) = recipe.steps.iter().find(|s| s.id == step.id) {
            step.summary = spec.summary.clone();
        }
    }
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
