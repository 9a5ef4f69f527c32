//! What `up` did, recorded as the steps that undo it; and the teardown that replays them
//! (newest first), keeps going past errors, and reports every item.

use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::netlink::{
    Family, LinkInfoSummary, Netlink, NetlinkError, TABLE_LOCAL, full_prefix, table_name,
};
use crate::spec::{MacAddr, SYSCTL_KEYS, TunnelSpec};
use crate::sysctl;

/// One recorded change, described by how to undo it. Every device entry carries the interface
/// index the device had when the change was made: teardown touches a device (or its routes and
/// addresses) only while the name still denotes that TUN device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "undo", rename_all = "kebab-case")]
pub enum Undo {
    /// Delete a device we created.
    DeleteLink {
        /// Device.
        dev: String,
        /// Its interface index at creation.
        ifindex: u32,
        /// Its kind at creation (`tun`).
        kind: String,
    },
    /// Bring down an existing device we brought up.
    LinkDown {
        /// Device.
        dev: String,
        /// Its interface index.
        ifindex: u32,
    },
    /// Put back an existing device's MTU.
    RestoreMtu {
        /// Device.
        dev: String,
        /// Its interface index.
        ifindex: u32,
        /// Previous MTU.
        mtu: u32,
    },
    /// Put back an existing device's transmit queue length.
    RestoreTxQueueLen {
        /// Device.
        dev: String,
        /// Its interface index.
        ifindex: u32,
        /// Previous length.
        len: u32,
    },
    /// Put back an existing TUN device's own flags (packet information, vnet header — the
    /// kernel keeps the last opener's) and, when known, its offloads. Done after our queues
    /// are closed.
    RestoreTunSettings {
        /// Device.
        dev: String,
        /// Its interface index.
        ifindex: u32,
        /// TUN or TAP (the device's type: opening it as the other fails).
        #[serde(default)]
        mode: hostkit_tun::DeviceMode,
        /// It had the packet-information header.
        pi: bool,
        /// It had `IFF_VNET_HDR`.
        vnet_hdr: bool,
        /// It is multi-queue.
        multi_queue: bool,
        /// Its offloads, when they can be known (0 for a device without a vnet header: offloads
        /// cannot be used without one); `None`: left as they are.
        offloads: Option<u32>,
    },
    /// Put back an existing TAP device's MAC address.
    RestoreMac {
        /// Device.
        dev: String,
        /// Its interface index.
        ifindex: u32,
        /// Its MAC address before `up`.
        mac: MacAddr,
    },
    /// Put back an existing device's IPv6 address-generation mode.
    RestoreAddrGenMode {
        /// Device.
        dev: String,
        /// Its interface index.
        ifindex: u32,
        /// Previous mode (`IN6_ADDR_GEN_MODE_*`).
        mode: u8,
    },
    /// Remove an address we added (with its peer for IPv4; a /128 for IPv6). Its local route
    /// goes with it, wherever it is.
    DelAddress {
        /// Device.
        dev: String,
        /// Its interface index.
        ifindex: u32,
        /// Local address.
        local: IpAddr,
        /// Peer (IPv4 point-to-point addresses).
        peer: Option<IpAddr>,
    },
    /// Remove the IPv6 peer route we added (`PEER/128 dev DEV src LOCAL`, table main).
    DelPeerRoute {
        /// Device.
        dev: String,
        /// Its interface index.
        ifindex: u32,
        /// The peer (destination).
        peer: IpAddr,
        /// This side's address (source).
        local: IpAddr,
    },
    /// IPv6 address that was there before `up` (its local route moved): delete and add it
    /// again with its own prefix and flags, so that the kernel itself re-creates its local
    /// route (metric 0, owned by the address) — a route added by hand would get metric 1024
    /// and outlive the address.
    ReAddAddress {
        /// Device.
        dev: String,
        /// Its interface index.
        ifindex: u32,
        /// The address.
        addr: IpAddr,
        /// Its prefix length.
        prefix_len: u8,
        /// Its peer, if any.
        peer: Option<IpAddr>,
        /// Its `IFA_F_*` flags that a user can set.
        flags: u32,
    },
    /// Put the kernel's local route back into table `local`.
    RestoreLocalRoute {
        /// Device.
        dev: String,
        /// Its interface index.
        ifindex: u32,
        /// Address.
        addr: IpAddr,
    },
    /// Remove the moved local route from our table.
    DelTableRoute {
        /// Device.
        dev: String,
        /// Its interface index (the route's output interface).
        ifindex: u32,
        /// Address.
        addr: IpAddr,
        /// Table.
        table: u32,
    },
    /// Remove the `iif DEV lookup TABLE` rule we added, with the priority it was given.
    DelRule {
        /// Device.
        dev: String,
        /// Family.
        family: Family,
        /// Table.
        table: u32,
        /// Its priority (`pref`).
        priority: u32,
    },
    /// Put a sysctl back.
    RestoreSysctl {
        /// Key.
        key: String,
        /// Previous value.
        value: String,
    },
}

impl Undo {
    /// The device the entry is about, if any.
    pub fn dev(&self) -> Option<&str> {
        match self {
            Undo::DeleteLink { dev, .. }
            | Undo::LinkDown { dev, .. }
            | Undo::RestoreMtu { dev, .. }
            | Undo::RestoreTxQueueLen { dev, .. }
            | Undo::RestoreMac { dev, .. }
            | Undo::DelAddress { dev, .. }
            | Undo::RestoreAddrGenMode { dev, .. }
            | Undo::RestoreTunSettings { dev, .. }
            | Undo::DelPeerRoute { dev, .. }
            | Undo::ReAddAddress { dev, .. }
            | Undo::RestoreLocalRoute { dev, .. }
            | Undo::DelTableRoute { dev, .. }
            | Undo::DelRule { dev, .. } => Some(dev),
            Undo::RestoreSysctl { .. } => None,
        }
    }
}

impl fmt::Display for Undo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Undo::DeleteLink { dev, .. } => write!(f, "delete device {dev}"),
            Undo::LinkDown { dev, .. } => write!(f, "set device {dev} down"),
            Undo::RestoreMtu { dev, mtu, .. } => write!(f, "restore mtu {mtu} on {dev}"),
            Undo::RestoreTxQueueLen { dev, len, .. } => {
                write!(f, "restore txqueuelen {len} on {dev}")
            }
            Undo::RestoreMac { dev, mac, .. } => write!(f, "restore address {mac} on {dev}"),
            Undo::DelAddress {
                dev, local, peer, ..
            } => match peer {
                Some(peer) => write!(f, "remove address {local} peer {peer} from {dev}"),
                None => write!(
                    f,
                    "remove address {local}/{} from {dev}",
                    full_prefix(local)
                ),
            },
            Undo::RestoreTunSettings {
                dev,
                pi,
                vnet_hdr,
                offloads,
                ..
            } => write!(
                f,
                "restore {dev}'s own settings (pi {}, vnet_hdr {}{})",
                on_off(*pi),
                on_off(*vnet_hdr),
                offloads
                    .map(|o| format!(", offloads {}", hostkit_tun::offload_names(o)))
                    .unwrap_or_default()
            ),
            Undo::RestoreAddrGenMode { dev, mode, .. } => write!(
                f,
                "restore addrgenmode {} on {dev}",
                addr_gen_mode_name(*mode)
            ),
            Undo::DelPeerRoute {
                dev, peer, local, ..
            } => write!(f, "remove route {peer} dev {dev} src {local}"),
            Undo::ReAddAddress {
                dev,
                addr,
                prefix_len,
                ..
            } => write!(
                f,
                "re-add address {addr}/{prefix_len} on {dev} (the kernel restores its local route)"
            ),
            Undo::RestoreLocalRoute { dev, addr, .. } => {
                write!(f, "restore route local {addr} dev {dev} table local")
            }
            Undo::DelTableRoute {
                dev, addr, table, ..
            } => {
                write!(f, "remove route local {addr} dev {dev} table {table}")
            }
            Undo::DelRule {
                dev, family, table, ..
            } => {
                write!(f, "remove {} rule iif {dev} lookup {table}", family.label())
            }
            Undo::RestoreSysctl { key, value } => write!(f, "restore {key}={value}"),
        }
    }
}

/// An undo entry of a state file that `up` cannot have written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("undo entry {index} ({entry}) is refused: {reason}; nothing was undone")]
pub struct RefusedEntry {
    /// Its position in the journal (0 = oldest).
    pub index: usize,
    /// The entry, as JSON.
    pub entry: String,
    /// Why.
    pub reason: String,
}

/// Checks a recorded journal against what `up` can have written for `spec`: the closed list of
/// sysctl keys (and numeric values), the tunnel's own two devices, their addresses and the
/// tunnel's table. Run before anything is undone from a file.
pub fn check_entries(spec: &TunnelSpec, undo: &[Undo]) -> Result<(), RefusedEntry> {
    // The settings the entries are checked against come from the same file: check them first.
    spec.revalidate().map_err(|e| RefusedEntry {
        index: 0,
        entry: serde_json::to_string(spec).unwrap_or_default(),
        reason: format!("the tunnel's settings: {e}"),
    })?;
    let devs = spec.devs();
    for (index, u) in undo.iter().enumerate() {
        let refuse = |reason: String| RefusedEntry {
            index,
            entry: serde_json::to_string(u).unwrap_or_else(|_| format!("{u:?}")),
            reason,
        };
        if let Some(dev) = u.dev() {
            if hostkit_tun::validate_name(dev).is_err() {
                return Err(refuse(format!("{dev:?} is not a valid device name")));
            }
            if !devs.contains(&dev) {
                return Err(refuse(format!(
                    "device {dev:?} is not one of the tunnel's devices ({} and {})",
                    devs[0], devs[1]
                )));
            }
        }
        let side = u
            .dev()
            .and_then(|d| devs.iter().position(|x| *x == d))
            .unwrap_or(0);
        let own = &spec.ends[side].addrs;
        let other = &spec.ends[1 - side].addrs;
        match u {
            Undo::RestoreSysctl { key, value } => {
                if !SYSCTL_KEYS.contains(&key.as_str()) {
                    return Err(refuse(format!(
                        "sysctl key {key:?} is not one that `up` writes ({})",
                        SYSCTL_KEYS.join(", ")
                    )));
                }
                if value.is_empty()
                    || value.len() > 10
                    || !value.bytes().all(|b| b.is_ascii_digit())
                {
                    return Err(refuse(format!("sysctl value {value:?} is not a number")));
                }
            }
            Undo::DeleteLink { kind, .. } if kind != "tun" => {
                return Err(refuse(format!(
                    "`up` only creates TUN devices, not {kind:?}"
                )));
            }
            Undo::RestoreMtu { mtu, .. } if !(68..=65535).contains(mtu) => {
                return Err(refuse(format!("MTU {mtu} is out of range")));
            }
            Undo::RestoreMac { .. } if spec.mode != hostkit_tun::DeviceMode::Tap => {
                return Err(refuse("a TUN device has no MAC address".into()));
            }
            Undo::RestoreTunSettings { mode, .. } if *mode != spec.mode => {
                return Err(refuse(format!(
                    "the tunnel's devices are {} devices, not {}",
                    spec.mode.label(),
                    mode.label()
                )));
            }
            Undo::DelAddress { local, peer, .. }
                if !own.contains(local) || peer.is_some_and(|p| !other.contains(&p)) =>
            {
                return Err(refuse("not an address of the tunnel".into()));
            }
            Undo::DelPeerRoute { local, peer, .. }
                if !own.contains(local) || !other.contains(peer) =>
            {
                return Err(refuse("not a peer route of the tunnel".into()));
            }
            Undo::ReAddAddress {
                addr, prefix_len, ..
            } if !own.contains(addr) || *prefix_len > full_prefix(addr) => {
                return Err(refuse(format!("{addr} is not the device's tunnel address")));
            }
            Undo::RestoreTunSettings {
                offloads: Some(o), ..
            } if *o & !0x7f != 0 => {
                return Err(refuse(format!("offloads {o:#x} are not TUN offload flags")));
            }
            Undo::RestoreAddrGenMode { mode, .. } if *mode > 3 => {
                return Err(refuse(format!("addrgenmode {mode} is not a mode")));
            }
            Undo::RestoreLocalRoute { addr, .. } if !own.contains(addr) => {
                return Err(refuse(format!("{addr} is not the device's tunnel address")));
            }
            Undo::DelTableRoute { addr, table, .. }
                if !own.contains(addr) || *table != spec.table =>
            {
                return Err(refuse("not a route `up` moves for this tunnel".into()));
            }
            Undo::DelRule { table, .. } if *table != spec.table => {
                return Err(refuse(format!(
                    "table {table} is not the tunnel's table {}",
                    spec.table
                )));
            }
            _ => {}
        }
    }
    Ok(())
}

/// How undoing one item went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Undone now.
    Done,
    /// Nothing to do: already gone (e.g. the device vanished with the relay).
    AlreadyGone,
    /// Not ours any more (the name now denotes another device, a route points elsewhere): left
    /// alone, with the reason.
    LeftAlone(String),
    /// Failed; teardown went on with the rest.
    Failed(String),
}

/// One line of a teardown report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TeardownItem {
    /// What was undone.
    pub undo: Undo,
    /// How it went.
    pub outcome: Outcome,
}

/// Sysctls that other running tunnels of the namespace still need: `(key, who)`.
pub type KeepSysctls = [(String, String)];

/// Undoes `undo` newest-first, continuing past failures; reports every item. A sysctl that
/// another running tunnel still needs (`keep`) is left as it is: that tunnel recorded the
/// value from before the first tunnel, and whichever leaves last puts it back.
pub fn teardown(nl: &Netlink, undo: &[Undo], keep: &KeepSysctls) -> Vec<TeardownItem> {
    undo.iter()
        .rev()
        .map(|u| TeardownItem {
            undo: u.clone(),
            outcome: match u {
                Undo::RestoreSysctl { key, .. }
                    if let Some((_, who)) = keep.iter().find(|(k, _)| k == key) =>
                {
                    Outcome::LeftAlone(format!("still needed by the tunnel {who}"))
                }
                _ => match undo_one(nl, u) {
                    Ok(Undone::Done) => Outcome::Done,
                    Ok(Undone::Nothing) => Outcome::AlreadyGone,
                    Ok(Undone::NotOurs(why)) => Outcome::LeftAlone(why),
                    Err(e) if e.is_gone() => Outcome::AlreadyGone,
                    Err(e) => Outcome::Failed(e.to_string()),
                },
            },
        })
        .collect()
}

/// The items of a report that failed, as `what: why` lines.
pub fn failures(report: &[TeardownItem]) -> Vec<String> {
    report
        .iter()
        .filter_map(|i| match &i.outcome {
            Outcome::Failed(e) => Some(format!("{}: {e}", i.undo)),
            _ => None,
        })
        .collect()
}

fn sysctl_err(e: std::io::Error, op: &str) -> NetlinkError {
    NetlinkError {
        op: op.to_string(),
        message: e.to_string(),
        errno: e.raw_os_error(),
    }
}

/// What undoing one item did.
enum Undone {
    Done,
    Nothing,
    NotOurs(String),
}

/// The device `dev` if it is still the TUN device recorded with `ifindex`: `Ok(None)` if the
/// name is gone, `Err(why)` if the name now denotes another device.
fn recorded_link(
    nl: &Netlink,
    dev: &str,
    ifindex: u32,
) -> Result<Result<Option<LinkInfoSummary>, String>, NetlinkError> {
    let Some(link) = nl.link_by_name(dev)? else {
        return Ok(Ok(None));
    };
    if link.index != ifindex {
        return Ok(Err(format!(
            "{dev} is now interface {} (recorded {ifindex}): not the device `up` configured",
            link.index
        )));
    }
    if link.kind.as_deref() != Some("tun") {
        return Ok(Err(format!(
            "{dev} is now a {} device, not the TUN device `up` configured",
            link.kind.as_deref().unwrap_or("kindless")
        )));
    }
    Ok(Ok(Some(link)))
}

/// Whether `addr` is on device `index` but its local route is missing from table `local`
/// (what the kernel owns again once the tunnel lets go of it).
fn lacks_local_route(nl: &Netlink, addr: IpAddr, index: u32) -> Result<bool, NetlinkError> {
    let present = nl.addresses(Some(index))?.iter().any(|a| a.local == addr);
    Ok(present
        && nl
            .find_local_route(addr, TABLE_LOCAL, Some(index))?
            .is_none())
}

/// Undoes one item.
fn undo_one(nl: &Netlink, u: &Undo) -> Result<Undone, NetlinkError> {
    let done = |r: Result<(), NetlinkError>| r.map(|_| Undone::Done);
    // The recorded device, or the early answer when it is gone or not ours.
    macro_rules! link {
        ($dev:expr, $ifindex:expr) => {
            match recorded_link(nl, $dev, *$ifindex)? {
                Ok(Some(l)) => l,
                Ok(None) => return Ok(Undone::Nothing),
                Err(why) => return Ok(Undone::NotOurs(why)),
            }
        };
    }
    match u {
        Undo::DeleteLink { dev, ifindex, .. } => {
            let l = link!(dev, ifindex);
            done(nl.delete_link(l.index, dev))
        }
        Undo::LinkDown { dev, ifindex } => {
            let l = link!(dev, ifindex);
            if !l.up {
                return Ok(Undone::Nothing);
            }
            done(nl.set_link_down(l.index, dev))
        }
        Undo::RestoreMtu { dev, ifindex, mtu } => {
            let l = link!(dev, ifindex);
            if l.mtu == Some(*mtu) {
                return Ok(Undone::Nothing);
            }
            done(nl.set_link_mtu(l.index, dev, *mtu))
        }
        Undo::RestoreTxQueueLen { dev, ifindex, len } => {
            let l = link!(dev, ifindex);
            if l.txqueuelen == Some(*len) {
                return Ok(Undone::Nothing);
            }
            done(nl.set_link_txqueuelen(l.index, dev, *len))
        }
        // An address already gone is the kernel's EADDRNOTAVAIL: `teardown` reports it so.
        Undo::DelAddress {
            dev,
            ifindex,
            local,
            peer,
        } => {
            let l = link!(dev, ifindex);
            done(nl.delete_address(l.index, dev, *local, full_prefix(local), *peer))
        }
        Undo::RestoreMac { dev, ifindex, mac } => {
            let l = link!(dev, ifindex);
            if l.mac == Some(mac.0) {
                return Ok(Undone::Nothing);
            }
            done(nl.set_link_address(l.index, dev, mac.0))
        }
        Undo::RestoreTunSettings {
            dev,
            ifindex,
            mode,
            pi,
            vnet_hdr,
            multi_queue,
            offloads,
        } => {
            let l = link!(dev, ifindex);
            let now = l.tun.unwrap_or_default();
            if now.pi == *pi && now.vnet_hdr == *vnet_hdr && offloads.is_none() {
                return Ok(Undone::Nothing);
            }
            hostkit_tun::TunDevice::restore_settings(
                dev,
                *mode,
                *pi,
                *vnet_hdr,
                *multi_queue,
                *offloads,
            )
            .map_err(|e| NetlinkError {
                op: format!("restore the settings of {dev}"),
                message: e.to_string(),
                errno: None,
            })?;
            Ok(Undone::Done)
        }
        Undo::RestoreAddrGenMode { dev, ifindex, mode } => {
            let l = link!(dev, ifindex);
            if l.addr_gen_mode.is_none_or(|m| m == *mode) {
                return Ok(Undone::Nothing);
            }
            done(nl.set_addr_gen_mode(l.index, dev, *mode))
        }
        Undo::DelPeerRoute {
            dev,
            ifindex,
            peer,
            local,
        } => {
            let l = link!(dev, ifindex);
            match nl.find_peer_route(*peer, l.index)? {
                None => Ok(Undone::Nothing),
                Some(r) => done(nl.delete_route(&r, &format!("{peer} dev {dev} src {local}"))),
            }
        }
        Undo::ReAddAddress {
            dev,
            ifindex,
            addr,
            prefix_len,
            peer,
            flags,
        } => {
            let l = link!(dev, ifindex);
            if !lacks_local_route(nl, *addr, l.index)? {
                return Ok(Undone::Nothing);
            }
            nl.delete_address(l.index, dev, *addr, *prefix_len, *peer)?;
            done(nl.add_address(l.index, dev, *addr, *prefix_len, *peer, *flags))
        }
        Undo::RestoreLocalRoute { dev, ifindex, addr } => {
            let l = link!(dev, ifindex);
            if !lacks_local_route(nl, *addr, l.index)? {
                return Ok(Undone::Nothing);
            }
            done(nl.add_local_route(*addr, l.index, dev, TABLE_LOCAL))
        }
        Undo::DelTableRoute {
            dev,
            ifindex,
            addr,
            table,
        } => {
            let l = link!(dev, ifindex);
            match nl.find_local_route(*addr, *table, Some(l.index))? {
                None => Ok(Undone::Nothing),
                Some(r) => {
                    done(nl.delete_route(&r, &format!("local {addr} table {}", table_name(*table))))
                }
            }
        }
        Undo::DelRule {
            dev,
            family,
            table,
            priority,
        } => {
            let rules = nl.find_iif_rules(*family, dev, *table)?;
            match rules.iter().find(|r| r.priority == *priority) {
                Some(rule) => done(nl.delete_rule(rule)),
                None => Ok(Undone::Nothing),
            }
        }
        Undo::RestoreSysctl { key, value } => {
            let now = sysctl::read(key).map_err(|e| sysctl_err(e, "read sysctl"))?;
            if now == *value {
                return Ok(Undone::Nothing);
            }
            sysctl::write(key, value).map_err(|e| sysctl_err(e, "write sysctl"))?;
            Ok(Undone::Done)
        }
    }
}

fn addr_gen_mode_name(mode: u8) -> &'static str {
    match mode {
        0 => "eui64",
        1 => "none",
        2 => "stable_privacy",
        3 => "random",
        _ => "unknown",
    }
}

fn on_off(b: bool) -> &'static str {
    if b { "on" } else { "off" }
}
