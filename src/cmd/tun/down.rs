//! `hostkit tun down`.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hostkit_net::state::{self, StateFile, TunnelState};
use hostkit_net::undo::{self, Outcome as UndoOutcome};
use hostkit_net::{Family, Netlink};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::common::{WhereArgs, enter_namespace, report_teardown};
use crate::Outcome;
use crate::printer::Printer;

/// How long to wait for a running relay to tear down after SIGTERM.
const STOP_WAIT: Duration = Duration::from_secs(15);

/// Options of `hostkit tun down`.
#[derive(Debug, clap::Args)]
pub struct DownArgs {
    /// First device of the tunnel to remove (default: every tunnel recorded in the namespace,
    /// and stale rules of tun0).
    #[arg(long, value_name = "NAME")]
    pub dev0: Option<String>,
    /// Second device of the tunnel to remove (default as for --dev0, with tun1).
    #[arg(long, value_name = "NAME")]
    pub dev1: Option<String>,
    /// Table of the stale rules to look for when no state was recorded.
    #[arg(long, value_name = "ID", default_value_t = hostkit_net::spec::DEFAULT_TABLE)]
    pub table: u32,
    #[command(flatten)]
    pub place: WhereArgs,
}

/// Runs `hostkit tun down`.
pub fn run(args: DownArgs, printer: &Printer) -> anyhow::Result<Outcome> {
    let netns_inode = enter_namespace(args.place.netns.as_deref(), "hostkit tun down")?;
    let nl = Netlink::connect().context("open a netlink socket")?;
    let wanted = |devs: [&str; 2]| {
        args.dev0.as_deref().is_none_or(|d| d == devs[0])
            && args.dev1.as_deref().is_none_or(|d| d == devs[1])
    };
    let mut acted = 0usize;
    let mut failures = Vec::new();
    let mut tables = vec![args.table];
    let records = match args.place.run_dir(false)? {
        Some(dir) => state::list(&dir, netns_inode)?,
        None => Vec::new(),
    };
    for (path, recorded, running) in records {
        if !wanted(recorded.spec.devs()) {
            continue;
        }
        tables.push(recorded.spec.table);
        acted += 1;
        if running {
            stop_running(&path, &recorded, printer)?;
            if !path.exists() {
                continue;
            }
        }
        failures.extend(undo_recorded(&nl, &path, printer)?);
    }
    // Rules outlive their devices: remove any `iif DEV lookup TABLE` left without a record.
    tables.sort_unstable();
    tables.dedup();
    let devs = [
        args.dev0.clone().unwrap_or_else(|| "tun0".into()),
        args.dev1.clone().unwrap_or_else(|| "tun1".into()),
    ];
    for table in tables {
        for dev in &devs {
            for family in [Family::Ipv4, Family::Ipv6] {
                for rule in nl.find_iif_rules(family, dev, table)? {
                    acted += 1;
                    match nl.delete_rule(&rule) {
                        Ok(()) => printer.out(format!(
                            "done: remove stale {} rule {}: iif {dev} lookup {table} (no record of it)",
                            family.label(),
                            rule.priority
                        )),
                        Err(e) => failures.push(e.to_string()),
                    }
                }
            }
        }
    }
    if acted == 0 {
        printer.out(format!(
            "nothing to remove: no tunnel recorded in this network namespace and no rules iif {}/{} lookup {}",
            devs[0], devs[1], args.table
        ));
    }
    if !failures.is_empty() {
        bail!("could not remove: {}", failures.join("; "));
    }
    Ok(Outcome::Success)
}

/// Asks a running relay to stop (SIGTERM) and waits for it to tear down.
fn stop_running(path: &Path, recorded: &TunnelState, printer: &Printer) -> anyhow::Result<()> {
    let pid = Pid::from_raw(recorded.pid as i32);
    printer.note(format!(
        "a relay is running for {} <-> {} (pid {}); sending SIGTERM",
        recorded.spec.ends[0].dev, recorded.spec.ends[1].dev, recorded.pid
    ));
    kill(pid, Signal::SIGTERM).with_context(|| format!("signal pid {}", recorded.pid))?;
    let start = Instant::now();
    while state::is_locked(path) {
        if start.elapsed() > STOP_WAIT {
            bail!(
                "the relay (pid {}) did not stop within {} s",
                recorded.pid,
                STOP_WAIT.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    if !path.exists() {
        printer.out(format!(
            "done: stopped the relay (pid {}); it tore its tunnel down itself",
            recorded.pid
        ));
    }
    Ok(())
}

/// Replays a dead `up`'s journal; returns the failures.
fn undo_recorded(nl: &Netlink, path: &Path, printer: &Printer) -> anyhow::Result<Vec<String>> {
    let Some(file) = StateFile::take_existing(path)? else {
        bail!("{} is locked by a running relay", path.display());
    };
    let recorded = state::read(path)?;
    // The record is data: every entry must be one `up` can have written for this tunnel.
    undo::check_entries(&recorded.spec, &recorded.undo)
        .with_context(|| format!("state file {}", path.display()))?;
    printer.note(format!(
        "undoing what `hostkit tun up` (pid {}, no longer running) changed for {} <-> {}",
        recorded.pid, recorded.spec.ends[0].dev, recorded.spec.ends[1].dev
    ));
    let report = undo::teardown(nl, &recorded.undo);
    let failures = report_teardown(printer, &report, true);
    let all_gone = report.iter().all(|i| i.outcome == UndoOutcome::AlreadyGone);
    if all_gone && !report.is_empty() {
        printer.note("everything was already gone");
    }
    if failures.is_empty() {
        file.remove()
            .with_context(|| format!("remove {}", path.display()))?;
    }
    Ok(failures)
}
