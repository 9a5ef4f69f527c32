//! Keeping the tunnel's promise while the relay runs.
//!
//! The kernel undoes parts of the routing rewrite on its own (and people do): `ip link set tun0 down; … up`
//! puts an address's local route back into table `local` (and, for IPv6, deletes the address
//! and its peer route), and from then on traffic silently bypasses the relay. The [`Watcher`]
//! subscribes to rtnetlink's link, address, route and rule multicast groups, and when an event
//! concerns the tunnel it schedules — debounced — a [`Watcher::reconcile`] pass: the tunnel's
//! state is read back from the kernel and whatever drifted from the plan is put back, each
//! change journalled exactly as at setup.
//!
//! A pass works from the kernel's state, not from the events, and does nothing when nothing
//! drifted: the events caused by its own changes lead to at most one more pass that finds
//! nothing to do, so the watcher cannot loop on itself. Someone fighting it is bounded too:
//! more than [`MAX_REPAIR_PASSES`] repairing passes within [`REPAIR_WINDOW`] is an error.

use std::collections::VecDeque;
use std::fmt;
use std::net::IpAddr;
use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, Instant};

use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::address::AddressFlags;
use netlink_packet_route::rule::RuleAttribute;
use rtnetlink::packet_core::{NetlinkMessage, NetlinkPayload};
use rtnetlink::sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

use crate::netlink::{
    AddrSummary, Family, LinkInfoSummary, Netlink, NetlinkError, TABLE_LOCAL, addr_summary,
    route_summary,
};
use crate::setup::Journal;
use crate::spec::{Step, TunnelSpec};
use crate::undo::Undo;

/// The multicast groups: links, addresses, routes and rules of both families.
const GROUPS: [u32; 7] = [
    libc::RTNLGRP_LINK,
    libc::RTNLGRP_IPV4_IFADDR,
    libc::RTNLGRP_IPV4_ROUTE,
    libc::RTNLGRP_IPV4_RULE,
    libc::RTNLGRP_IPV6_IFADDR,
    libc::RTNLGRP_IPV6_ROUTE,
    libc::RTNLGRP_IPV6_RULE,
];
/// A burst of events is handled once it has been quiet this long…
const QUIET: Duration = Duration::from_millis(50);
/// …or this long after its first event, whichever comes first.
const MAX_DELAY: Duration = Duration::from_millis(300);
/// At most this many datagrams are read per wake-up (the rest wait for the next one).
const MAX_READS: usize = 256;
/// Receive buffer of the event socket (an overflow is not fatal: it forces a full pass).
const RCVBUF: usize = 1 << 20;
/// More repairing passes than this within [`REPAIR_WINDOW`]: something else manages the
/// devices, and the relay stops rather than fight it.
pub(crate) const MAX_REPAIR_PASSES: usize = 20;
/// See [`MAX_REPAIR_PASSES`].
pub(crate) const REPAIR_WINDOW: Duration = Duration::from_secs(10);

/// Why the tunnel cannot be kept: the relay must stop and everything be undone.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// A tunnel device was deleted (or renamed) under the relay.
    #[error("{dev} was deleted or renamed under the relay")]
    DeviceGone {
        /// Device.
        dev: String,
    },
    /// The name now denotes another device.
    #[error("{dev} was replaced under the relay (it is now interface {now}, not {was})")]
    DeviceReplaced {
        /// Device.
        dev: String,
        /// The interface index `up` configured.
        was: u32,
        /// The index the name has now.
        now: u32,
    },
    /// A tunnel address now (also) sits on another interface.
    #[error(
        "{addr} of {wanted} is now on {dev} too; a tunnel end must be an address of its own device only, and hostkit does not take it back"
    )]
    AddressTaken {
        /// The address.
        addr: IpAddr,
        /// Where it is now.
        dev: String,
        /// The tunnel device it belongs to.
        wanted: String,
    },
    /// An address that was on the device before `up` was removed: not ours to add again.
    #[error(
        "{addr}, which {dev} had before `up`, was removed under the relay; hostkit does not add again what it did not add"
    )]
    AddressNotOurs {
        /// The address.
        addr: IpAddr,
        /// Device.
        dev: String,
    },
    /// An `iif DEV lookup TABLE` rule that was there before `up` was removed.
    #[error(
        "the {family} rule iif {dev} lookup {table}, which was there before `up`, was removed under the relay; hostkit does not add again what it did not add"
    )]
    RuleNotOurs {
        /// Device.
        dev: String,
        /// `IPv4`/`IPv6`.
        family: &'static str,
        /// Table.
        table: u32,
    },
    /// Something keeps undoing the tunnel's configuration.
    #[error(
        "the tunnel's configuration was undone and repaired {passes} times within {} s; something else manages {devs}",
        REPAIR_WINDOW.as_secs()
    )]
    Fighting {
        /// Repairing passes in the window.
        passes: usize,
        /// The tunnel's devices.
        devs: String,
    },
    /// A netlink operation failed while repairing.
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    /// The event socket failed.
    #[error("reading rtnetlink events failed: {0}")]
    Socket(std::io::Error),
    /// The journal could not be written.
    #[error("cannot record the change in the state file: {0}")]
    Journal(std::io::Error),
}

/// One thing a pass put back; its `Display` is the line logged for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Repair {
    /// A device hostkit brought up was down.
    LinkUp {
        /// Device.
        dev: String,
    },
    /// A tunnel address was gone.
    Address {
        /// Device.
        dev: String,
        /// The address.
        local: IpAddr,
        /// Its peer (IPv4).
        peer: Option<IpAddr>,
        /// Its prefix length.
        prefix_len: u8,
        /// It was on the device before `up` (put back as it was).
        before: bool,
    },
    /// The IPv6 peer route was gone.
    PeerRoute {
        /// Device.
        dev: String,
        /// Destination.
        peer: IpAddr,
        /// Source.
        local: IpAddr,
    },
    /// The kernel had put an address's local route back into table `local`.
    LocalRouteMoved {
        /// Device.
        dev: String,
        /// The address.
        addr: IpAddr,
        /// The tunnel's table.
        table: u32,
    },
    /// The tunnel's `iif DEV lookup TABLE` rule was gone.
    Rule {
        /// Device.
        dev: String,
        /// Family.
        family: Family,
        /// Table.
        table: u32,
        /// Its priority (the one it had).
        priority: u32,
    },
    /// The local route was missing from the tunnel's table (and not in table `local`).
    TableRoute {
        /// Device.
        dev: String,
        /// The address.
        addr: IpAddr,
        /// The tunnel's table.
        table: u32,
    },
}

impl fmt::Display for Repair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Repair::LinkUp { dev } => write!(f, "{dev} went down: brought it up again"),
            Repair::Address {
                dev,
                local,
                peer,
                prefix_len,
                before,
            } => match (peer, before) {
                (_, true) => write!(
                    f,
                    "{dev} lost {local}: added it again as it was before `up` ({local}/{prefix_len})"
                ),
                (Some(peer), false) => {
                    write!(f, "{dev} lost {local} peer {peer}: added it again")
                }
                (None, false) => write!(
                    f,
                    "{dev} lost {local}: added it again (nodad noprefixroute)"
                ),
            },
            Repair::PeerRoute { dev, peer, local } => {
                write!(f, "{dev} lost the route {peer} src {local}: added it again")
            }
            Repair::LocalRouteMoved { dev, addr, table } => write!(
                f,
                "{dev}: moved local {addr} back to table {table} (the kernel had put it into table local again)"
            ),
            Repair::Rule {
                dev,
                family,
                table,
                priority,
            } => write!(
                f,
                "{dev}: the {} rule iif {dev} lookup {table} was removed: added it again (pref {priority})",
                family.label()
            ),
            Repair::TableRoute { dev, addr, table } => write!(
                f,
                "{dev}: local {addr} was missing from table {table}: added it again"
            ),
        }
    }
}

/// The event subscription and the plan it keeps.
pub struct Watcher {
    socket: Socket,
    spec: TunnelSpec,
    created: [bool; 2],
    ifindex: [u32; 2],
    /// The plan's steps the watcher keeps (addresses, link up, peer routes, local routes).
    kept: Vec<Step>,
    /// When the next pass is due (`None`: nothing pending).
    due: Option<Instant>,
    /// When the pending burst began.
    first: Option<Instant>,
    /// When recent repairing passes ran.
    passes: VecDeque<Instant>,
    buf: Vec<u8>,
}

impl fmt::Debug for Watcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Watcher")
            .field("devs", &self.spec.devs())
            .field("ifindex", &self.ifindex)
            .field("due", &self.due)
            .finish_non_exhaustive()
    }
}

impl Watcher {
    /// Subscribes (in the current network namespace) to the events that concern the tunnel
    /// `spec`, whose devices have interface indexes `ifindex` (`created`: whether `up` created
    /// each). A first pass is due at once: events from before the subscription are not lost.
    pub fn new(spec: &TunnelSpec, created: [bool; 2], ifindex: [u32; 2]) -> std::io::Result<Self> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind(&SocketAddr::new(0, 0))?;
        for g in GROUPS {
            socket.add_membership(g)?;
        }
        // Not fatal if refused (a smaller buffer only overflows sooner).
        let _ = socket.set_rx_buf_sz(RCVBUF);
        socket.set_non_blocking(true)?;
        let kept = spec
            .plan(created)
            .into_iter()
            .filter(|s| {
                matches!(
                    s,
                    Step::AddAddress { .. }
                        | Step::LinkUp { .. }
                        | Step::AddPeerRoute { .. }
                        | Step::MoveLocalRoute { .. }
                        | Step::AddRule { .. }
                )
            })
            .collect();
        let now = Instant::now();
        Ok(Watcher {
            socket,
            spec: spec.clone(),
            created,
            ifindex,
            kept,
            due: Some(now),
            first: Some(now),
            passes: VecDeque::new(),
            buf: Vec::with_capacity(1 << 16),
        })
    }

    /// The socket to poll for readability.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }

    /// How long until the next pass is due (`None`: none pending).
    pub fn timeout(&self) -> Option<Duration> {
        self.due
            .map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// Whether a pass is due now.
    pub fn is_due(&self) -> bool {
        self.due.is_some_and(|d| d <= Instant::now())
    }

    /// Asks for a pass soon (e.g. when the path check saw the tunnel broken).
    pub fn poke(&mut self) {
        self.schedule(Instant::now());
    }

    fn schedule(&mut self, now: Instant) {
        let first = *self.first.get_or_insert(now);
        self.due = Some((now + QUIET).min(first + MAX_DELAY));
    }

    /// Reads the pending events (at most `MAX_READS` datagrams) and schedules a pass if one
    /// concerns the tunnel. Returns how many events concerned it.
    pub fn drain(&mut self) -> Result<usize, WatchError> {
        let mut relevant = 0;
        for _ in 0..MAX_READS {
            self.buf.clear();
            match self.socket.recv(&mut self.buf, 0) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                // Events were lost: read the whole state back.
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    log::debug!("rtnetlink event socket overflowed: full pass");
                    relevant += 1;
                    continue;
                }
                Err(e) => return Err(WatchError::Socket(e)),
            }
            relevant += self.relevant_in_datagram();
        }
        if relevant > 0 {
            self.schedule(Instant::now());
        }
        Ok(relevant)
    }

    /// Counts the messages of the datagram in `buf` that concern the tunnel.
    fn relevant_in_datagram(&self) -> usize {
        let mut n = 0;
        let mut off = 0;
        // Bounded: every message advances by at least its 16-byte header.
        while off + 16 <= self.buf.len() {
            let len = u32::from_ne_bytes([
                self.buf[off],
                self.buf[off + 1],
                self.buf[off + 2],
                self.buf[off + 3],
            ]) as usize;
            if len < 16 || off + len > self.buf.len() {
                break;
            }
            let msg = &self.buf[off..off + len];
            match NetlinkMessage::<RouteNetlinkMessage>::deserialize(msg) {
                Ok(m) => {
                    if let NetlinkPayload::InnerMessage(inner) = m.payload
                        && self.concerns(&inner)
                    {
                        log::debug!("rtnetlink event about the tunnel: {}", kind_of(&inner));
                        n += 1;
                    }
                }
                // Not understood: a pass costs little, a missed drift much.
                Err(e) => {
                    log::debug!("undecodable rtnetlink event ({e}): full pass");
                    n += 1;
                }
            }
            off += (len + 3) & !3;
        }
        n
    }

    /// Whether an event concerns the tunnel: its devices, or its addresses (anywhere).
    fn concerns(&self, msg: &RouteNetlinkMessage) -> bool {
        let ours = |a: &IpAddr| self.spec.ends.iter().any(|e| e.addrs.contains(a));
        match msg {
            RouteNetlinkMessage::NewLink(l) | RouteNetlinkMessage::DelLink(l) => {
                self.ifindex.contains(&l.header.index)
            }
            RouteNetlinkMessage::NewAddress(a) | RouteNetlinkMessage::DelAddress(a) => {
                self.ifindex.contains(&a.header.index)
                    || addr_summary(a).is_some_and(|s| ours(&s.local))
            }
            RouteNetlinkMessage::NewRoute(r) | RouteNetlinkMessage::DelRoute(r) => {
                let r = route_summary(r.clone());
                r.oif.is_some_and(|i| self.ifindex.contains(&i))
                    || r.dst.as_ref().is_some_and(|d| {
                        ours(d) && (r.table == TABLE_LOCAL || r.table == self.spec.table)
                    })
            }
            RouteNetlinkMessage::NewRule(r) | RouteNetlinkMessage::DelRule(r) => {
                r.attributes.iter().any(|a| {
                    matches!(a, RuleAttribute::Iifname(n) if self.spec.devs().contains(&n.as_str()))
                })
            }
            _ => false,
        }
    }

    /// One pass: reads the tunnel's state back and puts back what drifted, journalling each
    /// new undo entry before the change. Returns what it repaired (empty: nothing drifted).
    pub fn reconcile(
        &mut self,
        nl: &Netlink,
        undo: &mut Vec<Undo>,
        journal: Journal<'_>,
    ) -> Result<Vec<Repair>, WatchError> {
        self.due = None;
        self.first = None;
        let repairs = self.pass(nl, undo, journal)?;
        if !repairs.is_empty() {
            let now = Instant::now();
            self.passes.push_back(now);
            while self
                .passes
                .front()
                .is_some_and(|t| now.duration_since(*t) > REPAIR_WINDOW)
            {
                self.passes.pop_front();
            }
            if self.passes.len() > MAX_REPAIR_PASSES {
                return Err(WatchError::Fighting {
                    passes: self.passes.len(),
                    devs: self.spec.devs().join(" and "),
                });
            }
            // Some repairs let the kernel act later (an IPv6 address's local route): look
            // again soon even if no event says so.
            self.schedule(now);
        }
        Ok(repairs)
    }

    fn side(&self, dev: &str) -> usize {
        self.spec.devs().iter().position(|d| *d == dev).unwrap_or(0)
    }

    fn pass(
        &mut self,
        nl: &Netlink,
        undo: &mut Vec<Undo>,
        journal: Journal<'_>,
    ) -> Result<Vec<Repair>, WatchError> {
        // The devices first: nothing is repaired on a tunnel that lost one.
        let links = nl.links()?;
        let mut up = [false; 2];
        for (side, dev) in self.spec.devs().into_iter().enumerate() {
            let link = links.iter().find(|l| l.name == dev);
            match link {
                None => return Err(WatchError::DeviceGone { dev: dev.into() }),
                Some(LinkInfoSummary { index, kind, .. })
                    if *index != self.ifindex[side] || kind.as_deref() != Some("tun") =>
                {
                    return Err(WatchError::DeviceReplaced {
                        dev: dev.into(),
                        was: self.ifindex[side],
                        now: *index,
                    });
                }
                Some(l) => up[side] = l.up,
            }
        }
        let mut addrs: Vec<AddrSummary> = nl.addresses(None)?;
        let mut record = |undo: &mut Vec<Undo>, u: Undo| -> Result<(), WatchError> {
            if !undo.contains(&u) {
                undo.push(u);
                journal(undo).map_err(WatchError::Journal)?;
            }
            Ok(())
        };
        let mut repairs = Vec::new();
        for step in self.kept.clone() {
            match step {
                Step::LinkUp { dev } => {
                    let side = self.side(&dev);
                    let idx = self.ifindex[side];
                    // Only a device hostkit brought up: created, or recorded as brought up.
                    let ours = self.created[side]
                        || undo.contains(&Undo::LinkDown {
                            dev: dev.clone(),
                            ifindex: idx,
                        });
                    if !up[side] && ours {
                        nl.set_link_up(idx, &dev)?;
                        up[side] = true;
                        repairs.push(Repair::LinkUp { dev });
                    }
                }
                Step::AddAddress { dev, local, peer } => {
                    let idx = self.ifindex[self.side(&dev)];
                    // On another interface too, its local route there takes the traffic.
                    if let Some(other) = addrs.iter().find(|a| a.local == local && a.index != idx) {
                        let name = links
                            .iter()
                            .find(|l| l.index == other.index)
                            .map(|l| l.name.clone())
                            .unwrap_or_else(|| format!("interface {}", other.index));
                        return Err(WatchError::AddressTaken {
                            addr: local,
                            dev: name,
                            wanted: dev,
                        });
                    }
                    if addrs.iter().any(|a| a.index == idx && a.local == local) {
                        continue;
                    }
                    let added_by_us = undo.iter().any(|u| {
                        matches!(u, Undo::DelAddress { dev: d, ifindex: i, local: l, .. }
                            if *d == dev && *i == idx && *l == local)
                    });
                    // An IPv6 address that was there before (the kernel drops IPv6 addresses
                    // on link down): put back as it was; the journal already says how.
                    let before = undo.iter().find_map(|u| match u {
                        Undo::ReAddAddress {
                            dev: d,
                            ifindex: i,
                            addr,
                            prefix_len,
                            peer,
                            flags,
                        } if *d == dev && *i == idx && *addr == local => {
                            Some((*prefix_len, *peer, *flags))
                        }
                        _ => None,
                    });
                    let repair_peer;
                    let mut prefix_len = crate::netlink::full_prefix(&local);
                    if added_by_us {
                        match local {
                            IpAddr::V4(_) => {
                                nl.add_peer_address(idx, &dev, local, peer)?;
                                repair_peer = Some(peer);
                            }
                            IpAddr::V6(_) => {
                                nl.add_address(
                                    idx,
                                    &dev,
                                    local,
                                    128,
                                    None,
                                    (AddressFlags::Nodad | AddressFlags::Noprefixroute).bits(),
                                )?;
                                repair_peer = None;
                            }
                        }
                    } else if let Some((len, p, flags)) = before {
                        nl.add_address(idx, &dev, local, len, p, flags)?;
                        repair_peer = p;
                        prefix_len = len;
                    } else {
                        return Err(WatchError::AddressNotOurs { addr: local, dev });
                    }
                    addrs.push(AddrSummary {
                        index: idx,
                        local,
                        peer: repair_peer,
                        prefix_len,
                        flags: 0,
                    });
                    repairs.push(Repair::Address {
                        dev,
                        local,
                        peer: repair_peer,
                        prefix_len,
                        before: !added_by_us,
                    });
                }
                Step::AddPeerRoute { dev, local, peer } => {
                    let side = self.side(&dev);
                    let idx = self.ifindex[side];
                    let has_local = addrs.iter().any(|a| a.index == idx && a.local == local);
                    if !up[side] || !has_local {
                        continue;
                    }
                    let entry = Undo::DelPeerRoute {
                        dev: dev.clone(),
                        ifindex: idx,
                        peer,
                        local,
                    };
                    match nl.find_peer_route(peer, idx)? {
                        Some(r) if r.prefsrc == Some(local) => continue,
                        // The kernel clears the source of routes whose source address was
                        // removed: ours is replaced, someone else's left alone (the path
                        // check reports it).
                        Some(r) if undo.contains(&entry) => nl.delete_route(
                            &r,
                            &format!("{peer} dev {dev} (its source {local} was cleared)"),
                        )?,
                        Some(_) => continue,
                        None => record(undo, entry)?,
                    }
                    nl.add_peer_route(peer, local, idx, &dev)?;
                    repairs.push(Repair::PeerRoute { dev, peer, local });
                }
                Step::MoveLocalRoute { dev, addr, table } => {
                    let side = self.side(&dev);
                    let idx = self.ifindex[side];
                    let mut moved = false;
                    if let Some(route) = nl.find_local_route(addr, TABLE_LOCAL, Some(idx))? {
                        nl.delete_route(&route, &format!("local {addr} dev {dev} table local"))?;
                        moved = true;
                    }
                    let in_table = nl.find_local_route(addr, table, Some(idx))?.is_some();
                    // Read the address again, after the route: the kernel removes an address
                    // and its local route under one lock, so a route seen missing because the
                    // address went is never put back from the pass's older snapshot.
                    let has_addr = !in_table
                        && up[side]
                        && nl
                            .addresses(Some(idx))?
                            .iter()
                            .any(|a| a.index == idx && a.local == addr);
                    if has_addr {
                        record(
                            undo,
                            Undo::DelTableRoute {
                                dev: dev.clone(),
                                ifindex: idx,
                                addr,
                                table,
                            },
                        )?;
                        nl.add_local_route(addr, idx, &dev, table)?;
                        if !moved {
                            repairs.push(Repair::TableRoute {
                                dev: dev.clone(),
                                addr,
                                table,
                            });
                        }
                    }
                    if moved {
                        repairs.push(Repair::LocalRouteMoved { dev, addr, table });
                    }
                }
                Step::AddRule { dev, family, table } => {
                    if !nl.find_iif_rules(family, &dev, table)?.is_empty() {
                        continue;
                    }
                    let priority = undo.iter().find_map(|u| match u {
                        Undo::DelRule {
                            dev: d,
                            family: f,
                            table: t,
                            priority,
                        } if *d == dev && *f == family && *t == table => Some(*priority),
                        _ => None,
                    });
                    let Some(priority) = priority else {
                        return Err(WatchError::RuleNotOurs {
                            dev,
                            family: family.label(),
                            table,
                        });
                    };
                    nl.add_iif_rule(family, &dev, table, priority)?;
                    repairs.push(Repair::Rule {
                        dev,
                        family,
                        table,
                        priority,
                    });
                }
                _ => {}
            }
        }
        Ok(repairs)
    }
}

fn kind_of(msg: &RouteNetlinkMessage) -> &'static str {
    match msg {
        RouteNetlinkMessage::NewLink(_) => "new link",
        RouteNetlinkMessage::DelLink(_) => "del link",
        RouteNetlinkMessage::NewAddress(_) => "new address",
        RouteNetlinkMessage::DelAddress(_) => "del address",
        RouteNetlinkMessage::NewRoute(_) => "new route",
        RouteNetlinkMessage::DelRoute(_) => "del route",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::SpecInput;
    use netlink_packet_route::address::AddressMessage;
    use netlink_packet_route::link::LinkMessage;
    use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteMessage};

    fn watcher() -> Watcher {
        let spec = TunnelSpec::new(SpecInput {
            devs: ["tun0".into(), "tun1".into()],
            table: 13,
            ..Default::default()
        })
        .unwrap();
        Watcher::new(&spec, [true, true], [7, 8]).expect("a NETLINK_ROUTE socket")
    }

    fn link(index: u32) -> RouteNetlinkMessage {
        let mut m = LinkMessage::default();
        m.header.index = index;
        RouteNetlinkMessage::NewLink(m)
    }

    fn address(index: u32, addr: &str) -> RouteNetlinkMessage {
        let mut m = AddressMessage::default();
        m.header.index = index;
        m.attributes
            .push(netlink_packet_route::address::AddressAttribute::Local(
                addr.parse().unwrap(),
            ));
        RouteNetlinkMessage::DelAddress(m)
    }

    fn route(table: u8, dst: &str, oif: u32) -> RouteNetlinkMessage {
        let mut m = RouteMessage::default();
        m.header.table = table;
        m.header.destination_prefix_length = 32;
        m.attributes
            .push(RouteAttribute::Destination(RouteAddress::Inet(
                dst.parse().unwrap(),
            )));
        m.attributes.push(RouteAttribute::Oif(oif));
        RouteNetlinkMessage::NewRoute(m)
    }

    #[test]
    fn only_events_about_the_tunnel_concern_it() {
        let w = watcher();
        assert!(w.concerns(&link(7)));
        assert!(w.concerns(&link(8)));
        assert!(!w.concerns(&link(9)), "another interface going down/up");
        assert!(w.concerns(&address(7, "10.0.0.1")));
        assert!(
            w.concerns(&address(3, "10.0.0.2")),
            "a tunnel address appearing elsewhere"
        );
        assert!(!w.concerns(&address(3, "192.168.7.1")));
        assert!(w.concerns(&route(255, "10.0.0.1", 7)));
        assert!(w.concerns(&route(255, "10.0.0.2", 1)));
        assert!(
            !w.concerns(&route(255, "192.168.9.9", 1)),
            "a user's own local route for another address"
        );
        assert!(!w.concerns(&route(254, "10.0.0.1", 1)));
        let rule = |iif: &str| {
            let mut m = netlink_packet_route::rule::RuleMessage::default();
            m.attributes.push(RuleAttribute::Iifname(iif.into()));
            RouteNetlinkMessage::DelRule(m)
        };
        assert!(w.concerns(&rule("tun1")));
        assert!(!w.concerns(&rule("eth0")), "someone else's rule");
    }

    #[test]
    fn a_pass_is_due_at_once_and_bursts_are_debounced() {
        let mut w = watcher();
        assert!(
            w.is_due(),
            "the first pass covers events before the subscription"
        );
        w.due = None;
        w.first = None;
        let t0 = Instant::now();
        w.schedule(t0);
        assert_eq!(w.due, Some(t0 + QUIET));
        // A long burst is handled no later than MAX_DELAY after its first event.
        w.schedule(t0 + Duration::from_millis(290));
        assert_eq!(w.due, Some(t0 + MAX_DELAY));
    }

    #[test]
    fn repairs_read_as_one_line_each() {
        let r = Repair::LocalRouteMoved {
            dev: "tun0".into(),
            addr: "10.0.0.1".parse().unwrap(),
            table: 13,
        };
        assert_eq!(
            r.to_string(),
            "tun0: moved local 10.0.0.1 back to table 13 (the kernel had put it into table local again)"
        );
    }
}
