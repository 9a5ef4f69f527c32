//! `hostkit tun …`: the same-host TUN tunnel.

use crate::Outcome;
use crate::printer::Printer;

/// The `tun` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum TunCommand {
    /// Show the tunnel's devices, routes, rules and relay.
    Status,
}

/// Runs a `tun` subcommand.
pub fn run(cmd: TunCommand, printer: &Printer) -> anyhow::Result<Outcome> {
    match cmd {
        TunCommand::Status => {
            printer.out("not yet");
            Ok(Outcome::Success)
        }
    }
}
