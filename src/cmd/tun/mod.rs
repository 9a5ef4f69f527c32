//! `hostkit tun …`: the same-host TUN tunnel.

mod demo;
mod down;
mod status;

use crate::Outcome;
use crate::printer::Printer;

/// The `tun` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum TunCommand {
    /// Create the two TUN (or, --mode tap, TAP) devices, rewrite routing so traffic between
    /// their addresses crosses them, and relay packets between them in the foreground until SIGINT/SIGTERM, then undo
    /// everything.
    Up(Box<crate::tunnel::UpArgs>),
    /// Remove whatever an `up` that was killed (SIGKILL) or crashed left behind: rules, table
    /// routes, devices, sysctls; stop a running relay. Idempotent.
    Down(down::DownArgs),
    /// Show the tunnel's devices, addresses, rules, table routes, whether the local routes are
    /// moved, and the relay with its counters.
    Status(status::StatusArgs),
    /// A guided first run: a private network namespace, the whole setup inside it, a ping and
    /// an 8 MiB HTTP transfer through the relay, the packet log and counters; the host is left
    /// untouched. Needs root.
    Demo(demo::DemoArgs),
}

/// Runs a `tun` subcommand.
pub fn run(cmd: TunCommand, printer: &Printer) -> anyhow::Result<Outcome> {
    match cmd {
        TunCommand::Up(args) => crate::tunnel::Relay::builder()
            .args(*args)
            .run_with(printer),
        TunCommand::Down(args) => down::run(args, printer),
        TunCommand::Status(args) => status::run(args, printer),
        TunCommand::Demo(args) => demo::run(args, printer),
    }
}
