//! What `up` did, recorded as the steps that undo it; and the teardown that replays them
//! (newest first), keeps going past errors, and reports every item.

use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::netlink::{Family, Netlink, NetlinkError, TABLE_LOCAL, table_name};
use crate::sysctl;

/// One recorded change, described by how to undo it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "undo", rename_all = "kebab-case")]
pub enum Undo {
    /// Delete a device we created.
    DeleteLink {
        /// Device.
        dev: String,
    },
    /// Bring down an existing device we brought up.
    LinkDown {
        /// Device.
        dev: String,
    },
    /// Put back an existing device's MTU.
    RestoreMtu {
        /// Device.
        dev: String,
        /// Previous MTU.
        mtu: u32,
    },
    /// Put back an existing device's transmit queue length.
    RestoreTxQueueLen {
        /// Device.
        dev: String,
        /// Previous length.
        len: u32,
    },
    /// Remove an address we added.
    DelAddress {
        /// Device.
        dev: String,
        /// Local address.
        local: IpAddr,
        /// Peer.
        peer: IpAddr,
    },
    /// Put the kernel's local route back into table `local`.
    RestoreLocalRoute {
        /// Device.
        dev: String,
        /// Address.
        addr: IpAddr,
    },
    /// Remove the moved local route from our table.
    DelTableRoute {
        /// Device.
        dev: String,
        /// Address.
        addr: IpAddr,
        /// Table.
        table: u32,
    },
    /// Remove an `iif DEV lookup TABLE` rule.
    DelRule {
        /// Device.
        dev: String,
        /// Family.
        family: Family,
        /// Table.
        table: u32,
    },
    /// Put a sysctl back.
    RestoreSysctl {
        /// Key.
        key: String,
        /// Previous value.
        value: String,
    },
}

impl fmt::Display for Undo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Undo::DeleteLink { dev } => write!(f, "delete device {dev}"),
            Undo::LinkDown { dev } => write!(f, "set device {dev} down"),
            Undo::RestoreMtu { dev, mtu } => write!(f, "restore mtu {mtu} on {dev}"),
            Undo::RestoreTxQueueLen { dev, len } => {
                write!(f, "restore txqueuelen {len} on {dev}")
            }
            Undo::DelAddress { dev, local, peer } => {
                write!(f, "remove address {local} peer {peer} from {dev}")
            }
            Undo::RestoreLocalRoute { dev, addr } => {
                write!(f, "restore route local {addr} dev {dev} table local")
            }
            Undo::DelTableRoute { dev, addr, table } => {
                write!(f, "remove route local {addr} dev {dev} table {table}")
            }
            Undo::DelRule { dev, family, table } => {
                write!(f, "remove {} rule iif {dev} lookup {table}", family.label())
            }
            Undo::RestoreSysctl { key, value } => write!(f, "restore {key}={value}"),
        }
    }
}

/// How undoing one item went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Undone now.
    Done,
    /// Nothing to do: already gone (e.g. the device vanished with the relay).
    AlreadyGone,
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

/// Undoes `undo` newest-first, continuing past failures; reports every item.
pub fn teardown(nl: &Netlink, undo: &[Undo]) -> Vec<TeardownItem> {
    undo.iter()
        .rev()
        .map(|u| TeardownItem {
            undo: u.clone(),
            outcome: match undo_one(nl, u) {
                Ok(true) => Outcome::Done,
                Ok(false) => Outcome::AlreadyGone,
                Err(e) if e.is_gone() => Outcome::AlreadyGone,
                Err(e) => Outcome::Failed(e.to_string()),
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

/// Undoes one item; `Ok(false)` when there was nothing left to undo.
fn undo_one(nl: &Netlink, u: &Undo) -> Result<bool, NetlinkError> {
    let link = |dev: &str| nl.link_by_name(dev);
    match u {
        Undo::DeleteLink { dev } => match link(dev)? {
            None => Ok(false),
            Some(l) => nl.delete_link(l.index, dev).map(|_| true),
        },
        Undo::LinkDown { dev } => match link(dev)? {
            Some(l) if l.up => nl.set_link_down(l.index, dev).map(|_| true),
            _ => Ok(false),
        },
        Undo::RestoreMtu { dev, mtu } => match link(dev)? {
            Some(l) if l.mtu != Some(*mtu) => nl.set_link_mtu(l.index, dev, *mtu).map(|_| true),
            _ => Ok(false),
        },
        Undo::RestoreTxQueueLen { dev, len } => match link(dev)? {
            Some(l) if l.txqueuelen != Some(*len) => {
                nl.set_link_txqueuelen(l.index, dev, *len).map(|_| true)
            }
            _ => Ok(false),
        },
        // An address already gone is the kernel's EADDRNOTAVAIL: `teardown` reports it so.
        Undo::DelAddress { dev, local, peer } => match link(dev)? {
            None => Ok(false),
            Some(l) => nl
                .delete_peer_address(l.index, dev, *local, *peer)
                .map(|_| true),
        },
        Undo::RestoreLocalRoute { dev, addr } => {
            let Some(l) = link(dev)? else {
                return Ok(false);
            };
            let has_addr = nl
                .addresses(Some(l.index))?
                .iter()
                .any(|a| a.local == *addr);
            if !has_addr
                || nl
                    .find_local_route(*addr, TABLE_LOCAL, Some(l.index))?
                    .is_some()
            {
                return Ok(false);
            }
            nl.add_local_route(*addr, l.index, dev, TABLE_LOCAL)
                .map(|_| true)
        }
        Undo::DelTableRoute { dev, addr, table } => {
            match nl.find_local_route(*addr, *table, link(dev)?.map(|l| l.index))? {
                None => Ok(false),
                Some(r) => nl
                    .delete_route(&r, &format!("local {addr} table {}", table_name(*table)))
                    .map(|_| true),
            }
        }
        Undo::DelRule { dev, family, table } => {
            let rules = nl.find_iif_rules(*family, dev, *table)?;
            let Some(rule) = rules.first() else {
                return Ok(false);
            };
            nl.delete_rule(rule).map(|_| true)
        }
        Undo::RestoreSysctl { key, value } => {
            let now = sysctl::read(key).map_err(|e| sysctl_err(e, "read sysctl"))?;
            if now == *value {
                return Ok(false);
            }
            sysctl::write(key, value).map_err(|e| sysctl_err(e, "write sysctl"))?;
            Ok(true)
        }
    }
}
