//! `hostkit tun status`.

use anyhow::Context;
use hostkit_net::Netlink;
use hostkit_net::inspect::{Status, inspect};
use hostkit_net::state;

use crate::Outcome;
use crate::printer::Printer;
use crate::tunnel::common::{WhereArgs, enter_namespace};

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
            .unwrap_or_else(|| hostkit_net::DEFAULT_DEVICES[side].into())
    };
    let devs = [pick(&args.dev0, 0), pick(&args.dev1, 1)];
    let table = args
        .table
        .or(spec.map(|s| s.table))
        .unwrap_or(hostkit_net::DEFAULT_TABLE);

    let status = inspect(
        &nl,
        &devs,
        table,
        recorded.as_ref().map(|(s, running)| (s, *running)),
        args.place.netns.clone(),
    )?;
    match args.format {
        Format::Json => printer.out(serde_json::to_string_pretty(&status)?),
        Format::Text => print_text(&status, printer),
    }
    Ok(Outcome::Success)
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
            for dir in &r.directions {
                printer.out(format!("  {dir}"));
            }
            let devs = [s.devices[0].name.as_str(), s.devices[1].name.as_str()];
            for line in crate::tunnel::stage_report(&r.stages, devs, "  ", true) {
                printer.out(line);
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
            "  {}: {} {}, mtu {}{}, tx dropped {}{}",
            d.name,
            d.mode
                .map(|m| m.name())
                .or(d.kind.as_deref())
                .unwrap_or("?"),
            if d.up { "up" } else { "down" },
            d.mtu.map(|m| m.to_string()).unwrap_or_else(|| "?".into()),
            d.mac
                .as_ref()
                .map(|m| format!(", mac {m}"))
                .unwrap_or_default(),
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
