//! `hostkit tun stats`: a running relay's live counters — per direction, with rates, and per
//! stage — once, or every few seconds.

use std::time::{Duration, Instant};

use anyhow::bail;

use crate::Outcome;
use crate::printer::Printer;
use crate::tunnel::common::{WhereArgs, running_tunnel};
use crate::tunnel::control::{self, Reply, Request, VERSION};

/// Options of `hostkit tun stats`.
#[derive(Debug, clap::Args)]
pub struct StatsArgs {
    /// First device of the tunnel (needed only when several run in the namespace).
    #[arg(long, value_name = "NAME")]
    pub dev0: Option<String>,
    /// Second device of the tunnel.
    #[arg(long, value_name = "NAME")]
    pub dev1: Option<String>,
    /// Print again every SECONDS, with the rates since the previous sample, until interrupted.
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub watch: Option<u64>,
    /// With --watch: stop after this many samples.
    #[arg(long, value_name = "N", requires = "watch", value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,
    /// Output format (json: one object per sample, a line each).
    #[arg(long, value_enum, default_value_t = super::status::Format::Text)]
    pub format: super::status::Format,
    #[command(flatten)]
    pub place: WhereArgs,
}

/// One sample, as printed in JSON.
#[derive(Debug, serde::Serialize)]
struct Sample<'a> {
    schema_version: u32,
    /// Seconds since the previous sample (absent for the first).
    #[serde(skip_serializing_if = "Option::is_none")]
    interval_s: Option<f64>,
    directions: Vec<DirRate<'a>>,
    stages: &'a [hostkit_tun::pipeline::StageSnapshot],
}

#[derive(Debug, serde::Serialize)]
struct DirRate<'a> {
    #[serde(flatten)]
    counters: &'a hostkit_net::state::DirStats,
    #[serde(skip_serializing_if = "Option::is_none")]
    packets_per_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    bits_per_s: Option<f64>,
}

/// Runs `hostkit tun stats`.
pub fn run(args: StatsArgs, printer: &Printer) -> anyhow::Result<Outcome> {
    let (state_path, state) = running_tunnel(
        &args.place,
        args.dev0.as_deref(),
        args.dev1.as_deref(),
        "hostkit tun stats",
    )?;
    let socket = control::socket_path(&state_path);
    let devs = [
        state.spec.ends[0].dev.as_str(),
        state.spec.ends[1].dev.as_str(),
    ];
    let request = Request {
        version: VERSION,
        op: "stats".into(),
        ..Request::default()
    };
    let mut previous: Option<(Instant, Reply)> = None;
    let mut samples = 0u64;
    loop {
        let reply = control::ask(&socket, &request)?;
        if !reply.ok {
            bail!(
                "the relay refused: {}",
                reply.error.unwrap_or_else(|| "no reason given".into())
            );
        }
        let now = Instant::now();
        let interval = previous
            .as_ref()
            .map(|(t, _)| now.duration_since(*t).as_secs_f64());
        let rate = |i: usize| {
            let (Some((_, prev)), Some(secs)) = (&previous, interval) else {
                return (None, None);
            };
            let (Some(a), Some(b)) = (prev.directions.get(i), reply.directions.get(i)) else {
                return (None, None);
            };
            let secs = secs.max(1e-9);
            (
                Some(b.packets.saturating_sub(a.packets) as f64 / secs),
                Some(b.bytes.saturating_sub(a.bytes) as f64 * 8.0 / secs),
            )
        };
        match args.format {
            super::status::Format::Json => {
                let sample = Sample {
                    schema_version: hostkit_core::JSON_SCHEMA_VERSION,
                    interval_s: interval,
                    directions: reply
                        .directions
                        .iter()
                        .enumerate()
                        .map(|(i, d)| {
                            let (pps, bps) = rate(i);
                            DirRate {
                                counters: d,
                                packets_per_s: pps,
                                bits_per_s: bps,
                            }
                        })
                        .collect(),
                    stages: &reply.stages,
                };
                printer.out(serde_json::to_string(&sample)?);
            }
            super::status::Format::Text => {
                for (i, d) in reply.directions.iter().enumerate() {
                    let line = match rate(i) {
                        (Some(pps), Some(bps)) => {
                            format!("{d} — {pps:.0} packets/s, {:.1} Mbit/s", bps / 1e6)
                        }
                        _ => d.to_string(),
                    };
                    printer.out(line);
                }
                for line in crate::tunnel::stage_report(&reply.stages, devs, "", true) {
                    printer.out(line);
                }
            }
        }
        samples += 1;
        let Some(every) = args.watch else { break };
        if args.count.is_some_and(|n| samples >= n) {
            break;
        }
        if !printer.flush_stdout() {
            break; // the reader went away: main reports it
        }
        previous = Some((now, reply));
        std::thread::sleep(Duration::from_secs(every));
    }
    Ok(Outcome::Success)
}
