//! `hostkit`: a Linux host-setup toolkit — the command line, and the tunnel as a library.
//!
//! The binary is [`main`]; the Ansible module (`hostkit-ansible`) is [`ansible::main`].
//! Programs that put their own code on the relay's path use [`tunnel::Relay::builder`]: the
//! same options, setup, routing and teardown as `hostkit tun up`, with their
//! [`hostkit_tun::Processor`]s as stages.
//!
//! Exit codes (every command's, in one table: `cmd::docs::EXIT_CODES`, repeated in
//! docs/exit-codes.md and in each manual page):
//! * 0 — success (for `check`: everything already as it should be),
//! * 1 — failure or changes pending, where a command defines it,
//! * 2 — usage or runtime error.

#![deny(missing_docs)]

pub mod ansible;
mod cmd;
pub mod printer;
pub mod tunnel;

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser};

use crate::printer::Printer;

/// Linux host-setup toolkit: a same-host TUN tunnel relay, and reversible host-tweak recipes.
#[derive(Debug, Parser)]
#[command(
    name = "hostkit",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: cmd::Command,
}

/// Options that every subcommand accepts.
#[derive(Debug, Clone, clap::Args)]
pub struct GlobalArgs {
    /// More output on stderr; repeat for more (-v, -vv; -vvv adds other crates' debug logs).
    #[arg(short, long, action = clap::ArgAction::Count, global = true, help_heading = "Global options")]
    pub verbose: u8,
    /// Only errors on stderr.
    #[arg(
        short,
        long,
        global = true,
        conflicts_with = "verbose",
        help_heading = "Global options"
    )]
    pub quiet: bool,
    /// When to colour output: auto (a terminal, and NO_COLOR unset), always, never.
    #[arg(long, value_enum, default_value_t = printer::ColorChoice::Auto, global = true, help_heading = "Global options")]
    pub color: printer::ColorChoice,
}

/// What a command reports back to `main`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Everything done, nothing pending: exit 0.
    Success,
    /// The command's own "not satisfied" (changes pending, a check failed): exit 1.
    Pending,
}

/// The `hostkit` command line.
pub fn main() -> ExitCode {
    // Kept as parsed too: `tun up --config` needs to know which options were given.
    let matches = Cli::command().get_matches();
    let cli =
        Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.format(&mut Cli::command()).exit());
    let printer = Printer::new(&cli.global);
    printer.install_logger();
    let result = cmd::run(cli.command, &matches, &printer);
    finish(result, &printer)
}

/// The exit code of a command's result, once its results on stdout are written out: 0, 1
/// (the command's own "pending"), or 2 with `error:` and its causes.
fn finish(result: anyhow::Result<Outcome>, printer: &Printer) -> ExitCode {
    // Results that could not be written are a failure, whatever the command decided.
    let result = match (result, printer.finish_stdout()) {
        (Err(err), _) => Err(err),
        (Ok(_), Err(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            // The reader went away (`hostkit list | head -1`): no message, but not success.
            return ExitCode::from(2);
        }
        (Ok(_), Err(e)) => {
            Err(anyhow::Error::new(e).context("cannot write the results to standard output"))
        }
        (Ok(outcome), Ok(())) => Ok(outcome),
    };
    match result {
        Ok(Outcome::Success) => ExitCode::SUCCESS,
        Ok(Outcome::Pending) => ExitCode::from(1),
        Err(err) => {
            printer.error(&err);
            ExitCode::from(2)
        }
    }
}
