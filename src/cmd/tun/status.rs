//! `hostkit tun status`.

use std::net::IpAddr;

use anyhow::Context;
use hostkit_net::netlink::{TABLE_LOCAL, full_prefix};
use hostkit_net::path::{PathCheck, check_paths};
use hostkit_net::spec::{self, nonlocal_bind_key};
use hostkit_net::state::{self, DirStats};
use hostkit_net::{Family, Netlink, sysctl};
use serde::Serialize;

use super::common::{WhereArgs, enter_namespace};
use crate::Outcome;
use crate::printer::Printer;

/// Options of `hostkit tun status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// First device (default: from the running or recorded tunnel, else tun0).
    #[arg(long, value_name = "NAME")]
    pub dev0: Option<String>,
    /// Second device (default: from the running or recorded tunnel, else tun1).
    #[arg(long, value_name = "NAME")]
    pub dev1: Option<String>,
    /// Table of the moved local routes (default: recorded, else 13).
    #[arg(long, value_name = "ID")]
    pub table: Option<u32>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    #[command(flatten)]
    pub place: WhereArgs,
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// For people.
    Text,
    /// For scripts (stable field names).
    Json,
}

/// The status report (also the JSON shape).
#[derive(Debug, Serialize)]
pub struct Status {
    netns: Option<String>,
    table: u32,
    devices: Vec<DeviceStatus>,
    rules: Vec<RuleStatus>,
    table_routes: Vec<String>,
    addresses: Vec<MovedStatus>,
    local_routes_moved: bool,
    /// `route get` of each peer of the recorded tunnel, per family.
    paths: Vec<PathCheck>,
    /// Every path goes through the tunnel with the right source.
    paths_ok: bool,
    relay: Option<RelayStatus>,
    sysctls: Vec<SysctlStatus>,
}

#[derive(Debug, Serialize)]
struct DeviceStatus {
    name: String,
    exists: bool,
    kind: Option<String>,
    up: bool,
    mtu: Option<u32>,
    addresses: Vec<String>,
    tx_dropped: Option<u64>,
}

#[derive(Debug, Serialize)]
struct RuleStatus {
    family: Family,
    priority: u32,
    iif: String,
    table: u32,
}

#[derive(Debug, Serialize)]
struct MovedStatus {
    address: IpAddr,
    device: String,
    in_local_table: bool,
    in_tunnel_table: bool,
}

#[derive(Debug, Serialize)]
struct RelayStatus {
    running: bool,
    pid: u32,
    engine: String,
    offloads: String,
    started_unix: u64,
    directions: Vec<DirStats>,
}

#[derive(Debug, Serialize)]
struct SysctlStatus {
    key: String,
    value: String,
    before_up: Option<String>,
}

/// Runs `hostkit tun status`.
pub fn run(args: StatusArgs, printer: &Printer) -> anyhow::Result<Outcome> {
    let netns_inode = enter_namespace(args.place.netns.as_deref(), "hostkit tun status")?;
    let nl = Netlink::connect().context("open a netlink socket")?;
    let records = match args.place.run_dir(false)? {
        Some(dir) => state::records(&dir, netns_inode)?,
        None => Vec::new(),
    };
    let mut readable = Vec::new();
    for r in records {
        match r.state {
            Ok(s) => readable.push((r.path, s, r.running)),
            Err(why) => printer.warn(format!(
                "state file {} is damaged ({why}); `hostkit tun down` says what can still be undone",
                r.path.display()
            )),
        }
    }
    let recorded = readable
        .into_iter()
        .find(|(_, s, _)| {
            args.dev0.as_deref().is_none_or(|d| d == s.spec.ends[0].dev)
                && args.dev1.as_deref().is_none_or(|d| d == s.spec.ends[1].dev)
        })
        .map(|(_, state, running)| (state, running));
    let spec = recorded.as_ref().map(|(s, _)| &s.spec);
    let pick = |given: &Option<String>, side: usize| {
        given
            .clone()
            .or_else(|| spec.map(|s| s.ends[side].dev.clone()))
            .unwrap_or_else(|| spec::DEFAULT_DEVICES[side].into())
    };
    let devs = [pick(&args.dev0, 0), pick(&args.dev1, 1)];
    let table = args
        .table
        .or(spec.map(|s| s.table))
        .unwrap_or(spec::DEFAULT_TABLE);

    let (devices, addrs) = device_status(&nl, &devs)?;
    let paths = match spec {
        Some(spec) if spec.routing => check_paths(&nl, spec)?,
        _ => Vec::new(),
    };
    let addresses = moved_status(&nl, &addrs, table)?;
    let status = Status {
        netns: args.place.netns.clone(),
        table,
        devices,
        rules: rule_status(&nl, &devs)?,
        table_routes: table_routes(&nl, table)?,
        local_routes_moved: !addresses.is_empty()
            && addresses
                .iter()
                .all(|m| !m.in_local_table && m.in_tunnel_table),
        addresses,
        paths_ok: paths.iter().all(|p| p.ok),
        paths,
        relay: recorded.as_ref().map(|(s, running)| RelayStatus {
            running: *running,
            pid: s.pid,
            engine: s.engine.name().to_string(),
            offloads: s.offloads.clone(),
            started_unix: s.started_unix,
            directions: s.stats.clone(),
        }),
        sysctls: sysctl_status(recorded.as_ref().map(|(s, _)| s)),
    };
    match args.format {
        Format::Json => printer.out(serde_json::to_string_pretty(&status)?),
        Format::Text => print_text(&status, printer),
    }
    Ok(Outcome::Success)
}

/// Addresses, each with the device it is on.
type DeviceAddrs = Vec<(IpAddr, String)>;

/// The devices, and their (non-link-local) addresses with the device they are on.
fn device_status(
    nl: &Netlink,
    devs: &[String; 2],
) -> anyhow::Result<(Vec<DeviceStatus>, DeviceAddrs)> {
    let mut devices = Vec::new();
    let mut addrs = Vec::new();
    for dev in devs {
        let link = nl.link_by_name(dev)?;
        let mut d = DeviceStatus {
            name: dev.clone(),
            exists: link.is_some(),
            kind: None,
            up: false,
            mtu: None,
            addresses: Vec::new(),
            tx_dropped: None,
        };
        if let Some(l) = link {
            d.kind = l.kind.clone();
            d.up = l.up;
            d.mtu = l.mtu;
            d.tx_dropped = l.stats.map(|s| s.tx_dropped);
            for a in nl.addresses(Some(l.index))? {
                if matches!(a.local, IpAddr::V6(v6) if v6.is_unicast_link_local()) {
                    continue;
                }
                d.addresses.push(match a.peer {
                    Some(p) => format!("{} peer {p}/{}", a.local, a.prefix_len),
                    None => format!("{}/{}", a.local, a.prefix_len),
                });
                addrs.push((a.local, dev.clone()));
            }
        }
        devices.push(d);
    }
    Ok((devices, addrs))
}

/// The rules whose `iif` is one of the devices.
fn rule_status(nl: &Netlink, devs: &[String; 2]) -> anyhow::Result<Vec<RuleStatus>> {
    let mut rules = Vec::new();
    for family in [Family::Ipv4, Family::Ipv6] {
        for r in nl.rules(family)? {
            if let Some(iif) = r.iif.as_ref().filter(|i| devs.contains(i)) {
                rules.push(RuleStatus {
                    family,
                    priority: r.priority,
                    iif: iif.clone(),
                    table: r.table,
                });
            }
        }
    }
    Ok(rules)
}

/// The routes of `table`, one line each (`local 10.0.0.1 dev tun0`).
fn table_routes(nl: &Netlink, table: u32) -> anyhow::Result<Vec<String>> {
    let links = nl.links()?;
    let mut lines = Vec::new();
    for family in [Family::Ipv4, Family::Ipv6] {
        for r in nl.routes(family)?.into_iter().filter(|r| r.table == table) {
            let dev = r
                .oif
                .and_then(|i| links.iter().find(|l| l.index == i))
                .map(|l| l.name.as_str())
                .unwrap_or("?");
            let dst = match r.dst {
                Some(d) if r.dst_len != full_prefix(&d) => format!("{d}/{}", r.dst_len),
                Some(d) => d.to_string(),
                None => "default".into(),
            };
            lines.push(format!("{:?} {dst} dev {dev}", r.kind).to_lowercase());
        }
    }
    Ok(lines)
}

/// For each address: is its local route in table `local`, in the tunnel's table, or both.
fn moved_status(
    nl: &Netlink,
    addrs: &[(IpAddr, String)],
    table: u32,
) -> anyhow::Result<Vec<MovedStatus>> {
    addrs
        .iter()
        .map(|(addr, dev)| {
            Ok(MovedStatus {
                address: *addr,
                device: dev.clone(),
                in_local_table: nl.find_local_route(*addr, TABLE_LOCAL, None)?.is_some(),
                in_tunnel_table: nl.find_local_route(*addr, table, None)?.is_some(),
            })
        })
        .collect()
}

/// The non-local-bind sysctls, with the values `up` recorded before changing them.
fn sysctl_status(recorded: Option<&state::TunnelState>) -> Vec<SysctlStatus> {
    let mut sysctls = Vec::new();
    for family in [Family::Ipv4, Family::Ipv6] {
        let key = nonlocal_bind_key(family);
        let before_up = recorded.and_then(|s| {
            s.undo.iter().find_map(|u| match u {
                hostkit_net::Undo::RestoreSysctl { key: k, value } if k == key => {
                    Some(value.clone())
                }
                _ => None,
            })
        });
        if let Ok(value) = sysctl::read(key) {
            sysctls.push(SysctlStatus {
                key: key.into(),
                value,
                before_up,
            });
        }
    }
    sysctls
}

fn print_text(s: &Status, printer: &Printer) {
    let ns = s
        .netns
        .as_deref()
        .map(|n| format!(" (network namespace {n})"))
        .unwrap_or_default();
    printer.out(format!(
        "tunnel {} <-> {}{ns}",
        s.devices[0].name, s.devices[1].name
    ));
    match &s.relay {
        Some(r) if r.running => {
            printer.out(format!(
                "relay: running, pid {}, engine {}, offloads {}",
                r.pid, r.engine, r.offloads
            ));
            for line in super::up::stats_of(&r.directions) {
                printer.out(format!("  {line}"));
            }
        }
        Some(r) => printer.out(format!(
            "relay: NOT running; pid {} died without tearing down — run `hostkit tun down`",
            r.pid
        )),
        None => printer.out("relay: not running (no tunnel recorded in this namespace)"),
    }
    printer.out("devices:");
    for d in &s.devices {
        if !d.exists {
            printer.out(format!("  {}: absent", d.name));
            continue;
        }
        printer.out(format!(
            "  {}: {} {}, mtu {}, tx dropped {}{}",
            d.name,
            d.kind.as_deref().unwrap_or("?"),
            if d.up { "up" } else { "down" },
            d.mtu.map(|m| m.to_string()).unwrap_or_else(|| "?".into()),
            d.tx_dropped
                .map(|m| m.to_string())
                .unwrap_or_else(|| "?".into()),
            if d.addresses.is_empty() {
                String::new()
            } else {
                format!(", {}", d.addresses.join(", "))
            }
        ));
    }
    printer.out(format!(
        "rules (iif {} / {}):",
        s.devices[0].name, s.devices[1].name
    ));
    if s.rules.is_empty() {
        printer.out("  none");
    }
    for r in &s.rules {
        printer.out(format!(
            "  {} {}: iif {} lookup {}",
            r.family.label(),
            r.priority,
            r.iif,
            r.table
        ));
    }
    printer.out(format!("routes in table {}:", s.table));
    if s.table_routes.is_empty() {
        printer.out("  none");
    }
    for r in &s.table_routes {
        printer.out(format!("  {r}"));
    }
    printer.out(format!(
        "local routes moved: {}",
        if s.local_routes_moved { "yes" } else { "no" }
    ));
    for m in &s.addresses {
        printer.out(format!(
            "  {} ({}): table local {}, table {} {}",
            m.address,
            m.device,
            if m.in_local_table { "yes" } else { "no" },
            s.table,
            if m.in_tunnel_table { "yes" } else { "no" }
        ));
    }
    if !s.paths.is_empty() {
        printer.out("paths (route get of each peer, as local traffic sees it):");
    }
    for p in &s.paths {
        printer.out(format!("  {p}"));
    }
    if !s.paths_ok && s.relay.as_ref().is_some_and(|r| r.running) {
        printer.warn(
            "traffic between the tunnel's addresses does not take the tunnel (see paths above)",
        );
    }
    for c in &s.sysctls {
        printer.out(format!(
            "{} = {}{}",
            c.key,
            c.value,
            c.before_up
                .as_ref()
                .map(|b| format!(" (was {b} before up)"))
                .unwrap_or_default()
        ));
    }
}
