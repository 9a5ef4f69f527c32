//! The tunnel's settings, validated, and the plan of steps they imply. Pure: no I/O.
//!
//! The same [`Step`]s are executed by [`crate::setup`] and rendered as the equivalent `ip`
//! commands for `--dry-run`, so the two cannot drift apart.

use std::net::IpAddr;

use hostkit_tun::DeviceMode;
use serde::{Deserialize, Serialize};

use crate::netlink::{Family, IPV6_USER_METRIC, table_name};

/// Default device names and addresses: tun0 10.0.0.1 ↔ tun1 10.0.0.2, table 13.
pub const DEFAULT_DEVICES: [&str; 2] = ["tun0", "tun1"];
/// The default routing table for the moved local routes.
pub const DEFAULT_TABLE: u32 = 13;

/// Which devices get an `iif DEV lookup TABLE` rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum RuleSides {
    /// Both (the correct setup).
    #[default]
    Both,
    /// Only the first device (reproduces the classic one-sided mistake).
    FirstOnly,
    /// Only the second device.
    SecondOnly,
}

/// One side of the tunnel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// Interface name.
    pub dev: String,
    /// Its addresses: at most one per family.
    pub addrs: Vec<IpAddr>,
}

/// A MAC address a TAP device can have: unicast and not all zeros. Parsed from
/// `02:00:5e:10:00:01` (six pairs of hex digits, `:` between them); shown the same way, also in
/// state files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MacAddr(pub [u8; 6]);

/// Why a MAC address is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MacError {
    /// Not six colon-separated pairs of hex digits.
    #[error(
        "{0:?} is not a MAC address: give six pairs of hex digits separated by ':', e.g. 02:00:00:00:00:01"
    )]
    Syntax(String),
    /// Multicast or broadcast (the first octet's lowest bit is set).
    #[error(
        "{0} is a multicast address (the lowest bit of the first octet is set): a device needs a unicast one, e.g. 02:00:00:00:00:01"
    )]
    Multicast(MacAddr),
    /// All zeros.
    #[error("00:00:00:00:00:00 is not an address a device can have")]
    Zero,
}

impl MacAddr {
    /// The MAC address hostkit gives a TAP device it creates when none is asked for: stable
    /// (the same for the same name, run after run: captures and `ip neigh` can be compared),
    /// locally administered and unicast (`02:`), then five bytes of a hash of the name (FNV-1a,
    /// then MurmurHash3's finaliser).
    pub fn derived(dev: &str) -> MacAddr {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in "hostkit tap ".bytes().chain(dev.bytes()) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        // MurmurHash3's finaliser: names that differ in one letter differ in every byte.
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^= h >> 33;
        let b = h.to_be_bytes();
        MacAddr([0x02, b[0], b[1], b[2], b[3], b[4]])
    }

    /// Refuses multicast and all-zero addresses.
    pub fn check(self) -> Result<MacAddr, MacError> {
        if self.0 == [0; 6] {
            Err(MacError::Zero)
        } else if self.0[0] & 1 != 0 {
            Err(MacError::Multicast(self))
        } else {
            Ok(self)
        }
    }
}

impl std::fmt::Display for MacAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl std::str::FromStr for MacAddr {
    type Err = MacError;

    /// Parses and checks (see [`MacAddr::check`]).
    fn from_str(s: &str) -> Result<MacAddr, MacError> {
        let bad = || MacError::Syntax(s.to_string());
        let parts: Vec<&str> = s.split(':').collect();
        if parts.len() != 6 {
            return Err(bad());
        }
        let mut b = [0u8; 6];
        for (dst, p) in b.iter_mut().zip(&parts) {
            if p.len() != 2 || !p.bytes().all(|c| c.is_ascii_hexdigit()) {
                return Err(bad());
            }
            *dst = u8::from_str_radix(p, 16).map_err(|_| bad())?;
        }
        MacAddr(b).check()
    }
}

impl Serialize for MacAddr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MacAddr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<MacAddr, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// What the user asked for, before validation.
#[derive(Debug, Clone, Default)]
pub struct SpecInput {
    /// The two device names.
    pub devs: [String; 2],
    /// TUN or TAP devices.
    pub mode: DeviceMode,
    /// TAP mode: each device's MAC address, if one is asked for.
    pub macs: [Option<MacAddr>; 2],
    /// Addresses of each side (empty for both sides: the IPv4 defaults).
    pub addrs: [Vec<IpAddr>; 2],
    /// Routing table for the moved local routes.
    pub table: u32,
    /// MTU to set, if any.
    pub mtu: Option<u32>,
    /// Transmit queue length to set, if any (the kernel→relay ring of each device).
    pub txqueuelen: Option<u32>,
    /// Skip the routing rewrite (to show the problem it solves).
    pub no_routing: bool,
    /// Which sides get a rule.
    pub rules: RuleSides,
    /// Leave `ip_nonlocal_bind` alone.
    pub no_nonlocal_bind: bool,
}

/// A validated tunnel specification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TunnelSpec {
    /// TUN (IP packets) or TAP (Ethernet frames) devices.
    #[serde(default)]
    pub mode: DeviceMode,
    /// The two sides; side 0's addresses have side 1's as peers and vice versa.
    pub ends: [Endpoint; 2],
    /// TAP mode: the MAC addresses asked for (`--mac0`, `--mac1`); a device created without
    /// one gets [`MacAddr::derived`], an attached one keeps its own.
    #[serde(default, skip_serializing_if = "no_macs")]
    pub macs: [Option<MacAddr>; 2],
    /// Routing table for the moved local routes.
    pub table: u32,
    /// MTU to set, if any.
    pub mtu: Option<u32>,
    /// Transmit queue length to set, if any.
    #[serde(default)]
    pub txqueuelen: Option<u32>,
    /// Whether to move local routes and add rules.
    pub routing: bool,
    /// Which sides get a rule.
    pub rules: RuleSides,
    /// Whether to turn on IPv4 non-local bind (IPv6 `bind()` does not need it).
    pub nonlocal_bind: bool,
}

fn no_macs(m: &[Option<MacAddr>; 2]) -> bool {
    m.iter().all(Option::is_none)
}

/// The largest transmit queue length accepted: the kernel allocates a slot per packet.
pub const MAX_TXQUEUELEN: u32 = 1_000_000;

/// Why the settings are refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// A transmit queue length out of range.
    #[error("txqueuelen {0} is out of range: 1 to 1000000 packets")]
    TxQueueLen(u32),
    /// A MAC address asked of a TUN device, which has none.
    #[error("--mac{side} applies to --mode tap only: a TUN device has no link-layer address")]
    MacWithoutTap {
        /// 0 or 1.
        side: usize,
    },
    /// The same MAC address for both devices.
    #[error("both devices would have the MAC address {0}: the two ends need different ones")]
    SameMac(MacAddr),
    /// A MAC address that is not a device's.
    #[error(transparent)]
    Mac(#[from] MacError),
    /// A recorded specification that its own settings do not reproduce.
    #[error("the recorded settings are not what hostkit makes of them (edited by hand?)")]
    NotCanonical,
    /// Bad interface name.
    #[error("invalid device name {name:?}: {reason}")]
    BadName {
        /// The name.
        name: String,
        /// Why.
        reason: String,
    },
    /// Both sides use one device.
    #[error("both devices are named {0:?}: the tunnel needs two different devices")]
    SameDevice(String),
    /// Only one side has addresses.
    #[error("addresses given for {given} but not for {missing}: give --addr0 and --addr1 together")]
    OneSided {
        /// Side with addresses.
        given: String,
        /// Side without.
        missing: String,
    },
    /// Two addresses of one family on a side.
    #[error("{dev} has two {family} addresses ({a} and {b}): give at most one per family")]
    TwoOfAFamily {
        /// Device.
        dev: String,
        /// Family label.
        family: &'static str,
        /// First.
        a: IpAddr,
        /// Second.
        b: IpAddr,
    },
    /// The pair mixes families.
    #[error(
        "address {a} ({dev_a}) has no {family} peer on {dev_b}: each address needs a peer of the same family on the other device"
    )]
    MixedFamilies {
        /// Address without a peer.
        a: IpAddr,
        /// Its device.
        dev_a: String,
        /// The other device.
        dev_b: String,
        /// The missing family.
        family: &'static str,
    },
    /// The same address on both sides.
    #[error("duplicate address {0}: the two ends need different addresses")]
    Duplicate(IpAddr),
    /// An address that cannot be a tunnel end.
    #[error("address {addr} cannot be a tunnel end: it is {what}")]
    Unusable {
        /// The address.
        addr: IpAddr,
        /// What it is.
        what: &'static str,
    },
    /// A reserved routing table.
    #[error(
        "table {0} is reserved (0 unspec, 253 default, 254 main, 255 local): choose another, e.g. 13"
    )]
    ReservedTable(u32),
    /// MTU out of range.
    #[error("MTU {mtu} is out of range: {reason}")]
    Mtu {
        /// The value.
        mtu: u32,
        /// The limits.
        reason: &'static str,
    },
}

impl TunnelSpec {
    /// Validates the user's settings.
    pub fn new(input: SpecInput) -> Result<TunnelSpec, SpecError> {
        for name in &input.devs {
            hostkit_tun::validate_name(name).map_err(|e| SpecError::BadName {
                name: name.clone(),
                reason: match e {
                    hostkit_tun::DeviceError::InvalidName { reason, .. } => reason.to_string(),
                    other => other.to_string(),
                },
            })?;
        }
        if input.devs[0] == input.devs[1] {
            return Err(SpecError::SameDevice(input.devs[0].clone()));
        }
        if matches!(input.table, 0 | 253..=255) {
            return Err(SpecError::ReservedTable(input.table));
        }
        let addrs = match (&input.addrs[0].is_empty(), &input.addrs[1].is_empty()) {
            (true, true) => [
                vec!["10.0.0.1".parse().expect("literal")],
                vec!["10.0.0.2".parse().expect("literal")],
            ],
            (false, false) => input.addrs.clone(),
            (false, true) => {
                return Err(SpecError::OneSided {
                    given: input.devs[0].clone(),
                    missing: input.devs[1].clone(),
                });
            }
            (true, false) => {
                return Err(SpecError::OneSided {
                    given: input.devs[1].clone(),
                    missing: input.devs[0].clone(),
                });
            }
        };
        for (side, list) in addrs.iter().enumerate() {
            for addr in list {
                check_usable(addr)?;
            }
            for fam in [Family::Ipv4, Family::Ipv6] {
                let of: Vec<&IpAddr> = list.iter().filter(|a| Family::of(a) == fam).collect();
                if of.len() > 1 {
                    return Err(SpecError::TwoOfAFamily {
                        dev: input.devs[side].clone(),
                        family: fam.label(),
                        a: *of[0],
                        b: *of[1],
                    });
                }
            }
        }
        for side in 0..2 {
            for addr in &addrs[side] {
                let fam = Family::of(addr);
                if !addrs[1 - side].iter().any(|p| Family::of(p) == fam) {
                    return Err(SpecError::MixedFamilies {
                        a: *addr,
                        dev_a: input.devs[side].clone(),
                        dev_b: input.devs[1 - side].clone(),
                        family: fam.label(),
                    });
                }
                if addrs[1 - side].contains(addr) {
                    return Err(SpecError::Duplicate(*addr));
                }
            }
        }
        if let Some(len) = input.txqueuelen
            && !(1..=MAX_TXQUEUELEN).contains(&len)
        {
            return Err(SpecError::TxQueueLen(len));
        }
        for (side, mac) in input.macs.iter().enumerate() {
            if let Some(mac) = mac {
                if input.mode != DeviceMode::Tap {
                    return Err(SpecError::MacWithoutTap { side });
                }
                mac.check()?;
            }
        }
        if let [Some(a), Some(b)] = input.macs
            && a == b
        {
            return Err(SpecError::SameMac(a));
        }
        let has_v6 = addrs[0].iter().any(|a| a.is_ipv6());
        if let Some(mtu) = input.mtu {
            let (max, reason) = match input.mode {
                DeviceMode::Tun => (65535, "a TUN device takes 68 to 65535"),
                // The kernel's max_mtu for a TAP device: 65535 less the Ethernet header.
                DeviceMode::Tap => (65521, "a TAP device takes 68 to 65521"),
            };
            if !(68..=max).contains(&mtu) {
                return Err(SpecError::Mtu { mtu, reason });
            }
            if has_v6 && mtu < 1280 {
                return Err(SpecError::Mtu {
                    mtu,
                    reason: "IPv6 needs at least 1280",
                });
            }
        }
        // Keep a stable order: IPv4 first.
        let ends = [0, 1].map(|side| {
            let mut list = addrs[side].clone();
            list.sort_by_key(|a| a.is_ipv6());
            Endpoint {
                dev: input.devs[side].clone(),
                addrs: list,
            }
        });
        Ok(TunnelSpec {
            mode: input.mode,
            ends,
            macs: input.macs,
            table: input.table,
            mtu: input.mtu,
            txqueuelen: input.txqueuelen,
            routing: !input.no_routing,
            rules: input.rules,
            nonlocal_bind: !input.no_nonlocal_bind,
        })
    }

    /// Validates a specification read back from a state file (data, never an instruction):
    /// it must be exactly what [`TunnelSpec::new`] makes of its own settings.
    pub fn revalidate(&self) -> Result<(), SpecError> {
        let again = TunnelSpec::new(SpecInput {
            devs: self.devs().map(str::to_string),
            mode: self.mode,
            macs: self.macs,
            addrs: [self.ends[0].addrs.clone(), self.ends[1].addrs.clone()],
            table: self.table,
            mtu: self.mtu,
            txqueuelen: self.txqueuelen,
            no_routing: !self.routing,
            rules: self.rules,
            no_nonlocal_bind: !self.nonlocal_bind,
        })?;
        if again == *self {
            Ok(())
        } else {
            Err(SpecError::NotCanonical)
        }
    }

    /// The families in use.
    pub fn families(&self) -> Vec<Family> {
        let mut fams: Vec<Family> = self.ends[0].addrs.iter().map(Family::of).collect();
        fams.dedup();
        fams
    }

    /// The (local, peer) pairs of side `side`.
    pub fn pairs(&self, side: usize) -> Vec<(IpAddr, IpAddr)> {
        self.ends[side]
            .addrs
            .iter()
            .map(|local| {
                let fam = Family::of(local);
                let peer = self.ends[1 - side]
                    .addrs
                    .iter()
                    .find(|p| Family::of(p) == fam)
                    .copied()
                    .expect("validated: every address has a peer");
                (*local, peer)
            })
            .collect()
    }

    /// The sysctl keys this tunnel sets (and needs while it runs).
    pub fn sysctl_keys(&self) -> Vec<String> {
        self.plan([true, true])
            .into_iter()
            .filter_map(|s| match s {
                Step::SetSysctl { key, .. } => Some(key),
                _ => None,
            })
            .collect()
    }

    /// The device names.
    pub fn devs(&self) -> [&str; 2] {
        [&self.ends[0].dev, &self.ends[1].dev]
    }

    /// The MAC address device `side` gets, if hostkit sets one: in TAP mode, the one asked
    /// for, else for a device it creates ([`MacAddr::derived`]); an attached device keeps its
    /// own unless one is asked for.
    pub fn mac(&self, side: usize, created: bool) -> Option<MacAddr> {
        if self.mode != DeviceMode::Tap {
            return None;
        }
        self.macs[side].or_else(|| {
            created.then(|| {
                let mac = MacAddr::derived(&self.ends[side].dev);
                // Two names whose hashes agree in 40 bits: side 1 takes another address.
                let other = self.macs[1 - side]
                    .unwrap_or_else(|| MacAddr::derived(&self.ends[1 - side].dev));
                match (side, mac == other) {
                    (1, true) => {
                        MacAddr([mac.0[0], mac.0[1], mac.0[2], mac.0[3], mac.0[4], !mac.0[5]])
                    }
                    _ => mac,
                }
            })
        })
    }

    /// The ordered plan. `created[i]` says whether device `i` is created (or attached to).
    pub fn plan(&self, created: [bool; 2]) -> Vec<Step> {
        let mut steps = Vec::new();
        for (side, &create) in created.iter().enumerate() {
            let dev = self.ends[side].dev.clone();
            if create {
                steps.push(Step::CreateTun {
                    dev: dev.clone(),
                    mode: self.mode,
                });
            }
            if let Some(mac) = self.mac(side, create) {
                steps.push(Step::SetMac {
                    dev: dev.clone(),
                    mac,
                });
            }
            if let Some(mtu) = self.mtu {
                steps.push(Step::SetMtu {
                    dev: dev.clone(),
                    mtu,
                });
            }
            if let Some(len) = self.txqueuelen {
                steps.push(Step::SetTxQueueLen {
                    dev: dev.clone(),
                    len,
                });
            }
            // No link-local address and no router solicitations on either device, for every
            // tunnel (IPv6 is off on a device below 1280 bytes anyway).
            if self.mtu.is_none_or(|m| m >= IPV6_MIN_MTU) {
                steps.push(Step::SetAddrGenModeNone { dev: dev.clone() });
            }
            for (local, peer) in self.pairs(side) {
                steps.push(Step::AddAddress {
                    dev: dev.clone(),
                    local,
                    peer,
                });
            }
            steps.push(Step::LinkUp { dev });
        }
        // IPv6: each peer through the other device, with this side's address as the source
        // (the kernel would otherwise prefer a source equal to the destination).
        for side in 0..2 {
            for (local, peer) in self.pairs(side) {
                if local.is_ipv6() {
                    steps.push(Step::AddPeerRoute {
                        dev: self.ends[side].dev.clone(),
                        local,
                        peer,
                    });
                }
            }
        }
        if self.routing {
            for side in 0..2 {
                for (local, _) in self.pairs(side) {
                    steps.push(Step::MoveLocalRoute {
                        dev: self.ends[side].dev.clone(),
                        addr: local,
                        table: self.table,
                    });
                }
            }
            for side in 0..2 {
                let wanted = match self.rules {
                    RuleSides::Both => true,
                    RuleSides::FirstOnly => side == 0,
                    RuleSides::SecondOnly => side == 1,
                };
                if wanted {
                    for family in self.families() {
                        steps.push(Step::AddRule {
                            dev: self.ends[side].dev.clone(),
                            family,
                            table: self.table,
                        });
                    }
                }
            }
        }
        // IPv6 `bind()` checks the interfaces' addresses, not table `local`: only IPv4 needs it.
        if self.nonlocal_bind && self.families().contains(&Family::Ipv4) {
            steps.push(Step::SetSysctl {
                key: nonlocal_bind_key(Family::Ipv4).to_string(),
                value: "1".into(),
            });
        }
        steps
    }
}

/// Every sysctl key `up` ever writes: the closed list an undo entry's key is checked against.
pub(crate) const SYSCTL_KEYS: &[&str] = &["net.ipv4.ip_nonlocal_bind"];

/// Below this MTU the kernel turns IPv6 off on a device.
pub(crate) const IPV6_MIN_MTU: u32 = 1280;

/// The `ip_nonlocal_bind` sysctl of a family.
pub(crate) fn nonlocal_bind_key(family: Family) -> &'static str {
    match family {
        Family::Ipv4 => "net.ipv4.ip_nonlocal_bind",
        Family::Ipv6 => "net.ipv6.ip_nonlocal_bind",
    }
}

fn check_usable(addr: &IpAddr) -> Result<(), SpecError> {
    let what = match addr {
        a if a.is_unspecified() => "unspecified",
        a if a.is_loopback() => "a loopback address",
        a if a.is_multicast() => "multicast",
        IpAddr::V4(a) if a.is_broadcast() => "the broadcast address",
        IpAddr::V6(a) if a.to_ipv4_mapped().is_some() => "an IPv4-mapped IPv6 address",
        IpAddr::V6(a) if a.is_unicast_link_local() => {
            "link-local (fe80::/10): a link-local address is only meaningful with a scope (a \
             device), and traffic to it would not take the tunnel; use a unique local address \
             such as fd00::1"
        }
        _ => return Ok(()),
    };
    Err(SpecError::Unusable { addr: *addr, what })
}

/// One step of the setup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Create a TUN or TAP device (an ioctl on /dev/net/tun).
    CreateTun {
        /// Device.
        dev: String,
        /// TUN or TAP.
        mode: DeviceMode,
    },
    /// Set a TAP device's MAC address.
    SetMac {
        /// Device.
        dev: String,
        /// The address.
        mac: MacAddr,
    },
    /// Set the MTU.
    SetMtu {
        /// Device.
        dev: String,
        /// MTU.
        mtu: u32,
    },
    /// Set the transmit queue length.
    SetTxQueueLen {
        /// Device.
        dev: String,
        /// Packets.
        len: u32,
    },
    /// Add a point-to-point address.
    AddAddress {
        /// Device.
        dev: String,
        /// Local address.
        local: IpAddr,
        /// Peer address.
        peer: IpAddr,
    },
    /// `addrgenmode none`: no link-local address, no router solicitations.
    SetAddrGenModeNone {
        /// Device.
        dev: String,
    },
    /// IPv6: the route to the peer through this device, with this device's address as source.
    AddPeerRoute {
        /// Device.
        dev: String,
        /// This side's address (the source).
        local: IpAddr,
        /// The peer (the destination).
        peer: IpAddr,
    },
    /// Bring the link up.
    LinkUp {
        /// Device.
        dev: String,
    },
    /// Delete the address's `local` route from table `local` and add it to `table`.
    MoveLocalRoute {
        /// Device.
        dev: String,
        /// The address.
        addr: IpAddr,
        /// Target table.
        table: u32,
    },
    /// `ip rule add iif DEV lookup TABLE`.
    AddRule {
        /// Device.
        dev: String,
        /// Family.
        family: Family,
        /// Table.
        table: u32,
    },
    /// Write a sysctl (in the namespace worked in).
    SetSysctl {
        /// Dotted key.
        key: String,
        /// Value.
        value: String,
    },
}

impl Step {
    /// The equivalent shell commands, in order (`ip -n NS …` inside a named namespace).
    pub fn commands(&self, netns: Option<&str>) -> Vec<String> {
        let ip = |fam: Option<Family>| {
            let mut s = String::from("ip");
            if fam == Some(Family::Ipv6) {
                s.push_str(" -6");
            }
            if let Some(ns) = netns {
                s.push_str(&format!(" -n {ns}"));
            }
            s
        };
        match self {
            Step::CreateTun { dev, mode } => {
                vec![format!("{} tuntap add dev {dev} mode {mode}", ip(None))]
            }
            Step::SetMac { dev, mac } => {
                vec![format!("{} link set dev {dev} address {mac}", ip(None))]
            }
            Step::SetMtu { dev, mtu } => vec![format!("{} link set dev {dev} mtu {mtu}", ip(None))],
            Step::SetTxQueueLen { dev, len } => {
                vec![format!("{} link set dev {dev} txqueuelen {len}", ip(None))]
            }
            Step::SetAddrGenModeNone { dev } => {
                vec![format!("{} link set dev {dev} addrgenmode none", ip(None))]
            }
            Step::AddAddress { dev, local, peer } => match local {
                IpAddr::V4(_) => vec![format!(
                    "{} address add {local} peer {peer} dev {dev}",
                    ip(None)
                )],
                IpAddr::V6(_) => vec![format!(
                    "{} address add {local}/128 dev {dev} nodad noprefixroute",
                    ip(Some(Family::Ipv6))
                )],
            },
            Step::AddPeerRoute { dev, local, peer } => vec![format!(
                "{} route add {peer}/128 dev {dev} src {local} proto static metric {IPV6_USER_METRIC}",
                ip(Some(Family::of(peer)))
            )],
            Step::LinkUp { dev } => vec![format!("{} link set dev {dev} up", ip(None))],
            Step::MoveLocalRoute { dev, addr, table } => {
                let fam = Family::of(addr);
                let tail = match fam {
                    Family::Ipv4 => format!("proto kernel scope host src {addr}"),
                    Family::Ipv6 => format!("proto kernel metric {IPV6_USER_METRIC}"),
                };
                vec![
                    format!(
                        "{} route del local {addr} dev {dev} table local",
                        ip(Some(fam))
                    ),
                    format!(
                        "{} route add local {addr} dev {dev} table {} {tail}",
                        ip(Some(fam)),
                        table_name(*table)
                    ),
                ]
            }
            Step::AddRule { dev, family, table } => vec![format!(
                "{} rule add iif {dev} lookup {table}",
                ip(Some(*family))
            )],
            Step::SetSysctl { key, value } => {
                let prefix = netns
                    .map(|ns| format!("ip netns exec {ns} "))
                    .unwrap_or_default();
                vec![format!("{prefix}sysctl -w {key}={value}")]
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input() -> SpecInput {
        SpecInput {
            devs: ["tun0".into(), "tun1".into()],
            table: 13,
            ..Default::default()
        }
    }

    fn addrs(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn default_plan_renders_the_classic_commands() {
        let spec = TunnelSpec::new(input()).unwrap();
        let cmds: Vec<String> = spec
            .plan([true, true])
            .iter()
            .flat_map(|s| s.commands(None))
            .collect();
        assert_eq!(
            cmds,
            vec![
                "ip tuntap add dev tun0 mode tun",
                "ip link set dev tun0 addrgenmode none",
                "ip address add 10.0.0.1 peer 10.0.0.2 dev tun0",
                "ip link set dev tun0 up",
                "ip tuntap add dev tun1 mode tun",
                "ip link set dev tun1 addrgenmode none",
                "ip address add 10.0.0.2 peer 10.0.0.1 dev tun1",
                "ip link set dev tun1 up",
                "ip route del local 10.0.0.1 dev tun0 table local",
                "ip route add local 10.0.0.1 dev tun0 table 13 proto kernel scope host src 10.0.0.1",
                "ip route del local 10.0.0.2 dev tun1 table local",
                "ip route add local 10.0.0.2 dev tun1 table 13 proto kernel scope host src 10.0.0.2",
                "ip rule add iif tun0 lookup 13",
                "ip rule add iif tun1 lookup 13",
                "sysctl -w net.ipv4.ip_nonlocal_bind=1",
            ]
        );
    }

    #[test]
    fn dual_stack_in_a_namespace() {
        let mut i = input();
        i.addrs = [
            addrs(&["fd00::1", "10.1.0.1"]),
            addrs(&["10.1.0.2", "fd00::2"]),
        ];
        i.mtu = Some(9000);
        i.txqueuelen = Some(5000);
        let spec = TunnelSpec::new(i).unwrap();
        assert_eq!(
            spec.pairs(0),
            vec![
                ("10.1.0.1".parse().unwrap(), "10.1.0.2".parse().unwrap()),
                ("fd00::1".parse().unwrap(), "fd00::2".parse().unwrap()),
            ]
        );
        let cmds: Vec<String> = spec
            .plan([false, true])
            .iter()
            .flat_map(|s| s.commands(Some("lab")))
            .collect();
        let expected = [
            "ip -n lab link set dev tun0 mtu 9000",
            "ip -n lab link set dev tun0 txqueuelen 5000",
            "ip -n lab link set dev tun0 addrgenmode none",
            "ip -n lab address add 10.1.0.1 peer 10.1.0.2 dev tun0",
            "ip -6 -n lab address add fd00::1/128 dev tun0 nodad noprefixroute",
            "ip -n lab link set dev tun0 up",
            "ip -n lab tuntap add dev tun1 mode tun",
            "ip -n lab link set dev tun1 mtu 9000",
            "ip -n lab link set dev tun1 txqueuelen 5000",
            "ip -n lab link set dev tun1 addrgenmode none",
            "ip -n lab address add 10.1.0.2 peer 10.1.0.1 dev tun1",
            "ip -6 -n lab address add fd00::2/128 dev tun1 nodad noprefixroute",
            "ip -n lab link set dev tun1 up",
            "ip -6 -n lab route add fd00::2/128 dev tun0 src fd00::1 proto static metric 1024",
            "ip -6 -n lab route add fd00::1/128 dev tun1 src fd00::2 proto static metric 1024",
            "ip -n lab route del local 10.1.0.1 dev tun0 table local",
            "ip -n lab route add local 10.1.0.1 dev tun0 table 13 proto kernel scope host src 10.1.0.1",
            "ip -6 -n lab route del local fd00::1 dev tun0 table local",
            "ip -6 -n lab route add local fd00::1 dev tun0 table 13 proto kernel metric 1024",
            "ip -n lab route del local 10.1.0.2 dev tun1 table local",
            "ip -n lab route add local 10.1.0.2 dev tun1 table 13 proto kernel scope host src 10.1.0.2",
            "ip -6 -n lab route del local fd00::2 dev tun1 table local",
            "ip -6 -n lab route add local fd00::2 dev tun1 table 13 proto kernel metric 1024",
            "ip -n lab rule add iif tun0 lookup 13",
            "ip -6 -n lab rule add iif tun0 lookup 13",
            "ip -n lab rule add iif tun1 lookup 13",
            "ip -6 -n lab rule add iif tun1 lookup 13",
            "ip netns exec lab sysctl -w net.ipv4.ip_nonlocal_bind=1",
        ];
        assert_eq!(cmds, expected);
    }

    #[test]
    fn one_sided_rules_and_no_routing() {
        let mut i = input();
        i.rules = RuleSides::FirstOnly;
        let spec = TunnelSpec::new(i.clone()).unwrap();
        let rules: Vec<Step> = spec
            .plan([true, true])
            .into_iter()
            .filter(|s| matches!(s, Step::AddRule { .. }))
            .collect();
        assert_eq!(rules.len(), 1);
        i.no_routing = true;
        let spec = TunnelSpec::new(i).unwrap();
        assert!(
            !spec
                .plan([true, true])
                .iter()
                .any(|s| matches!(s, Step::AddRule { .. } | Step::MoveLocalRoute { .. }))
        );
    }

    #[test]
    fn bad_input_is_refused_with_the_value() {
        let check = |f: &dyn Fn(&mut SpecInput), needle: &str| {
            let mut i = input();
            f(&mut i);
            let err = TunnelSpec::new(i).unwrap_err().to_string();
            assert!(err.contains(needle), "{err:?} should mention {needle:?}");
        };
        check(
            &|i| i.devs[0] = "averyveryverylongname".into(),
            "averyveryverylongname",
        );
        check(&|i| i.devs[1] = "tun0".into(), "\"tun0\"");
        check(&|i| i.table = 255, "table 255 is reserved");
        check(&|i| i.table = 0, "table 0 is reserved");
        check(&|i| i.table = 254, "254");
        check(
            &|i| i.addrs = [addrs(&["10.0.0.1"]), addrs(&["10.0.0.1"])],
            "duplicate address 10.0.0.1",
        );
        check(
            &|i| i.addrs = [addrs(&["10.0.0.1"]), addrs(&["fd00::2"])],
            "10.0.0.1",
        );
        check(
            &|i| i.addrs = [addrs(&["10.0.0.1", "10.0.0.3"]), addrs(&["10.0.0.2"])],
            "two IPv4 addresses",
        );
        check(
            &|i| i.addrs = [addrs(&["10.0.0.1"]), vec![]],
            "--addr0 and --addr1",
        );
        check(
            &|i| i.addrs = [addrs(&["127.0.0.1"]), addrs(&["10.0.0.2"])],
            "loopback",
        );
        check(
            &|i| i.addrs = [addrs(&["224.0.0.1"]), addrs(&["10.0.0.2"])],
            "multicast",
        );
        check(
            &|i| i.addrs = [addrs(&["0.0.0.0"]), addrs(&["10.0.0.2"])],
            "unspecified",
        );
        check(&|i| i.mtu = Some(20), "MTU 20");
        check(
            &|i| i.addrs = [addrs(&["fe80::1"]), addrs(&["fd00::2"])],
            "fe80::1 cannot be a tunnel end: it is link-local",
        );
        check(
            &|i| {
                i.addrs = [addrs(&["fd00::1"]), addrs(&["fd00::2"])];
                i.mtu = Some(1000);
            },
            "IPv6 needs at least 1280",
        );
    }

    #[test]
    fn tap_mode_creates_tap_devices_with_stable_macs() {
        let mut i = input();
        i.devs = ["tap0".into(), "tap1".into()];
        i.mode = DeviceMode::Tap;
        let spec = TunnelSpec::new(i.clone()).unwrap();
        let (m0, m1) = (MacAddr::derived("tap0"), MacAddr::derived("tap1"));
        assert_ne!(m0, m1);
        assert_eq!(m0, MacAddr::derived("tap0"), "stable");
        assert_eq!(m0.0[0], 0x02, "locally administered unicast");
        let cmds: Vec<String> = spec
            .plan([true, false])
            .iter()
            .flat_map(|s| s.commands(None))
            .take(6)
            .collect();
        assert_eq!(
            cmds,
            vec![
                "ip tuntap add dev tap0 mode tap".to_string(),
                format!("ip link set dev tap0 address {m0}"),
                "ip link set dev tap0 addrgenmode none".into(),
                "ip address add 10.0.0.1 peer 10.0.0.2 dev tap0".into(),
                "ip link set dev tap0 up".into(),
                // An attached device keeps its own address unless one is asked for.
                "ip link set dev tap1 addrgenmode none".into(),
            ]
        );
        i.macs = [None, Some("02:00:00:00:00:0b".parse().unwrap())];
        let spec = TunnelSpec::new(i).unwrap();
        assert_eq!(spec.mac(1, false), spec.macs[1]);
        assert_eq!(spec.mac(0, true), Some(m0));
        // Through a state file and back.
        let json = serde_json::to_string(&spec).unwrap();
        assert!(json.contains("\"mode\":\"tap\"") && json.contains("02:00:00:00:00:0b"));
        let back: TunnelSpec = serde_json::from_str(&json).unwrap();
        assert_eq!(back, spec);
        back.revalidate().unwrap();
        // A TUN tunnel's record has neither (and an old one without `mode` is TUN).
        let tun = TunnelSpec::new(input()).unwrap();
        let json = serde_json::to_string(&tun).unwrap();
        assert!(!json.contains("macs"), "{json}");
        let old = json.replace("\"mode\":\"tun\",", "");
        assert_eq!(serde_json::from_str::<TunnelSpec>(&old).unwrap(), tun);
    }

    #[test]
    fn mac_addresses_are_checked() {
        assert_eq!(
            "02:0A:0b:00:00:01".parse::<MacAddr>().unwrap().to_string(),
            "02:0a:0b:00:00:01"
        );
        for bad in [
            "",
            "02:00:00:00:00",
            "02:00:00:00:00:01:02",
            "2:00:00:00:00:01",
            "02-00-00-00-00-01",
            "0g:00:00:00:00:01",
        ] {
            assert!(
                matches!(bad.parse::<MacAddr>(), Err(MacError::Syntax(_))),
                "{bad:?}"
            );
        }
        assert!(matches!(
            "01:00:5e:00:00:01".parse::<MacAddr>(),
            Err(MacError::Multicast(_))
        ));
        assert!(matches!(
            "ff:ff:ff:ff:ff:ff".parse::<MacAddr>(),
            Err(MacError::Multicast(_))
        ));
        assert_eq!("00:00:00:00:00:00".parse::<MacAddr>(), Err(MacError::Zero));
        assert!(serde_json::from_str::<MacAddr>("\"01:00:00:00:00:01\"").is_err());
        let mac = "02:00:00:00:00:01".parse::<MacAddr>().unwrap();
        let mut i = input();
        i.macs = [Some(mac), None];
        assert_eq!(
            TunnelSpec::new(i.clone()).unwrap_err().to_string(),
            "--mac0 applies to --mode tap only: a TUN device has no link-layer address"
        );
        i.mode = DeviceMode::Tap;
        i.macs = [Some(mac), Some(mac)];
        assert_eq!(
            TunnelSpec::new(i.clone()).unwrap_err(),
            SpecError::SameMac(mac)
        );
        i.macs = [None, None];
        i.mtu = Some(65535);
        assert!(
            TunnelSpec::new(i.clone())
                .unwrap_err()
                .to_string()
                .contains("a TAP device takes 68 to 65521")
        );
        i.mtu = Some(65521);
        assert!(TunnelSpec::new(i).is_ok());
    }
}
