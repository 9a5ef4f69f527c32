//! One module per subcommand; each handler builds one settings struct and calls a library.

pub mod docs;
pub mod patch;
pub mod recipe;
pub mod tun;

use crate::Outcome;
use crate::printer::Printer;

/// The subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// The same-host TUN tunnel: two TUN devices, policy routing, and a userspace relay.
    #[command(subcommand)]
    Tun(tun::TunCommand),
    /// Source-tree edits: apply the rules of `patches/` to a source tree, or export them as diffs.
    #[command(subcommand)]
    Patch(patch::PatchCommand),
    /// List every recipe: name, scopes (default first), summary.
    List(recipe::list::Args),
    /// Show what a recipe does, step by step, why, and what is manual.
    Show(recipe::show::Args),
    /// Check a host against a recipe (or `all`): each step ok, would change, not applicable or
    /// manual. Exit 0 all satisfied, 1 something would change, 2 error.
    Check(recipe::check::Args),
    /// Apply a recipe, printing the diff it applies (`--dry-run`: print it, change nothing).
    /// Exit 0 done (or already applied), 1 some commands only reported (under --root), 2 error.
    Apply(recipe::apply::Args),
    /// Put back every file a recipe changed, byte for byte, and undo its other effects.
    Revert(recipe::revert::Args),
    /// Print a completion script for bash, zsh or fish on stdout.
    Completions(docs::CompletionsArgs),
    /// Write the manual pages into a directory: hostkit.1 and one per subcommand
    /// (hostkit-tun-up.1, …), each with its command's exit statuses.
    Man(docs::ManArgs),
}

/// Runs one subcommand; `matches` is the whole command line as clap parsed it.
pub fn run(
    command: Command,
    matches: &clap::ArgMatches,
    printer: &Printer,
) -> anyhow::Result<Outcome> {
    match command {
        Command::Tun(cmd) => match matches.subcommand_matches("tun") {
            Some(m) => tun::run(cmd, m, printer),
            None => anyhow::bail!("internal error: no command line for `tun`"),
        },
        Command::Patch(cmd) => patch::run(cmd, printer),
        Command::List(args) => recipe::list::run(args, printer),
        Command::Show(args) => recipe::show::run(args, printer),
        Command::Check(args) => recipe::check::run(args, printer),
        Command::Apply(args) => recipe::apply::run(args, printer),
        Command::Revert(args) => recipe::revert::run(args, printer),
        Command::Completions(args) => docs::completions(args, printer),
        Command::Man(args) => docs::man(args, printer),
    }
}
