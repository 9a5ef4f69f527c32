//! The tunnel as a library: what `hostkit tun up` runs — options, setup, routing, the relay
//! with its stages, the watcher, teardown — for programs that put their own code on the path.
//!
//! ```no_run
//! use hostkit_tun::{Ctx, Packet, Processor, Verdict};
//!
//! /// Lets everything through, counting nothing: the smallest stage there is.
//! struct PassThrough;
//!
//! impl Processor for PassThrough {
//!     fn name(&self) -> &str {
//!         "pass-through"
//!     }
//!     fn process(&mut self, _: &mut Packet<'_>, _: &mut Ctx<'_>) -> Verdict {
//!         Verdict::Forward
//!     }
//! }
//!
//! fn main() -> std::process::ExitCode {
//!     // Takes `hostkit tun up`'s options from the command line (`--netns NS`, `--pcap`, …),
//!     // runs until SIGINT or SIGTERM, then tears down exactly as `tun up` does.
//!     hostkit::tunnel::Relay::builder().processor(PassThrough).run()
//! }
//! ```

pub mod common;
pub(crate) mod config;
pub mod control;
mod lab;
mod notify;
mod processor;
mod up;

use std::process::ExitCode;

use clap::Parser;
use hostkit_tun::Processor;
use hostkit_tun::filter::Filter;

pub use lab::{FailArg, LabArgs};
pub(crate) use up::stage_report;
pub use up::{EngineArg, ModeArg, RulesArg, UpArgs};

use crate::printer::Printer;
use crate::{GlobalArgs, Outcome};

/// Where a program built on the tunnel starts: [`Relay::builder`].
#[derive(Debug)]
pub struct Relay;

impl Relay {
    /// A builder: `tun up`'s options (from the command line unless given with
    /// [`RelayBuilder::args`]) and the stages to add.
    pub fn builder() -> RelayBuilder {
        RelayBuilder::default()
    }
}

/// A tunnel to run, with its own stages (see [`Relay::builder`]).
#[derive(Default)]
pub struct RelayBuilder {
    args: Option<UpArgs>,
    global: Option<GlobalArgs>,
    /// The command line `args` came from (to apply its `--config` file).
    matches: Option<clap::ArgMatches>,
    stages: Vec<hostkit_tun::pipeline::FilteredStage>,
}

impl std::fmt::Debug for RelayBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayBuilder")
            .field("args", &self.args)
            .field(
                "stages",
                &self
                    .stages
                    .iter()
                    .map(|(s, _)| s.name().to_string())
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// The command line of a program built on the tunnel: the global options and `tun up`'s.
#[derive(Debug, Parser)]
#[command(max_term_width = 100)]
struct ProgramCli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(flatten)]
    up: UpArgs,
}

impl ProgramCli {
    /// The command line, kept as clap parsed it too (for `--config`); exits on a usage error
    /// as `parse` does.
    fn parse_with_matches() -> (ProgramCli, clap::ArgMatches) {
        use clap::{CommandFactory, FromArgMatches};
        let matches = ProgramCli::command().get_matches();
        let cli = ProgramCli::from_arg_matches(&matches)
            .unwrap_or_else(|e| e.format(&mut ProgramCli::command()).exit());
        (cli, matches)
    }
}

impl RelayBuilder {
    /// `tun up`'s options (instead of reading them from the command line), as they are: a
    /// `config` file among them must have been applied already ([`UpArgs::from_matches`]).
    pub fn args(mut self, args: UpArgs) -> RelayBuilder {
        self.args = Some(args);
        self
    }

    /// The global options (`-v`, `-q`, `--color`) when [`RelayBuilder::args`] gave `tun up`'s
    /// (a program with a command line of its own flattens [`GlobalArgs`] and [`UpArgs`]).
    pub fn global(mut self, global: GlobalArgs) -> RelayBuilder {
        self.global = Some(global);
        self
    }

    /// Adds a stage of your own. Stages run in this order, after capture (`--pcap`) and before
    /// an external processor (`--processor-exec`) and impairment (`--impair`);
    /// `--processor-filter` limits them to the packets it matches.
    pub fn processor(mut self, processor: impl Processor + 'static) -> RelayBuilder {
        self.stages.push((Box::new(processor), None));
        self
    }

    /// Adds a stage of your own that sees only the packets `filter` matches (then
    /// `--processor-filter` does not apply to it).
    pub fn filtered(mut self, processor: impl Processor + 'static, filter: Filter) -> RelayBuilder {
        self.stages.push((Box::new(processor), Some(filter)));
        self
    }

    /// Runs the tunnel as a program: reads the command line (`-v`, `-q` and `tun up`'s
    /// options) unless [`RelayBuilder::args`] gave them, prints like `hostkit`, and returns
    /// the exit code (0, or 2 with `error:` and its causes).
    pub fn run(mut self) -> ExitCode {
        let (global, args) = match self.args.take() {
            Some(args) => (self.global.take(), args),
            None => {
                let (cli, matches) = ProgramCli::parse_with_matches();
                self.matches = Some(matches);
                (Some(cli.global), cli.up)
            }
        };
        let global = global.unwrap_or(GlobalArgs {
            verbose: 0,
            quiet: false,
            color: crate::printer::ColorChoice::Auto,
        });
        let printer = Printer::new(&global);
        printer.install_logger();
        let result = self.args(args).run_with(&printer);
        crate::finish(result, &printer)
    }

    /// Runs the tunnel until SIGINT, SIGTERM or SIGHUP (or a failure), then tears it down,
    /// reporting through `printer`.
    pub fn run_with(self, printer: &Printer) -> anyhow::Result<Outcome> {
        let args = match (self.args, self.matches) {
            (Some(a), Some(m)) => config::resolve(a, &m)?,
            (Some(a), None) => a,
            (None, _) => {
                let (cli, m) = ProgramCli::parse_with_matches();
                config::resolve(cli.up, &m)?
            }
        };
        up::run(args, self.stages, printer)
    }
}

/// Compiles a `--…-filter` expression for packets of `link`, naming the option in the error.
fn compile_filter(
    option: &str,
    expr: &str,
    link: hostkit_tun::LinkLayer,
) -> anyhow::Result<Filter> {
    Filter::compile_for(expr, link).map_err(|e| anyhow::anyhow!("{option}: {e}"))
}
