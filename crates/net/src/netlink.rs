//! A small synchronous netlink layer over `rtnetlink`: one method per operation, named after it.
//!
//! Each `Netlink` owns a current-thread tokio runtime and one rtnetlink connection, created in
//! the calling thread's network namespace (enter the namespace first).

use std::net::IpAddr;

use futures::TryStreamExt;
use netlink_packet_route::AddressFamily;
use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressMessage};
use netlink_packet_route::link::{
    AfSpecInet6, AfSpecUnspec, In6AddrGenMode, InfoData, InfoKind, InfoTun, LinkAttribute,
    LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::rule::{RuleAction, RuleAttribute, RuleMessage};
use rtnetlink::packet_core::Nla;
use rtnetlink::{Handle, IpVersion, LinkUnspec, RouteMessageBuilder};

/// The kernel's `local` routing table.
pub(crate) const TABLE_LOCAL: u32 = 255;
/// The kernel's `main` routing table.
pub(crate) const TABLE_MAIN: u32 = 254;
/// The metric the kernel gives an IPv6 route added without one (`IP6_RT_PRIO_USER`); it also
/// turns an explicit metric 0 into this.
pub(crate) const IPV6_USER_METRIC: u32 = 1024;
/// `IN6_ADDR_GEN_MODE_NONE`: no link-local address, no router solicitations.
pub(crate) const ADDR_GEN_MODE_NONE: u8 = 1;

/// A failed netlink operation.
#[derive(Debug, thiserror::Error)]
#[error("{op}: {message}")]
pub struct NetlinkError {
    /// What was being done, e.g. `add rule iif tun0 lookup 13`.
    pub op: String,
    /// The kernel's (or the library's) answer.
    pub message: String,
    /// The errno, when the kernel sent one.
    pub errno: Option<i32>,
}

impl NetlinkError {
    fn new(op: impl Into<String>, err: rtnetlink::Error) -> NetlinkError {
        let (message, errno) = match &err {
            rtnetlink::Error::NetlinkError(msg) => {
                let io = msg.to_io();
                (io.to_string(), io.raw_os_error())
            }
            other => (other.to_string(), None),
        };
        NetlinkError {
            op: op.into(),
            message,
            errno,
        }
    }

    /// Whether the error says the object is already gone (no such device, route, rule, address).
    pub fn is_gone(&self) -> bool {
        matches!(
            self.errno,
            Some(libc::ENODEV | libc::ESRCH | libc::ENOENT | libc::EADDRNOTAVAIL)
        )
    }

    /// Whether the error says the object already exists.
    pub fn is_exists(&self) -> bool {
        self.errno == Some(libc::EEXIST)
    }
}

/// Result of a netlink operation.
pub(crate) type Result<T> = std::result::Result<T, NetlinkError>;

/// What we need to know about a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfoSummary {
    /// Interface index.
    pub index: u32,
    /// Interface name.
    pub name: String,
    /// Administratively up.
    pub up: bool,
    /// MTU.
    pub mtu: Option<u32>,
    /// Transmit queue length.
    pub txqueuelen: Option<u32>,
    /// The `IFLA_INFO_KIND` (`tun`, `veth`, …), if any.
    pub kind: Option<String>,
    /// The IPv6 address-generation mode (`IFLA_INET6_ADDR_GEN_MODE`), if IPv6 is on.
    pub addr_gen_mode: Option<u8>,
    /// A TUN device's flags (`IFLA_INFO_DATA`), as its last opener set them.
    pub tun: Option<TunInfo>,
    /// The link-layer address (`IFLA_ADDRESS`), for a device that has a 6-byte one (a TAP
    /// device's MAC address).
    pub mac: Option<[u8; 6]>,
    /// Counters (rx_packets, tx_packets, rx_bytes, tx_bytes, rx_dropped, tx_dropped).
    pub stats: Option<LinkCounters>,
}

/// A TUN device's flags from its link dump (`IFLA_TUN_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TunInfo {
    /// A TAP device (`IFLA_TUN_TYPE` = `IFF_TAP`): Ethernet frames, not IP packets.
    pub tap: bool,
    /// Packets carry the 4-byte packet-information header (no `IFF_NO_PI`).
    pub pi: bool,
    /// `IFF_VNET_HDR`.
    pub vnet_hdr: bool,
    /// `IFF_MULTI_QUEUE`.
    pub multi_queue: bool,
}

/// Interface counters from `IFLA_STATS64`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LinkCounters {
    /// Packets received by the interface.
    pub rx_packets: u64,
    /// Packets sent by the interface.
    pub tx_packets: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Received packets dropped.
    pub rx_dropped: u64,
    /// Packets dropped on transmit (for a TUN: the relay's queue was full).
    pub tx_dropped: u64,
}

/// An address on an interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddrSummary {
    /// Interface index.
    pub index: u32,
    /// The local address (`IFA_LOCAL`, or `IFA_ADDRESS` when absent).
    pub local: IpAddr,
    /// The peer (`IFA_ADDRESS` when it differs from the local address).
    pub peer: Option<IpAddr>,
    /// Prefix length.
    pub prefix_len: u8,
    /// `IFA_F_*` flags.
    pub flags: u32,
}

/// A route, decoded.
#[derive(Debug, Clone)]
pub struct RouteSummary {
    /// Routing table id.
    pub table: u32,
    /// Route type (`local`, `unicast`, …).
    pub kind: RouteType,
    /// Destination address, if any.
    pub dst: Option<IpAddr>,
    /// Destination prefix length.
    pub dst_len: u8,
    /// Output interface index.
    pub oif: Option<u32>,
    /// Preferred source.
    pub prefsrc: Option<IpAddr>,
    /// Metric (`RTA_PRIORITY`).
    pub metric: Option<u32>,
    /// The raw message, to delete exactly this route.
    pub message: RouteMessage,
}

impl RouteSummary {
    /// Whether it is a `local` route.
    pub fn is_local(&self) -> bool {
        self.kind == RouteType::Local
    }
}

/// A policy-routing rule, decoded.
#[derive(Debug, Clone)]
pub struct RuleSummary {
    /// IPv4 or IPv6.
    pub family: Family,
    /// Priority (`pref`).
    pub priority: u32,
    /// `iif` name, if the rule has one.
    pub iif: Option<String>,
    /// The table it looks up.
    pub table: u32,
    /// The action.
    pub action: RuleAction,
    /// The raw message, to delete exactly this rule.
    pub message: RuleMessage,
}

/// An address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    /// IPv4.
    Ipv4,
    /// IPv6.
    Ipv6,
}

impl Family {
    /// The family of an address.
    pub fn of(addr: &IpAddr) -> Family {
        match addr {
            IpAddr::V4(_) => Family::Ipv4,
            IpAddr::V6(_) => Family::Ipv6,
        }
    }

    fn ip_version(self) -> IpVersion {
        match self {
            Family::Ipv4 => IpVersion::V4,
            Family::Ipv6 => IpVersion::V6,
        }
    }

    /// `-4`/`-6` style label used in messages: `IPv4` / `IPv6`.
    pub fn label(self) -> &'static str {
        match self {
            Family::Ipv4 => "IPv4",
            Family::Ipv6 => "IPv6",
        }
    }
}

/// A netlink connection in the current thread's network namespace.
pub struct Netlink {
    rt: tokio::runtime::Runtime,
    handle: Handle,
}

impl Netlink {
    /// Opens a connection.
    pub fn connect() -> std::io::Result<Netlink> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = rt.block_on(async {
            let (conn, handle, _) = rtnetlink::new_connection()?;
            tokio::spawn(conn);
            Ok::<_, std::io::Error>(handle)
        })?;
        Ok(Netlink { rt, handle })
    }

    /// The link named `name`, or `None` if there is none.
    pub fn link_by_name(&self, name: &str) -> Result<Option<LinkInfoSummary>> {
        let res = self.rt.block_on(
            self.handle
                .link()
                .get()
                .match_name(name.to_string())
                .execute()
                .try_next(),
        );
        match res {
            Ok(Some(msg)) => Ok(Some(link_summary(&msg))),
            Ok(None) => Ok(None),
            Err(e) => {
                let e = NetlinkError::new(format!("get link {name}"), e);
                if e.is_gone() { Ok(None) } else { Err(e) }
            }
        }
    }

    /// All links.
    pub fn links(&self) -> Result<Vec<LinkInfoSummary>> {
        let msgs: Vec<LinkMessage> = self
            .rt
            .block_on(self.handle.link().get().execute().try_collect())
            .map_err(|e| NetlinkError::new("list links", e))?;
        Ok(msgs.iter().map(link_summary).collect())
    }

    /// `ip link set dev DEV up`.
    pub fn set_link_up(&self, index: u32, name: &str) -> Result<()> {
        self.set_link(LinkUnspec::new_with_index(index).up().build(), || {
            format!("set link {name} up")
        })
    }

    /// `ip link set dev DEV down`.
    pub fn set_link_down(&self, index: u32, name: &str) -> Result<()> {
        self.set_link(LinkUnspec::new_with_index(index).down().build(), || {
            format!("set link {name} down")
        })
    }

    /// `ip link set dev DEV mtu MTU`.
    pub fn set_link_mtu(&self, index: u32, name: &str, mtu: u32) -> Result<()> {
        self.set_link(LinkUnspec::new_with_index(index).mtu(mtu).build(), || {
            format!("set link {name} mtu {mtu}")
        })
    }

    /// `ip link set dev DEV txqueuelen LEN`.
    pub fn set_link_txqueuelen(&self, index: u32, name: &str, len: u32) -> Result<()> {
        self.set_link(
            LinkUnspec::new_with_index(index).txqueuelen(len).build(),
            || format!("set link {name} txqueuelen {len}"),
        )
    }

    /// `ip link set dev DEV address MAC`.
    pub fn set_link_address(&self, index: u32, name: &str, mac: [u8; 6]) -> Result<()> {
        self.set_link(
            LinkUnspec::new_with_index(index)
                .address(mac.to_vec())
                .build(),
            || format!("set link {name} address {}", crate::spec::MacAddr(mac)),
        )
    }

    /// `ip link set dev DEV addrgenmode MODE` (`IFLA_AF_SPEC` / `IFLA_INET6_ADDR_GEN_MODE`).
    pub fn set_addr_gen_mode(&self, index: u32, name: &str, mode: u8) -> Result<()> {
        let attr =
            LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet6(vec![AfSpecInet6::AddrGenMode(
                In6AddrGenMode::from(mode),
            )])]);
        self.set_link(
            LinkUnspec::new_with_index(index)
                .append_extra_attribute(attr)
                .build(),
            || format!("set link {name} addrgenmode {}", In6AddrGenMode::from(mode)),
        )
    }

    fn set_link(&self, msg: LinkMessage, op: impl FnOnce() -> String) -> Result<()> {
        self.rt
            .block_on(self.handle.link().set(msg).execute())
            .logged(op())
    }

    /// `ip link del dev DEV`.
    pub fn delete_link(&self, index: u32, name: &str) -> Result<()> {
        self.rt
            .block_on(self.handle.link().del(index).execute())
            .logged(format!("delete link {name}"))
    }

    /// `ip -6 addr add LOCAL/PREFIX dev DEV [peer PEER] FLAGS` (e.g. `nodad noprefixroute`).
    pub fn add_address(
        &self,
        index: u32,
        name: &str,
        local: IpAddr,
        prefix_len: u8,
        peer: Option<IpAddr>,
        flags: u32,
    ) -> Result<()> {
        let op = match peer {
            Some(peer) => format!("add address {local} peer {peer} dev {name}"),
            None => format!("add address {local}/{prefix_len} dev {name}"),
        };
        let mut req = self.handle.address().add(index, local, prefix_len);
        let msg = req.message_mut();
        msg.attributes.retain(|a| {
            !matches!(
                a,
                AddressAttribute::Address(_)
                    | AddressAttribute::Local(_)
                    | AddressAttribute::Broadcast(_)
                    | AddressAttribute::Flags(_)
            )
        });
        msg.attributes.push(AddressAttribute::Local(local));
        msg.attributes
            .push(AddressAttribute::Address(peer.unwrap_or(local)));
        msg.attributes
            .push(AddressAttribute::Flags(AddressFlags::from_bits_retain(
                flags,
            )));
        self.rt.block_on(req.execute()).logged(op)
    }

    /// `ip addr del LOCAL/PREFIX [peer PEER] dev DEV`.
    pub fn delete_address(
        &self,
        index: u32,
        name: &str,
        local: IpAddr,
        prefix_len: u8,
        peer: Option<IpAddr>,
    ) -> Result<()> {
        // A missing address is the kernel's EADDRNOTAVAIL, which `is_gone` recognises.
        let op = format!("delete address {local}/{prefix_len} dev {name}");
        let mut msg = AddressMessage::default();
        msg.header.index = index;
        msg.header.prefix_len = prefix_len;
        msg.header.family = family_of(&local);
        msg.attributes.push(AddressAttribute::Local(local));
        msg.attributes
            .push(AddressAttribute::Address(peer.unwrap_or(local)));
        self.rt
            .block_on(self.handle.address().del(msg).execute())
            .logged(op)
    }

    /// `ip route add DST/128 dev DEV src SRC proto static metric 1024` (IPv6): the peer route.
    pub fn add_peer_route(&self, dst: IpAddr, src: IpAddr, index: u32, name: &str) -> Result<()> {
        let op = format!("add route {dst} dev {name} src {src}");
        let msg = peer_route_message(dst, src, index);
        self.rt
            .block_on(self.handle.route().add(msg).execute())
            .logged(op)
    }

    /// The unicast route `DST/full dev OIF` in table `main`, if present.
    pub fn find_peer_route(&self, dst: IpAddr, oif: u32) -> Result<Option<RouteSummary>> {
        Ok(self.routes(Family::of(&dst))?.into_iter().find(|r| {
            r.table == TABLE_MAIN
                && r.kind == RouteType::Unicast
                && r.dst == Some(dst)
                && r.dst_len == full_prefix(&dst)
                && r.oif == Some(oif)
        }))
    }

    /// `ip route get DST`: the output interface and source the kernel picks for locally
    /// generated traffic to `dst`.
    pub fn route_get(&self, dst: IpAddr) -> Result<(Option<u32>, Option<IpAddr>)> {
        let msg = match dst {
            IpAddr::V4(a) => RouteMessageBuilder::<std::net::Ipv4Addr>::new()
                .destination_prefix(a, 32)
                .build(),
            IpAddr::V6(a) => RouteMessageBuilder::<std::net::Ipv6Addr>::new()
                .destination_prefix(a, 128)
                .build(),
        };
        let mut msg = msg;
        // A lookup, not a table entry: only the destination counts.
        msg.header.table = 0;
        msg.header.protocol = RouteProtocol::Unspec;
        msg.header.scope = RouteScope::Universe;
        msg.header.kind = RouteType::Unspec;
        let res: Option<RouteMessage> = match self
            .rt
            .block_on(self.handle.route().get(msg).execute().try_next())
        {
            Ok(r) => r,
            Err(e) => {
                let e = NetlinkError::new(format!("route get {dst}"), e);
                // No route at all is an answer, not a failure.
                if matches!(e.errno, Some(libc::ENETUNREACH | libc::EHOSTUNREACH)) {
                    return Ok((None, None));
                }
                return Err(e);
            }
        };
        Ok(res
            .map(route_summary)
            .map(|r| (r.oif, r.prefsrc))
            .unwrap_or((None, None)))
    }

    /// `ip addr add LOCAL peer PEER dev DEV` (a /32 or /128 point-to-point address; IPv6
    /// without duplicate address detection).
    pub fn add_peer_address(
        &self,
        index: u32,
        name: &str,
        local: IpAddr,
        peer: IpAddr,
    ) -> Result<()> {
        let flags = if local.is_ipv6() {
            AddressFlags::Nodad.bits()
        } else {
            0
        };
        self.add_address(index, name, local, full_prefix(&local), Some(peer), flags)
    }

    /// Addresses, of one interface or of all.
    pub fn addresses(&self, index: Option<u32>) -> Result<Vec<AddrSummary>> {
        let mut req = self.handle.address().get();
        if let Some(i) = index {
            req = req.set_link_index_filter(i);
        }
        let msgs: Vec<AddressMessage> = self
            .rt
            .block_on(req.execute().try_collect())
            .map_err(|e| NetlinkError::new("list addresses", e))?;
        Ok(msgs
            .iter()
            .filter(|m| index.is_none_or(|i| m.header.index == i))
            .filter_map(addr_summary)
            .collect())
    }

    /// Every route of a family, in every table.
    pub fn routes(&self, family: Family) -> Result<Vec<RouteSummary>> {
        let filter = match family {
            Family::Ipv4 => RouteMessageBuilder::<std::net::Ipv4Addr>::new().build(),
            Family::Ipv6 => RouteMessageBuilder::<std::net::Ipv6Addr>::new().build(),
        };
        let msgs: Vec<RouteMessage> = self
            .rt
            .block_on(self.handle.route().get(filter).execute().try_collect())
            .map_err(|e| NetlinkError::new(format!("list {} routes", family.label()), e))?;
        Ok(msgs.into_iter().map(route_summary).collect())
    }

    /// The `local` route of `addr` in table `table` — through device `oif` if given, else on
    /// any device — if present.
    pub fn find_local_route(
        &self,
        addr: IpAddr,
        table: u32,
        oif: Option<u32>,
    ) -> Result<Option<RouteSummary>> {
        Ok(self.routes(Family::of(&addr))?.into_iter().find(|r| {
            r.table == table
                && r.kind == RouteType::Local
                && r.dst == Some(addr)
                && r.dst_len == full_prefix(&addr)
                && oif.is_none_or(|i| r.oif == Some(i))
        }))
    }

    /// Deletes exactly the route in `route` (as dumped).
    pub fn delete_route(&self, route: &RouteSummary, what: &str) -> Result<()> {
        self.rt
            .block_on(self.handle.route().del(route.message.clone()).execute())
            .logged(format!("delete route {what}"))
    }

    /// `ip route add local ADDR dev DEV table TABLE proto kernel scope host src ADDR` — the
    /// same shape as the route the kernel itself puts in table `local`.
    pub fn add_local_route(&self, addr: IpAddr, index: u32, name: &str, table: u32) -> Result<()> {
        let op = format!(
            "add route local {addr} dev {name} table {}",
            table_name(table)
        );
        let msg = local_route_message(addr, index, table);
        self.rt
            .block_on(self.handle.route().add(msg).execute())
            .logged(op)
    }

    /// Every rule of a family.
    pub fn rules(&self, family: Family) -> Result<Vec<RuleSummary>> {
        let msgs: Vec<RuleMessage> = self
            .rt
            .block_on(
                self.handle
                    .rule()
                    .get(family.ip_version())
                    .execute()
                    .try_collect(),
            )
            .map_err(|e| NetlinkError::new(format!("list {} rules", family.label()), e))?;
        Ok(msgs.into_iter().map(|m| rule_summary(family, m)).collect())
    }

    /// The priority the kernel gives a rule added without one (`fib_default_rule_pref`): one
    /// below the second rule's, when that is above 0.
    pub fn next_rule_priority(&self, family: Family) -> Result<u32> {
        let mut prios: Vec<u32> = self.rules(family)?.iter().map(|r| r.priority).collect();
        prios.sort_unstable();
        Ok(match prios.get(1) {
            Some(&p) if p > 0 => p - 1,
            _ => 0,
        })
    }

    /// `ip rule add iif DEV lookup TABLE pref PRIORITY` (IPv4 or IPv6), with the to-table
    /// action set.
    pub fn add_iif_rule(&self, family: Family, dev: &str, table: u32, priority: u32) -> Result<()> {
        let op = format!(
            "add {} rule iif {dev} lookup {table} pref {priority}",
            family.label()
        );
        let req = self
            .handle
            .rule()
            .add()
            .input_interface(dev.to_string())
            .priority(priority);
        let res = match family {
            Family::Ipv4 => self.rt.block_on(
                req.v4()
                    .table_id(table)
                    .action(RuleAction::ToTable)
                    .execute(),
            ),
            Family::Ipv6 => self.rt.block_on(
                req.v6()
                    .table_id(table)
                    .action(RuleAction::ToTable)
                    .execute(),
            ),
        };
        res.logged(op)
    }

    /// The `iif DEV lookup TABLE` rules of a family.
    pub fn find_iif_rules(
        &self,
        family: Family,
        dev: &str,
        table: u32,
    ) -> Result<Vec<RuleSummary>> {
        Ok(self
            .rules(family)?
            .into_iter()
            .filter(|r| r.iif.as_deref() == Some(dev) && r.table == table)
            .collect())
    }

    /// Deletes exactly the rule in `rule` (as dumped).
    pub fn delete_rule(&self, rule: &RuleSummary) -> Result<()> {
        let op = format!(
            "delete {} rule {}: iif {} lookup {}",
            rule.family.label(),
            rule.priority,
            rule.iif.as_deref().unwrap_or("*"),
            rule.table
        );
        self.rt
            .block_on(self.handle.rule().del(rule.message.clone()).execute())
            .logged(op)
    }
}

/// A change request's result, logged at debug level (`-v`): every change hostkit makes through
/// netlink is named in the log, in `ip`'s words.
trait Logged {
    fn logged(self, op: String) -> Result<()>;
}

impl Logged for std::result::Result<(), rtnetlink::Error> {
    fn logged(self, op: String) -> Result<()> {
        match self {
            Ok(()) => {
                log::debug!("netlink: {op}");
                Ok(())
            }
            Err(e) => {
                let e = NetlinkError::new(op, e);
                log::debug!("netlink: {e}");
                Err(e)
            }
        }
    }
}

/// `local`, `main`, `default` or the number.
pub(crate) fn table_name(table: u32) -> String {
    match table {
        255 => "local".into(),
        254 => "main".into(),
        253 => "default".into(),
        n => n.to_string(),
    }
}

/// /32 for IPv4, /128 for IPv6.
pub(crate) fn full_prefix(addr: &IpAddr) -> u8 {
    match addr {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

fn family_of(addr: &IpAddr) -> AddressFamily {
    match addr {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

/// The kernel's own shape of a local route (IPv6 local routes keep the universe scope).
fn local_route_message(addr: IpAddr, index: u32, table: u32) -> RouteMessage {
    match addr {
        IpAddr::V4(a) => RouteMessageBuilder::<std::net::Ipv4Addr>::new()
            .destination_prefix(a, 32)
            .pref_source(a)
            .output_interface(index)
            .table_id(table)
            .kind(RouteType::Local)
            .scope(RouteScope::Host)
            .protocol(RouteProtocol::Kernel)
            .build(),
        IpAddr::V6(a) => RouteMessageBuilder::<std::net::Ipv6Addr>::new()
            .destination_prefix(a, 128)
            .output_interface(index)
            .table_id(table)
            .kind(RouteType::Local)
            .protocol(RouteProtocol::Kernel)
            .priority(IPV6_USER_METRIC)
            .build(),
    }
}

/// `DST/full dev OIF src SRC proto static` in table `main` (metric 1024 for IPv6).
fn peer_route_message(dst: IpAddr, src: IpAddr, index: u32) -> RouteMessage {
    match (dst, src) {
        (IpAddr::V4(d), IpAddr::V4(s)) => RouteMessageBuilder::<std::net::Ipv4Addr>::new()
            .destination_prefix(d, 32)
            .pref_source(s)
            .output_interface(index)
            .table_id(TABLE_MAIN)
            .scope(RouteScope::Link)
            .build(),
        (IpAddr::V6(d), IpAddr::V6(s)) => RouteMessageBuilder::<std::net::Ipv6Addr>::new()
            .destination_prefix(d, 128)
            .pref_source(s)
            .output_interface(index)
            .table_id(TABLE_MAIN)
            .priority(IPV6_USER_METRIC)
            .build(),
        _ => unreachable!("a peer route never mixes families"),
    }
}

fn link_summary(msg: &LinkMessage) -> LinkInfoSummary {
    let mut s = LinkInfoSummary {
        index: msg.header.index,
        name: String::new(),
        up: msg.header.flags.contains(LinkFlags::Up),
        mtu: None,
        txqueuelen: None,
        kind: None,
        addr_gen_mode: None,
        tun: None,
        mac: None,
        stats: None,
    };
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::AfSpecUnspec(specs) => {
                for spec in specs {
                    if let AfSpecUnspec::Inet6(v6) = spec {
                        for a in v6 {
                            if let AfSpecInet6::AddrGenMode(m) = a {
                                s.addr_gen_mode = Some(u8::from(m));
                            }
                        }
                    }
                }
            }
            LinkAttribute::IfName(n) => s.name = n.clone(),
            LinkAttribute::Address(a) if a.len() == 6 => {
                let mut mac = [0u8; 6];
                mac.copy_from_slice(a);
                s.mac = Some(mac);
            }
            LinkAttribute::Mtu(m) => s.mtu = Some(*m),
            LinkAttribute::TxQueueLen(q) => s.txqueuelen = Some(*q),
            LinkAttribute::LinkInfo(infos) => {
                for info in infos {
                    match info {
                        LinkInfo::Kind(kind) => {
                            s.kind = Some(match kind {
                                InfoKind::Tun => "tun".to_string(),
                                other => other.to_string(),
                            });
                        }
                        LinkInfo::Data(InfoData::Tun(nlas)) => s.tun = Some(tun_info(nlas)),
                        _ => {}
                    }
                }
            }
            LinkAttribute::Stats64(st) => {
                s.stats = Some(LinkCounters {
                    rx_packets: st.rx_packets,
                    tx_packets: st.tx_packets,
                    rx_bytes: st.rx_bytes,
                    tx_bytes: st.tx_bytes,
                    rx_dropped: st.rx_dropped,
                    tx_dropped: st.tx_dropped,
                })
            }
            _ => {}
        }
    }
    s
}

/// `IFLA_TUN_TYPE` (3: `IFF_TUN` 1, `IFF_TAP` 2), `IFLA_TUN_PI` (4), `IFLA_TUN_VNET_HDR` (5),
/// `IFLA_TUN_MULTI_QUEUE` (7): one byte each (after `OWNER` 1, `GROUP` 2; `PERSIST` is 6).
fn tun_info(nlas: &[InfoTun]) -> TunInfo {
    let mut t = TunInfo::default();
    for nla in nlas {
        if nla.value_len() != 1 {
            continue;
        }
        let mut v = [0u8; 1];
        nla.emit_value(&mut v);
        match nla.kind() {
            3 => t.tap = i32::from(v[0]) == libc::IFF_TAP,
            4 => t.pi = v[0] != 0,
            5 => t.vnet_hdr = v[0] != 0,
            7 => t.multi_queue = v[0] != 0,
            _ => {}
        }
    }
    t
}

pub(crate) fn addr_summary(msg: &AddressMessage) -> Option<AddrSummary> {
    let mut local = None;
    let mut address = None;
    let mut flags = u32::from(msg.header.flags.bits());
    for attr in &msg.attributes {
        match attr {
            AddressAttribute::Local(a) => local = Some(*a),
            AddressAttribute::Address(a) => address = Some(*a),
            AddressAttribute::Flags(f) => flags = f.bits(),
            _ => {}
        }
    }
    let local_addr = local.or(address)?;
    let peer = match (local, address) {
        (Some(l), Some(a)) if l != a => Some(a),
        _ => None,
    };
    Some(AddrSummary {
        index: msg.header.index,
        local: local_addr,
        peer,
        prefix_len: msg.header.prefix_len,
        flags,
    })
}

fn route_addr(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

pub(crate) fn route_summary(message: RouteMessage) -> RouteSummary {
    let mut table = u32::from(message.header.table);
    let mut dst = None;
    let mut oif = None;
    let mut prefsrc = None;
    let mut metric = None;
    for attr in &message.attributes {
        match attr {
            RouteAttribute::Priority(p) => metric = Some(*p),
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Destination(a) => dst = route_addr(a),
            RouteAttribute::Oif(i) => oif = Some(*i),
            RouteAttribute::PrefSource(a) => prefsrc = route_addr(a),
            _ => {}
        }
    }
    RouteSummary {
        table,
        kind: message.header.kind,
        dst,
        dst_len: message.header.destination_prefix_length,
        oif,
        prefsrc,
        metric,
        message,
    }
}

fn rule_summary(family: Family, message: RuleMessage) -> RuleSummary {
    let mut table = u32::from(message.header.table);
    let mut priority = 0;
    let mut iif = None;
    for attr in &message.attributes {
        match attr {
            RuleAttribute::Table(t) => table = *t,
            RuleAttribute::Priority(p) => priority = *p,
            RuleAttribute::Iifname(n) => iif = Some(n.clone()),
            _ => {}
        }
    }
    RuleSummary {
        family,
        priority,
        iif,
        table,
        action: message.header.action,
        message,
    }
}
