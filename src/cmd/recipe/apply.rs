//! `hostkit apply NAME [--dry-run]`.

use std::path::PathBuf;

use crate::Outcome;
use crate::cmd::recipe::{
    Format, TargetArgs, print_commands, print_diff, print_json, session_host, source, step_lines,
};
use crate::printer::Printer;

/// `hostkit apply` options.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The recipe.
    pub name: String,
    /// Print the unified diff of every file and the command line of every other effect;
    /// change nothing (not even the state directory).
    #[arg(long)]
    pub dry_run: bool,
    /// Instead of this host, edit an old source tree with the recipe's classic fix (the rules
    /// of `hostkit patch list` made for it; `--set` then sets their parameters, e.g.
    /// `--set limit=1024`) and print the diff.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["root", "scope"])]
    pub source: Option<PathBuf>,
    /// Wait for another apply or revert of this scope to finish instead of failing.
    #[arg(long, conflicts_with = "dry_run")]
    pub wait: bool,
    #[command(flatten)]
    pub target: TargetArgs,
}

/// Applies a recipe (or shows what it would do), printing the diff it applies.
pub fn run(args: Args, printer: &Printer) -> anyhow::Result<Outcome> {
    let catalog = args.target.catalog.load()?;
    let recipe = catalog.get(&args.name)?;
    if let Some(source) = &args.source {
        if args.target.catalog.format == Format::Json {
            anyhow::bail!("--format json is not available with --source: the output is a diff");
        }
        return source::run(
            &recipe.name,
            source,
            &args.target.set,
            args.dry_run,
            printer,
        );
    }
    let opts = hostkit_recipes::Options {
        wait: args.wait,
        ..args.target.options(false)
    };
    if let Err(e) = recipe.param_values(&opts.sets) {
        if let Some(hint) = source::set_hint(&recipe.name, &opts.sets) {
            printer.note(hint);
        }
        return Err(e.into());
    }
    let action = if args.dry_run {
        hostkit_recipes::Action::DryRun
    } else {
        hostkit_recipes::Action::Apply
    };
    let host = session_host(recipe, &opts, action, printer)?;
    let (report, error) = if args.dry_run {
        (hostkit_recipes::dry_run(recipe, &opts, &host)?, None)
    } else {
        let applied = hostkit_recipes::apply(recipe, &opts, &host)?;
        (applied.report, applied.error)
    };
    if args.target.catalog.format == Format::Json {
        print_json(printer, std::slice::from_ref(&report), false)?;
    } else {
        print_diff(printer, &report.diff);
        print_commands(printer, &report);
        for line in step_lines(printer, &report, false) {
            printer.note(line);
        }
        if report
            .steps
            .iter()
            .any(|s| s.status == hostkit_recipes::StepStatus::Reported)
        {
            printer.warn("some commands were not run under --root: run them inside the image");
        }
        let suffix = if args.dry_run {
            " (dry run: nothing written)"
        } else {
            ""
        };
        printer.note(format!("{}: {}{suffix}", report.recipe, report.message));
        if !report.changed && source::has_rules(&recipe.name) {
            printer.note(format!(
                "for an old source tree, the classic fix: hostkit apply {} --source DIR [--set KEY=VALUE] (hostkit show {})",
                recipe.name, recipe.name
            ));
        }
    }
    for note in host.notes() {
        printer.note(note);
    }
    if let Some(error) = error {
        return Err(error.into());
    }
    Ok(if report.pending() {
        Outcome::Pending
    } else {
        Outcome::Success
    })
}
