//! `hostkit apply RECIPE --source DIR`: the recipe's classic source-tree fix. Runs the rules
//! of `patches/` whose `recipe` key names RECIPE (through
//! [`hostkit_patch::RuleSet::plan_recipe`]), printing each diff and its warnings — the same
//! mechanism as `hostkit patch apply`, through the recipe's door.

use std::path::Path;

use anyhow::bail;

use crate::Outcome;
use crate::cmd::patch::{announce, apply_or_show};
use crate::printer::Printer;

/// True when some built-in rule serves `recipe`'s `--source` form.
pub fn has_rules(recipe: &str) -> bool {
    hostkit_patch::load_builtin().is_ok_and(|set| set.for_recipe(recipe).next().is_some())
}

/// When a `--set KEY=…` names no recipe parameter but a parameter of the recipe's source
/// rules, a hint to use `--source`.
pub fn set_hint(recipe: &str, sets: &[String]) -> Option<String> {
    let rules = hostkit_patch::load_builtin().ok()?;
    let pairs = hostkit_core::parse_sets(sets).ok()?;
    let key = pairs.iter().map(|(k, _)| k.as_str()).find(|key| {
        rules
            .for_recipe(recipe)
            .any(|r| r.params().iter().any(|p| p.name == *key))
    })?;
    Some(format!(
        "hint: `{key}` is a parameter of the source-tree fix: hostkit apply {recipe} --source DIR --set {key}=…"
    ))
}

/// Plans the recipe's rules on `source` and applies them (or, `dry_run`, only shows them).
pub fn run(
    recipe: &str,
    source: &Path,
    sets: &[String],
    dry_run: bool,
    printer: &Printer,
) -> anyhow::Result<Outcome> {
    let rules = hostkit_patch::load_builtin()?;
    let names: Vec<&str> = rules.for_recipe(recipe).map(|r| r.name()).collect();
    if names.is_empty() {
        let mut with: Vec<&str> = rules.iter().filter_map(|r| r.recipe()).collect();
        with.sort_unstable();
        with.dedup();
        bail!(
            "recipe {recipe} has no source-tree rules, so --source does not apply to it; recipes with rules: {}",
            with.join(", ")
        );
    }
    let plans = rules.plan_recipe(recipe, source, sets)?;
    let mut pending = 0;
    for plan in &plans {
        if announce(plan, printer) {
            pending += 1;
            apply_or_show(plan, dry_run, printer)?;
        }
    }
    let left_out: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| !plans.iter().any(|p| p.rule() == *n))
        .collect();
    if !left_out.is_empty() {
        printer.note(format!(
            "{recipe}: rule(s) {} left out: none of their files are in {}",
            left_out.join(", "),
            source.display()
        ));
    }
    if pending == 0 {
        printer.note(format!(
            "{recipe}: nothing to change in {}",
            source.display()
        ));
    }
    Ok(Outcome::Success)
}
