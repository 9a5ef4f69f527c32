//! `hostkit tun down`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::ArgMatches;
use hostkit_net::state;
use hostkit_net::undo::{self, Outcome as UndoOutcome};
use hostkit_net::{Family, Netlink, StateFile, TunnelState};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::Outcome;
use crate::printer::Printer;
use crate::tunnel::common::{WhereArgs, enter_namespace, report_teardown};
use crate::tunnel::config;

/// How long to wait for a running relay to tear down after SIGTERM.
const STOP_WAIT: Duration = Duration::from_secs(15);

/// Options of `hostkit tun down`.
#[derive(Debug, clap::Args)]
pub struct DownArgs {
    /// First device of the tunnel to remove (default: every tunnel recorded in the namespace).
    #[arg(long, value_name = "NAME")]
    pub dev0: Option<String>,
    /// Second device of the tunnel to remove (default as for --dev0).
    #[arg(long, value_name = "NAME")]
    pub dev1: Option<String>,
    /// With --force: the table of the rules and routes to remove when the record cannot say.
    #[arg(long, value_name = "ID", default_value_t = hostkit_net::DEFAULT_TABLE)]
    pub table: u32,
    /// For a damaged state file: remove what can be identified by name (the rules `iif DEV
    /// lookup TABLE` of its devices and the local routes through them in that table) and move
    /// the file aside as `*.corrupt`. Without a record at all: remove `iif DEV lookup TABLE`
    /// rules of --dev0/--dev1 (default tun0/tun1). Never deletes a device.
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub place: WhereArgs,
    /// Take the devices, table, namespace and run directory from this configuration file (what
    /// `tun up --config FILE` read; the service's `ExecStopPost`). Options given as well
    /// override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// Runs `hostkit tun down` (`matches`: its command line, for what overrides `--config`).
pub fn run(mut args: DownArgs, matches: &ArgMatches, printer: &Printer) -> anyhow::Result<Outcome> {
    if let Some(path) = &args.config {
        let file = config::for_down(path)?;
        let given = |id: &str| config::given(matches, id);
        if !given("dev0") {
            args.dev0 = Some(file.dev0);
        }
        if !given("dev1") {
            args.dev1 = Some(file.dev1);
        }
        if !given("table") {
            args.table = file.table;
        }
        if !given("netns") {
            args.place.netns = file.place.netns;
        }
        if !given("run_dir") {
            args.place.run_dir = file.place.run_dir;
        }
    }
    let netns_inode = enter_namespace(args.place.netns.as_deref(), "hostkit tun down")?;
    let nl = Netlink::connect().context("open a netlink socket")?;
    let wanted = |devs: &[String; 2]| {
        args.dev0.as_deref().is_none_or(|d| d == devs[0])
            && args.dev1.as_deref().is_none_or(|d| d == devs[1])
    };
    let run_dir = args.place.run_dir(false)?;
    let records = match &run_dir {
        Some(dir) => state::records(dir, netns_inode)?,
        None => Vec::new(),
    };
    let mut acted = 0usize;
    let mut failures = Vec::new();
    for record in &records {
        let Some(devs) = record.devs() else {
            // Nothing can be identified: say so, never guess.
            failures.push(format!(
                "{}: damaged, and neither its content nor its name says which devices it was for; left as it is",
                record.path.display()
            ));
            continue;
        };
        if !wanted(&devs) {
            continue;
        }
        acted += 1;
        let path = &record.path;
        let recorded = match &record.state {
            Ok(s) => s,
            Err(why) => {
                failures.extend(damaged(&nl, record, why, &devs, &args, printer)?);
                continue;
            }
        };
        if record.running {
            stop_running(path, recorded, printer)?;
            if !path.exists() {
                continue;
            }
        }
        // The other tunnels running now decide which sysctls must stay.
        let others = match &run_dir {
            Some(dir) => state::records(dir, netns_inode)?,
            None => Vec::new(),
        };
        let keep = crate::tunnel::common::neighbours(&others, path).keep_sysctls;
        failures.extend(undo_recorded(&nl, path, &keep, printer)?);
    }
    // Rules outlive their devices, but without a record there is no telling whose they are:
    // only --force removes them.
    if args.force {
        let devs = [
            args.dev0.clone().unwrap_or_else(|| "tun0".into()),
            args.dev1.clone().unwrap_or_else(|| "tun1".into()),
        ];
        if !records.iter().any(|r| r.devs().is_some_and(|d| d == devs)) {
            acted += remove_by_name(&nl, &devs, args.table, printer, &mut failures)?;
        }
    }
    if acted == 0 {
        printer.out(format!(
            "nothing to remove: no tunnel recorded in this network namespace{}",
            if args.force {
                String::new()
            } else {
                " (rules without a record are left alone; --force removes `iif tun0/tun1 lookup 13` rules)".to_string()
            }
        ));
    }
    if !failures.is_empty() {
        bail!("could not remove: {}", failures.join("; "));
    }
    Ok(Outcome::Success)
}

/// A damaged state file: says what can still be done; with --force does it, by name, and
/// moves the file aside (never deletes it). Returns the failures.
fn damaged(
    nl: &Netlink,
    record: &state::Record,
    why: &str,
    devs: &[String; 2],
    args: &DownArgs,
    printer: &Printer,
) -> anyhow::Result<Vec<String>> {
    let path = &record.path;
    let table = record.table().unwrap_or(args.table);
    if !args.force {
        return Ok(vec![format!(
            "state file {} is damaged ({why}); nothing was undone from it. It is for {} and {}: \
             `hostkit tun down --force` removes, by those names, the rules iif {}/{} lookup {table} and \
             the local routes through them in table {table}, and moves the file aside as {}.corrupt \
             (kept as evidence). Devices are never deleted by name; sysctls are left as they are",
            path.display(),
            devs[0],
            devs[1],
            devs[0],
            devs[1],
            path.display()
        )]);
    }
    if record.running {
        return Ok(vec![format!(
            "{} is damaged but a relay still holds its lock; stop that process first",
            path.display()
        )]);
    }
    let Some(_lock) = StateFile::take_existing(path)? else {
        bail!("{} is locked by a running relay", path.display());
    };
    let mut failures = Vec::new();
    remove_by_name(nl, devs, table, printer, &mut failures)?;
    let aside =
        state::move_aside(path).with_context(|| format!("move {} aside", path.display()))?;
    printer.out(format!(
        "done: moved the damaged state file aside as {} (kept as evidence)",
        aside.display()
    ));
    Ok(failures)
}

/// `--force`: removes the `iif DEV lookup TABLE` rules of `devs` and the local routes through
/// them in `table`. Returns how many things it found.
fn remove_by_name(
    nl: &Netlink,
    devs: &[String; 2],
    table: u32,
    printer: &Printer,
    failures: &mut Vec<String>,
) -> anyhow::Result<usize> {
    let mut found = 0;
    for dev in devs {
        for family in [Family::Ipv4, Family::Ipv6] {
            for rule in nl.find_iif_rules(family, dev, table)? {
                found += 1;
                match nl.delete_rule(&rule) {
                    Ok(()) => printer.out(format!(
                        "done: remove {} rule {}: iif {dev} lookup {table} (by name, --force)",
                        family.label(),
                        rule.priority
                    )),
                    Err(e) => failures.push(e.to_string()),
                }
            }
            if let Some(link) = nl.link_by_name(dev)? {
                for route in nl
                    .routes(family)?
                    .into_iter()
                    .filter(|r| r.table == table && r.oif == Some(link.index) && r.is_local())
                {
                    found += 1;
                    let what = format!(
                        "local {} dev {dev} table {table}",
                        route.dst.map(|d| d.to_string()).unwrap_or_default()
                    );
                    match nl.delete_route(&route, &what) {
                        Ok(()) => {
                            printer.out(format!("done: remove route {what} (by name, --force)"))
                        }
                        Err(e) => failures.push(e.to_string()),
                    }
                }
            }
        }
    }
    Ok(found)
}

/// Asks a running relay to stop (SIGTERM) and waits for it to tear down.
fn stop_running(path: &Path, recorded: &TunnelState, printer: &Printer) -> anyhow::Result<()> {
    // The pid in the file is a claim; the kernel says who holds the lock. Only that process
    // is signalled (never 0, -1 or a reused pid of a relay long gone).
    let holders = state::lock_holders(path)
        .with_context(|| format!("find who holds the lock of {}", path.display()))?;
    if recorded.pid <= 1 || !holders.contains(&recorded.pid) {
        bail!(
            "{} names pid {} as its relay, but the lock is held by {}: not signalling anyone",
            path.display(),
            recorded.pid,
            if holders.is_empty() {
                "no process".to_string()
            } else {
                format!(
                    "pid {}",
                    holders
                        .iter()
                        .map(u32::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        );
    }
    let pid = Pid::from_raw(i32::try_from(recorded.pid).context("pid out of range")?);
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
fn undo_recorded(
    nl: &Netlink,
    path: &Path,
    keep: &undo::KeepSysctls,
    printer: &Printer,
) -> anyhow::Result<Vec<String>> {
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
    let report = undo::teardown(nl, &recorded.undo, keep);
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
