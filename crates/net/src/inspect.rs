//! Inspecting a tunnel as it is now — devices, rules, the table's routes, where the local
//! routes are, each peer's path, the relay's record and the sysctls — for `hostkit tun status`
//! (text and JSON) and anyone else who asks. Read-only.

// The fields are the JSON output of `hostkit tun status --format json`; their names say what
// they hold.
#![allow(missing_docs)]

use std::net::IpAddr;

use serde::Serialize;

use crate::netlink::{NetlinkError, TABLE_LOCAL, full_prefix};
use crate::path::{PathCheck, check_paths};
use crate::spec::nonlocal_bind_key;
use crate::state::{DirStats, TunnelState};
use crate::{Family, Netlink, sysctl};

/// The status report (also the JSON shape).
#[derive(Debug, Serialize)]
pub struct Status {
    /// The JSON contract's version (`docs/json.md`).
    pub schema_version: u32,
    pub netns: Option<String>,
    pub table: u32,
    pub devices: Vec<DeviceStatus>,
    pub rules: Vec<RuleStatus>,
    pub table_routes: Vec<String>,
    pub addresses: Vec<MovedStatus>,
    pub local_routes_moved: bool,
    /// `route get` of each peer of the recorded tunnel, per family.
    pub paths: Vec<PathCheck>,
    /// Every path goes through the tunnel with the right source.
    pub paths_ok: bool,
    pub relay: Option<RelayStatus>,
    pub sysctls: Vec<SysctlStatus>,
}

#[derive(Debug, Serialize)]
pub struct DeviceStatus {
    pub name: String,
    pub exists: bool,
    pub kind: Option<String>,
    /// `tun` or `tap`, for a TUN/TAP device.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<hostkit_tun::DeviceMode>,
    /// A TAP device's MAC address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    pub up: bool,
    pub mtu: Option<u32>,
    pub addresses: Vec<String>,
    pub tx_dropped: Option<u64>,
}

#[derive(Debug, Serialize)]
pub struct RuleStatus {
    pub family: Family,
    pub priority: u32,
    pub iif: String,
    pub table: u32,
}

#[derive(Debug, Serialize)]
pub struct MovedStatus {
    pub address: IpAddr,
    pub device: String,
    pub in_local_table: bool,
    pub in_tunnel_table: bool,
}

#[derive(Debug, Serialize)]
pub struct RelayStatus {
    pub running: bool,
    pub pid: u32,
    pub engine: String,
    pub offloads: String,
    pub started_unix: u64,
    pub directions: Vec<DirStats>,
    /// The stages on the relay's path and their counters (none: the key is left out).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub stages: Vec<hostkit_tun::pipeline::StageSnapshot>,
}

#[derive(Debug, Serialize)]
pub struct SysctlStatus {
    pub key: String,
    pub value: String,
    pub before_up: Option<String>,
}

/// Inspects the tunnel of `devs` and `table`, with what `up` recorded about it (and whether its
/// relay runs), if anything.
pub fn inspect(
    nl: &Netlink,
    devs: &[String; 2],
    table: u32,
    recorded: Option<(&TunnelState, bool)>,
    netns: Option<String>,
) -> Result<Status, NetlinkError> {
    let spec = recorded.map(|(s, _)| &s.spec);
    let (devices, addrs) = device_status(nl, devs)?;
    let paths = match spec {
        Some(spec) if spec.routing => check_paths(nl, spec)?,
        _ => Vec::new(),
    };
    let addresses = moved_status(nl, &addrs, table)?;
    Ok(Status {
        schema_version: hostkit_core::JSON_SCHEMA_VERSION,
        netns,
        table,
        devices,
        rules: rule_status(nl, devs)?,
        table_routes: table_routes(nl, table)?,
        local_routes_moved: !addresses.is_empty()
            && addresses
                .iter()
                .all(|m| !m.in_local_table && m.in_tunnel_table),
        addresses,
        paths_ok: paths.iter().all(|p| p.ok),
        paths,
        relay: recorded.map(|(s, running)| RelayStatus {
            running,
            pid: s.pid,
            engine: s.engine.name().to_string(),
            offloads: s.offloads.clone(),
            started_unix: s.started_unix,
            directions: s.stats.clone(),
            stages: s.stages.clone(),
        }),
        sysctls: sysctl_status(recorded.map(|(s, _)| s)),
    })
}

/// Addresses, each with the device it is on.
type DeviceAddrs = Vec<(IpAddr, String)>;

/// The devices, and their (non-link-local) addresses with the device they are on.
fn device_status(
    nl: &Netlink,
    devs: &[String; 2],
) -> Result<(Vec<DeviceStatus>, DeviceAddrs), NetlinkError> {
    let mut devices = Vec::new();
    let mut addrs = Vec::new();
    for dev in devs {
        let link = nl.link_by_name(dev)?;
        let mut d = DeviceStatus {
            name: dev.clone(),
            exists: link.is_some(),
            kind: None,
            mode: None,
            mac: None,
            up: false,
            mtu: None,
            addresses: Vec::new(),
            tx_dropped: None,
        };
        if let Some(l) = link {
            d.kind = l.kind.clone();
            if l.kind.as_deref() == Some("tun") {
                let tap = l.tun.unwrap_or_default().tap;
                d.mode = Some(if tap {
                    hostkit_tun::DeviceMode::Tap
                } else {
                    hostkit_tun::DeviceMode::Tun
                });
                if tap {
                    d.mac = l.mac.map(|m| crate::spec::MacAddr(m).to_string());
                }
            }
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
fn rule_status(nl: &Netlink, devs: &[String; 2]) -> Result<Vec<RuleStatus>, NetlinkError> {
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
fn table_routes(nl: &Netlink, table: u32) -> Result<Vec<String>, NetlinkError> {
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
            lines.push(format!(
                "{} {dst} dev {dev}",
                format!("{:?}", r.kind).to_lowercase()
            ));
        }
    }
    Ok(lines)
}

/// For each address: is its local route in table `local`, in the tunnel's table, or both.
fn moved_status(
    nl: &Netlink,
    addrs: &[(IpAddr, String)],
    table: u32,
) -> Result<Vec<MovedStatus>, NetlinkError> {
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
fn sysctl_status(recorded: Option<&TunnelState>) -> Vec<SysctlStatus> {
    let mut sysctls = Vec::new();
    for family in [Family::Ipv4, Family::Ipv6] {
        let key = nonlocal_bind_key(family);
        let before_up = recorded.and_then(|s| {
            s.undo.iter().find_map(|u| match u {
                crate::Undo::RestoreSysctl { key: k, value } if k == key => Some(value.clone()),
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
