//! Pieces shared by the `tun` subcommands.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use hostkit_net::state::Record;
use hostkit_net::undo::{Outcome as UndoOutcome, TeardownItem};
use hostkit_net::{Neighbours, RunDir};
use hostkit_tun::{LogSink, PacketLog};

use crate::printer::Printer;

/// Linux capability numbers we check for.
pub const CAP_NET_ADMIN: u32 = 12;
/// CAP_SYS_ADMIN, needed to enter or create network namespaces.
pub const CAP_SYS_ADMIN: u32 = 21;

/// Where a tunnel lives and what it is called (shared by `down` and `status`).
#[derive(Debug, Clone, clap::Args)]
pub struct WhereArgs {
    /// Work inside this existing named network namespace (`ip netns add NAME`).
    #[arg(long, value_name = "NAME")]
    pub netns: Option<String>,
    /// Directory for the run-state files (what `up` changed, the relay's counters). It, and
    /// every directory above it, must be root's and not group- or world-writable (an ancestor
    /// may be world-writable with the sticky bit, like /tmp); `up` creates its last component,
    /// mode 0700, when missing.
    #[arg(long, value_name = "DIR", env = "HOSTKIT_RUN_DIR", default_value = hostkit_net::state::DEFAULT_RUN_DIR)]
    pub run_dir: PathBuf,
}

impl WhereArgs {
    /// The run directory, checked (see `hostkit_net::RunDir`): created (mode 0700, last
    /// component only) when missing and `create` is set; `None` when missing otherwise.
    pub fn run_dir(&self, create: bool) -> anyhow::Result<Option<RunDir>> {
        Ok(RunDir::open(&self.run_dir, create)?)
    }
}

/// What the other tunnels of the namespace (all records but `own`) share with one: the sysctl
/// values from before the first of them, and the sysctls the running ones still need.
pub fn neighbours(records: &[Record], own: &std::path::Path) -> Neighbours {
    let mut n = Neighbours::default();
    for r in records.iter().filter(|r| r.path != own) {
        let Ok(state) = &r.state else { continue };
        for u in &state.undo {
            if let hostkit_net::Undo::RestoreSysctl { key, value } = u
                && !n.sysctls_before.iter().any(|(k, _)| k == key)
            {
                n.sysctls_before.push((key.clone(), value.clone()));
            }
        }
        if r.running {
            for key in state.spec.sysctl_keys() {
                n.keep_sysctls.push((key, r.describe()));
            }
        }
    }
    n
}

/// Fails unless the process has the capability `cap` (with `what` explaining why).
pub fn require_capability(cap: u32, name: &str, what: &str) -> anyhow::Result<()> {
    let status = std::fs::read_to_string("/proc/self/status").context("read /proc/self/status")?;
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .unwrap_or(0);
    if eff & (1 << cap) == 0 {
        bail!("{what} needs {name}: run it as root (or grant the capability)");
    }
    Ok(())
}

/// Checks privileges and enters `--netns` (before any thread or runtime starts).
pub fn enter_namespace(netns: Option<&str>, what: &str) -> anyhow::Result<u64> {
    require_capability(CAP_NET_ADMIN, "CAP_NET_ADMIN", what)?;
    if let Some(ns) = netns {
        require_capability(CAP_SYS_ADMIN, "CAP_SYS_ADMIN", &format!("{what} --netns"))?;
        hostkit_net::netns::enter(ns)?;
    }
    Ok(hostkit_net::netns::current_inode()?)
}

/// The packet log level for the verbosity: `-v` classic lines, `-vv` decoded.
pub fn packet_log(printer: &Printer) -> PacketLog {
    match printer.verbosity() {
        i8::MIN..=0 => PacketLog::Off,
        1 => PacketLog::Brief,
        _ => PacketLog::Decoded,
    }
}

/// The packet log's destination: stderr, a line each.
pub fn stderr_sink() -> LogSink {
    Arc::new(|line: &str| eprintln!("{line}"))
}

/// Prints a teardown report (one line per item); returns the failures.
pub fn report_teardown(printer: &Printer, items: &[TeardownItem], to_stdout: bool) -> Vec<String> {
    for item in items {
        let line = match &item.outcome {
            UndoOutcome::Done => format!("done: {}", item.undo),
            UndoOutcome::AlreadyGone => format!("already gone: {}", item.undo),
            UndoOutcome::LeftAlone(why) => format!("left alone: {}: {why}", item.undo),
            UndoOutcome::Failed(e) => format!("FAILED: {}: {e}", item.undo),
        };
        if to_stdout {
            printer.out(line);
        } else {
            printer.note(line);
        }
    }
    hostkit_net::undo::failures(items)
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The state file and record of the running tunnel that `dev0`/`dev1` name (either may be
/// left out when only one tunnel runs in the namespace), after entering `--netns`.
pub fn running_tunnel(
    place: &WhereArgs,
    dev0: Option<&str>,
    dev1: Option<&str>,
    what: &str,
) -> anyhow::Result<(PathBuf, hostkit_net::TunnelState)> {
    let netns_inode = enter_namespace(place.netns.as_deref(), what)?;
    let Some(dir) = place.run_dir(false)? else {
        bail!(
            "no tunnel runs here (no run directory {})",
            place.run_dir.display()
        );
    };
    let mut running: Vec<(PathBuf, hostkit_net::TunnelState)> =
        hostkit_net::state::records(&dir, netns_inode)?
            .into_iter()
            .filter(|r| r.running)
            .filter_map(|r| r.state.ok().map(|s| (r.path, s)))
            .filter(|(_, s)| {
                dev0.is_none_or(|d| d == s.spec.ends[0].dev)
                    && dev1.is_none_or(|d| d == s.spec.ends[1].dev)
            })
            .collect();
    match running.len() {
        0 => bail!(
            "no running tunnel{} in this network namespace",
            match (dev0, dev1) {
                (None, None) => String::new(),
                _ => format!(" {} <-> {}", dev0.unwrap_or("*"), dev1.unwrap_or("*")),
            }
        ),
        1 => Ok(running.remove(0)),
        n => bail!(
            "{n} tunnels run in this network namespace ({}); say which with --dev0/--dev1",
            running
                .iter()
                .map(|(_, s)| format!("{} <-> {}", s.spec.ends[0].dev, s.spec.ends[1].dev))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}
