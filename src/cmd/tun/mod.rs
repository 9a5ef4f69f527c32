//! `hostkit tun …`: the same-host TUN tunnel.

mod demo;
mod down;
mod set;
mod stats;
mod status;

use anyhow::anyhow;
use clap::ArgMatches;

use crate::Outcome;
use crate::printer::Printer;
use crate::tunnel::UpArgs;
use crate::tunnel::config;

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
    /// Change a running relay's impairment or capture between two packets, without restarting
    /// it (over its control socket in the run directory).
    Set(set::SetArgs),
    /// A running relay's live counters: per direction with rates, and per stage; once, or
    /// every few seconds with --watch.
    Stats(stats::StatsArgs),
    /// Check a tunnel's configuration — a `--config` file and/or `tun up`'s options — as `tun up`
    /// would, changing nothing; `--print` prints it as TOML that `--config` reads back.
    Config(Box<ConfigArgs>),
    /// A guided first run: a private network namespace, the whole setup inside it, a ping and
    /// an 8 MiB HTTP transfer through the relay, the packet log and counters; the host is left
    /// untouched. Needs root.
    Demo(demo::DemoArgs),
}

/// Options of `hostkit tun config`.
#[derive(Debug, clap::Args)]
#[command(mut_arg("dry_run", |a| a.hide(true)))]
pub struct ConfigArgs {
    #[command(flatten)]
    up: UpArgs,
    /// Print the effective configuration (command line over `--config` file over defaults) as
    /// TOML, every key with its help, defaults commented out.
    #[arg(long)]
    print: bool,
}

/// Runs a `tun` subcommand; `matches` is the command line of `tun` (for `--config`).
pub fn run(cmd: TunCommand, matches: &ArgMatches, printer: &Printer) -> anyhow::Result<Outcome> {
    let sub = |name: &str| {
        matches
            .subcommand_matches(name)
            .ok_or_else(|| anyhow!("internal error: no command line for `tun {name}`"))
    };
    match cmd {
        TunCommand::Up(args) => crate::tunnel::Relay::builder()
            .args(config::resolve(*args, sub("up")?)?)
            .run_with(printer),
        TunCommand::Config(args) => {
            let effective = config::effective(args.up, sub("config")?, config::Check::Full)?;
            if args.print {
                printer.out_raw(effective.to_toml());
            } else {
                printer.note("the configuration is valid (--print prints it)");
            }
            Ok(Outcome::Success)
        }
        TunCommand::Down(args) => down::run(args, sub("down")?, printer),
        TunCommand::Status(args) => status::run(args, printer),
        TunCommand::Set(args) => set::run(args, printer),
        TunCommand::Stats(args) => stats::run(args, printer),
        TunCommand::Demo(args) => demo::run(args, printer),
    }
}
