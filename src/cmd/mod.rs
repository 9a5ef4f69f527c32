//! One module per subcommand; each handler builds one settings struct and calls a library.

pub mod patch;
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
}

/// Runs one subcommand.
pub fn run(command: Command, printer: &Printer) -> anyhow::Result<Outcome> {
    match command {
        Command::Tun(cmd) => tun::run(cmd, printer),
        Command::Patch(cmd) => patch::run(cmd, printer),
    }
}
