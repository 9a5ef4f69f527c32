//! `hostkit revert NAME`.

use crate::Outcome;
use crate::cmd::recipe::{
    Format, TargetArgs, print_commands, print_diff, print_json, session_host,
};
use crate::printer::Printer;

/// `hostkit revert` options.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The recipe.
    pub name: String,
    /// Revert files even when someone changed them since `apply`.
    #[arg(long)]
    pub force: bool,
    /// Wait for another apply or revert of this scope to finish instead of failing.
    #[arg(long)]
    pub wait: bool,
    #[command(flatten)]
    pub target: TargetArgs,
}

/// Puts back every file as it was before the first apply and undoes the other effects.
pub fn run(args: Args, printer: &Printer) -> anyhow::Result<Outcome> {
    let catalog = args.target.catalog.load()?;
    let recipe = catalog.get(&args.name)?;
    let opts = hostkit_recipes::Options {
        wait: args.wait,
        ..args.target.options(args.force)
    };
    let host = session_host(recipe, &opts, hostkit_recipes::Action::Revert, printer)?;
    let result = hostkit_recipes::revert(recipe, &opts, &host);
    for note in host.notes() {
        printer.note(note);
    }
    let report = result?;
    if args.target.catalog.format == Format::Json {
        print_json(printer, std::slice::from_ref(&report), false)?;
    } else {
        print_diff(printer, &report.diff);
        print_commands(printer, &report);
        for step in &report.steps {
            if let Some(reason) = &step.reason {
                printer.warn(format!("{}: {reason}", step.id));
            }
        }
        printer.note(format!("{}: {}", report.recipe, report.message));
    }
    Ok(Outcome::Success)
}
