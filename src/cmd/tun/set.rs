//! `hostkit tun set`: changes a running relay's stages — impairment, capture — between two
//! packets, without restarting it (see `hostkit::tunnel::control`).

use std::path::PathBuf;

use anyhow::{Context, bail};

use crate::Outcome;
use crate::printer::Printer;
use crate::tunnel::common::{WhereArgs, running_tunnel};
use crate::tunnel::control::{self, Request, VERSION};

/// Options of `hostkit tun set`.
#[derive(Debug, clap::Args)]
pub struct SetArgs {
    /// First device of the tunnel (needed only when several run in the namespace).
    #[arg(long, value_name = "NAME")]
    pub dev0: Option<String>,
    /// Second device of the tunnel.
    #[arg(long, value_name = "NAME")]
    pub dev1: Option<String>,
    /// The new impairment, in tc-netem(8)'s words (as `tun up --impair`; repeat for clauses);
    /// replaces the current one.
    #[arg(long, value_name = "SPEC", conflicts_with = "no_impair")]
    pub impair: Vec<String>,
    /// With --impair: impair only the packets this tcpdump filter matches.
    #[arg(long, value_name = "FILTER", requires = "impair")]
    pub impair_filter: Option<String>,
    /// With --impair: the seed of its random decisions.
    #[arg(long, value_name = "N", requires = "impair")]
    pub seed: Option<u64>,
    /// Remove the impairment.
    #[arg(long)]
    pub no_impair: bool,
    /// Start capturing to this pcapng file (replacing a running capture).
    #[arg(long, value_name = "FILE", conflicts_with = "no_pcap")]
    pub pcap: Option<PathBuf>,
    /// With --pcap: keep super-packets as they crossed.
    #[arg(long, requires = "pcap")]
    pub pcap_raw: bool,
    /// With --pcap: capture only what this tcpdump filter matches.
    #[arg(long, value_name = "FILTER", requires = "pcap")]
    pub pcap_filter: Option<String>,
    /// Stop the capture.
    #[arg(long)]
    pub no_pcap: bool,
    #[command(flatten)]
    pub place: WhereArgs,
}

/// Runs `hostkit tun set`.
pub fn run(args: SetArgs, printer: &Printer) -> anyhow::Result<Outcome> {
    if args.impair.is_empty() && !args.no_impair && args.pcap.is_none() && !args.no_pcap {
        bail!("nothing to set: give --impair, --no-impair, --pcap or --no-pcap");
    }
    let pcap = match &args.pcap {
        None => None,
        Some(p) => Some(std::path::absolute(p).with_context(|| format!("--pcap {}", p.display()))?),
    };
    let (state_path, _) = running_tunnel(
        &args.place,
        args.dev0.as_deref(),
        args.dev1.as_deref(),
        "hostkit tun set",
    )?;
    let request = Request {
        version: VERSION,
        op: "set".into(),
        impair: if args.no_impair {
            Some(Vec::new())
        } else if args.impair.is_empty() {
            None
        } else {
            Some(args.impair.clone())
        },
        impair_filter: args.impair_filter.clone(),
        seed: args.seed,
        pcap,
        no_pcap: args.no_pcap,
        pcap_raw: args.pcap_raw,
        pcap_filter: args.pcap_filter.clone(),
    };
    let reply = control::ask(&control::socket_path(&state_path), &request)?;
    if !reply.ok {
        bail!(
            "the relay refused the change: {}",
            reply.error.unwrap_or_else(|| "no reason given".into())
        );
    }
    let devs = ["", ""]; // headers only: no counter lines
    for line in crate::tunnel::stage_report(&reply.stages, devs, "", false) {
        printer.out(line);
    }
    if reply.stages.is_empty() {
        printer.out("no stage on the relay's path");
    }
    Ok(Outcome::Success)
}
