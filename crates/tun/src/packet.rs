//! Decoding IP packets and Ethernet frames into one-line summaries for the packet log, and
//! finding the IP header in a frame ([`ip_offset`]). Pure; no I/O.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The transport part of a packet summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// TCP with ports and flags (e.g. `SA` for SYN+ACK).
    Tcp {
        /// Source port.
        src_port: u16,
        /// Destination port.
        dst_port: u16,
        /// Flags as letters: F S R P A U.
        flags: String,
    },
    /// UDP with ports.
    Udp {
        /// Source port.
        src_port: u16,
        /// Destination port.
        dst_port: u16,
    },
    /// ICMP (v4) type and code.
    Icmp {
        /// ICMP type.
        kind: u8,
        /// ICMP code.
        code: u8,
    },
    /// ICMPv6 type and code.
    Icmpv6 {
        /// ICMPv6 type.
        kind: u8,
        /// ICMPv6 code.
        code: u8,
    },
    /// A fragment other than the first: only the protocol is known.
    Fragment(u8),
    /// Another protocol number (or a transport header too short to read).
    Other(u8),
}

/// An IPv6 extension header (or the IPv4 fragment fields), by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExtHeader {
    /// Hop-by-hop options (0).
    HopByHop,
    /// Routing header (43).
    Routing,
    /// Destination options (60).
    DestOpts,
    /// Authentication header (51).
    Auth,
    /// Fragment header (IPv6 44), or the IPv4 fragment fields.
    Fragment {
        /// Identification.
        id: u32,
        /// Offset in bytes.
        offset: u16,
        /// More fragments follow.
        more: bool,
    },
}

impl fmt::Display for ExtHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExtHeader::HopByHop => write!(f, "hop-by-hop"),
            ExtHeader::Routing => write!(f, "routing"),
            ExtHeader::DestOpts => write!(f, "dest-opts"),
            ExtHeader::Auth => write!(f, "auth"),
            ExtHeader::Fragment { id, offset, more } => write!(
                f,
                "fragment id {id} offset {offset}{}",
                if *more { " more" } else { " last" }
            ),
        }
    }
}

/// A decoded packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Transport details.
    pub transport: Transport,
    /// Extension headers before the transport (IPv6), or the fragment fields (IPv4).
    pub ext: Vec<ExtHeader>,
    /// Total length in bytes (as captured).
    pub len: usize,
}

/// Why a buffer is not a decodable IP packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// Empty buffer.
    Empty,
    /// First nibble is neither 4 nor 6.
    UnknownVersion(u8),
    /// Shorter than its headers claim.
    Truncated,
    /// An Ethernet frame shorter than its header (and tags).
    ShortFrame(usize),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Empty => write!(f, "empty packet"),
            DecodeError::UnknownVersion(v) => write!(f, "not IP (version nibble {v})"),
            DecodeError::Truncated => write!(f, "truncated IP packet"),
            DecodeError::ShortFrame(n) => {
                write!(f, "{n}-byte frame is shorter than its Ethernet header")
            }
        }
    }
}

/// Decodes an IPv4 or IPv6 packet (no packet-info header).
pub fn decode(pkt: &[u8]) -> Result<Summary, DecodeError> {
    let first = *pkt.first().ok_or(DecodeError::Empty)?;
    match first >> 4 {
        4 => decode_v4(pkt),
        6 => decode_v6(pkt),
        v => Err(DecodeError::UnknownVersion(v)),
    }
}

fn decode_v4(pkt: &[u8]) -> Result<Summary, DecodeError> {
    let ihl = usize::from(pkt[0] & 0x0f) * 4;
    if ihl < 20 || pkt.len() < ihl {
        return Err(DecodeError::Truncated);
    }
    let src = Ipv4Addr::new(pkt[12], pkt[13], pkt[14], pkt[15]);
    let dst = Ipv4Addr::new(pkt[16], pkt[17], pkt[18], pkt[19]);
    let proto = pkt[9];
    let frag = u16::from_be_bytes([pkt[6], pkt[7]]);
    let (offset, more) = ((frag & 0x1fff) * 8, frag & 0x2000 != 0);
    let mut ext = Vec::new();
    if offset != 0 || more {
        ext.push(ExtHeader::Fragment {
            id: u32::from(u16::from_be_bytes([pkt[4], pkt[5]])),
            offset,
            more,
        });
    }
    let transport = if offset != 0 {
        Transport::Fragment(proto)
    } else {
        transport(proto, &pkt[ihl..], false)
    };
    Ok(Summary {
        src: src.into(),
        dst: dst.into(),
        transport,
        ext,
        len: pkt.len(),
    })
}

fn decode_v6(pkt: &[u8]) -> Result<Summary, DecodeError> {
    if pkt.len() < 40 {
        return Err(DecodeError::Truncated);
    }
    let addr = |at: usize| {
        let mut b = [0u8; 16];
        b.copy_from_slice(&pkt[at..at + 16]);
        Ipv6Addr::from(b)
    };
    // Walk the extension headers (bounded), naming each.
    let mut next = pkt[6];
    let mut off = 40;
    let mut ext = Vec::new();
    let mut later_fragment = false;
    for _ in 0..8 {
        let Some(h) = pkt.get(off..off + 8) else {
            break;
        };
        let (name, len) = match next {
            0 => (ExtHeader::HopByHop, (usize::from(h[1]) + 1) * 8),
            43 => (ExtHeader::Routing, (usize::from(h[1]) + 1) * 8),
            60 => (ExtHeader::DestOpts, (usize::from(h[1]) + 1) * 8),
            51 => (ExtHeader::Auth, (usize::from(h[1]) + 2) * 4),
            44 => {
                let fo = u16::from_be_bytes([h[2], h[3]]);
                let offset = fo & 0xfff8;
                later_fragment = offset != 0;
                (
                    ExtHeader::Fragment {
                        id: u32::from_be_bytes([h[4], h[5], h[6], h[7]]),
                        offset,
                        more: fo & 1 != 0,
                    },
                    8,
                )
            }
            _ => break,
        };
        ext.push(name);
        next = h[0];
        off += len;
        if later_fragment {
            break;
        }
    }
    let rest = pkt.get(off..).unwrap_or(&[]);
    Ok(Summary {
        src: addr(8).into(),
        dst: addr(24).into(),
        transport: if later_fragment {
            Transport::Fragment(next)
        } else {
            transport(next, rest, true)
        },
        ext,
        len: pkt.len(),
    })
}

/// The name of an IP protocol number, for the ones a tunnel may see.
pub fn protocol_name(proto: u8) -> Option<&'static str> {
    Some(match proto {
        0 => "hop-by-hop",
        1 => "ICMP",
        2 => "IGMP",
        4 => "IPIP",
        6 => "TCP",
        17 => "UDP",
        41 => "IPv6-in-IP",
        43 => "IPv6-routing",
        44 => "IPv6-fragment",
        47 => "GRE",
        50 => "ESP",
        51 => "AH",
        58 => "ICMPv6",
        59 => "no-next-header",
        60 => "IPv6-dest-opts",
        103 => "PIM",
        112 => "VRRP",
        132 => "SCTP",
        135 => "IPv6-mobility",
        136 => "UDP-Lite",
        _ => return None,
    })
}

fn transport(proto: u8, l4: &[u8], v6: bool) -> Transport {
    let port = |at: usize| u16::from_be_bytes([l4[at], l4[at + 1]]);
    match proto {
        6 if l4.len() >= 14 => {
            let bits = l4[13];
            let flags: String = [
                (0x01, 'F'),
                (0x02, 'S'),
                (0x04, 'R'),
                (0x08, 'P'),
                (0x10, 'A'),
                (0x20, 'U'),
            ]
            .iter()
            .filter(|(bit, _)| bits & bit != 0)
            .map(|&(_, c)| c)
            .collect();
            Transport::Tcp {
                src_port: port(0),
                dst_port: port(2),
                flags,
            }
        }
        17 if l4.len() >= 4 => Transport::Udp {
            src_port: port(0),
            dst_port: port(2),
        },
        1 if !v6 && l4.len() >= 2 => Transport::Icmp {
            kind: l4[0],
            code: l4[1],
        },
        58 if v6 && l4.len() >= 2 => Transport::Icmpv6 {
            kind: l4[0],
            code: l4[1],
        },
        other => Transport::Other(other),
    }
}

fn icmp_name(kind: u8) -> Option<&'static str> {
    Some(match kind {
        0 => "echo-reply",
        3 => "unreachable",
        8 => "echo-request",
        11 => "time-exceeded",
        _ => return None,
    })
}

fn icmpv6_name(kind: u8) -> Option<&'static str> {
    Some(match kind {
        1 => "unreachable",
        2 => "packet-too-big",
        3 => "time-exceeded",
        128 => "echo-request",
        129 => "echo-reply",
        133 => "router-solicitation",
        134 => "router-advertisement",
        135 => "neighbor-solicitation",
        136 => "neighbor-advertisement",
        143 => "mld2-report",
        _ => return None,
    })
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (src, dst) = (self.src, self.dst);
        match &self.transport {
            Transport::Tcp {
                src_port,
                dst_port,
                flags,
            } => write!(
                f,
                "TCP {} > {} [{flags}]",
                sock(src, *src_port),
                sock(dst, *dst_port)
            )?,
            Transport::Udp { src_port, dst_port } => {
                write!(f, "UDP {} > {}", sock(src, *src_port), sock(dst, *dst_port))?
            }
            Transport::Icmp { kind, code } => {
                write!(f, "ICMP {src} > {dst} ")?;
                match icmp_name(*kind) {
                    Some(name) => write!(f, "{name}")?,
                    None => write!(f, "type {kind} code {code}")?,
                }
            }
            Transport::Icmpv6 { kind, code } => {
                write!(f, "ICMPv6 {src} > {dst} ")?;
                match icmpv6_name(*kind) {
                    Some(name) => write!(f, "{name}")?,
                    None => write!(f, "type {kind} code {code}")?,
                }
            }
            Transport::Fragment(p) => match protocol_name(*p) {
                Some(name) => write!(f, "{name} fragment {src} > {dst}")?,
                None => write!(f, "proto {p} fragment {src} > {dst}")?,
            },
            Transport::Other(p) => match protocol_name(*p) {
                Some(name) => write!(f, "{name} {src} > {dst}")?,
                None => write!(f, "proto {p} {src} > {dst}")?,
            },
        }
        if !self.ext.is_empty() {
            let names: Vec<String> = self.ext.iter().map(|e| e.to_string()).collect();
            write!(f, " ({})", names.join(", "))?;
        }
        write!(f, ", length {}", self.len)
    }
}

// ---------------------------------------------------------------------------------------------
// Ethernet (TAP devices)
// ---------------------------------------------------------------------------------------------

/// What a packet on the relay's path starts with.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum LinkLayer {
    /// The IP header: a raw IPv4 or IPv6 packet, as a TUN device carries it.
    #[default]
    Ip,
    /// An Ethernet header (destination, source, EtherType, possibly 802.1Q/802.1ad tags),
    /// as a TAP device carries it.
    Ethernet,
}

impl LinkLayer {
    /// `ip` or `ethernet`.
    pub fn name(self) -> &'static str {
        match self {
            LinkLayer::Ip => "ip",
            LinkLayer::Ethernet => "ethernet",
        }
    }
}

/// Length of an Ethernet header without tags.
pub const ETH_HLEN: usize = 14;
/// EtherType of IPv4.
pub const ETHERTYPE_IPV4: u16 = 0x0800;
/// EtherType of ARP.
pub const ETHERTYPE_ARP: u16 = 0x0806;
/// EtherType of IPv6.
pub const ETHERTYPE_IPV6: u16 = 0x86DD;
/// TPID of an 802.1Q (VLAN) tag.
pub const ETHERTYPE_VLAN: u16 = 0x8100;
/// TPID of an 802.1ad (service VLAN, "QinQ") tag.
pub const ETHERTYPE_QINQ: u16 = 0x88A8;
/// Tags followed before giving up (802.1ad + 802.1Q is two).
const MAX_TAGS: usize = 4;

fn is_tag(ethertype: u16) -> bool {
    // 0x9100: the pre-802.1ad QinQ TPID some switches still use (libpcap's `vlan` knows it).
    matches!(ethertype, ETHERTYPE_VLAN | ETHERTYPE_QINQ | 0x9100)
}

/// The payload of an Ethernet frame: its EtherType (after any VLAN tags), where it starts,
/// and the VLAN IDs of the tags, outermost first. `None` when the frame is too short for its
/// header and tags.
pub fn ether_payload(frame: &[u8]) -> Option<(u16, usize, Vec<u16>)> {
    let mut at = 12;
    let mut vlans = Vec::new();
    for _ in 0..=MAX_TAGS {
        let ty = u16::from_be_bytes([*frame.get(at)?, *frame.get(at + 1)?]);
        if !is_tag(ty) {
            return Some((ty, at + 2, vlans));
        }
        let tci = u16::from_be_bytes([*frame.get(at + 2)?, *frame.get(at + 3)?]);
        vlans.push(tci & 0x0fff);
        at += 4;
    }
    None
}

/// Where the IP header starts in a packet of link layer `link`: 0 for [`LinkLayer::Ip`];
/// for an Ethernet frame, after its header and any VLAN tags (14, 18, 22, …) when the
/// EtherType says IPv4 or IPv6 — `None` for anything else (ARP, another EtherType, a frame
/// too short). Cost: a look at ≤ 30 bytes, no allocation.
pub fn ip_offset(link: LinkLayer, packet: &[u8]) -> Option<usize> {
    match link {
        LinkLayer::Ip => Some(0),
        LinkLayer::Ethernet => {
            let mut at = 12;
            for _ in 0..=MAX_TAGS {
                let ty = u16::from_be_bytes([*packet.get(at)?, *packet.get(at + 1)?]);
                match ty {
                    ETHERTYPE_IPV4 | ETHERTYPE_IPV6 => return Some(at + 2),
                    t if is_tag(t) => at += 4,
                    _ => return None,
                }
            }
            None
        }
    }
}

/// A MAC address, for summaries: `9e:9f:91:56:7f:9b`.
fn mac(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// What an Ethernet frame carries, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FramePayload {
    /// An IP packet (or why it could not be decoded).
    Ip(Result<Summary, DecodeError>),
    /// ARP over Ethernet/IPv4.
    Arp {
        /// 1 request, 2 reply.
        op: u16,
        /// Sender hardware address.
        sha: [u8; 6],
        /// Sender protocol address.
        spa: Ipv4Addr,
        /// Target protocol address.
        tpa: Ipv4Addr,
    },
    /// Another EtherType (or ARP for something else than Ethernet/IPv4), with its length.
    Other {
        /// The EtherType.
        ethertype: u16,
        /// Bytes after the header.
        len: usize,
    },
}

/// A decoded Ethernet frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameSummary {
    /// Source MAC address.
    pub src: [u8; 6],
    /// Destination MAC address.
    pub dst: [u8; 6],
    /// VLAN IDs of its tags, outermost first.
    pub vlans: Vec<u16>,
    /// What it carries.
    pub payload: FramePayload,
}

/// Decodes an Ethernet frame (no virtio-net header): addresses, VLAN tags, then IP (as
/// [`decode`]), ARP, or the EtherType.
pub fn decode_frame(frame: &[u8]) -> Result<FrameSummary, DecodeError> {
    let (ethertype, at, vlans) =
        ether_payload(frame).ok_or(DecodeError::ShortFrame(frame.len()))?;
    let mut dst = [0u8; 6];
    let mut src = [0u8; 6];
    dst.copy_from_slice(&frame[0..6]);
    src.copy_from_slice(&frame[6..12]);
    let rest = &frame[at..];
    let payload = match ethertype {
        ETHERTYPE_IPV4 | ETHERTYPE_IPV6 => FramePayload::Ip(decode(rest)),
        // Ethernet (1), IPv4 (0x0800), 6- and 4-byte addresses.
        ETHERTYPE_ARP if rest.len() >= 28 && rest[0..6] == [0, 1, 8, 0, 6, 4] => {
            let mut sha = [0u8; 6];
            sha.copy_from_slice(&rest[8..14]);
            FramePayload::Arp {
                op: u16::from_be_bytes([rest[6], rest[7]]),
                sha,
                spa: Ipv4Addr::new(rest[14], rest[15], rest[16], rest[17]),
                tpa: Ipv4Addr::new(rest[24], rest[25], rest[26], rest[27]),
            }
        }
        ethertype => FramePayload::Other {
            ethertype,
            len: rest.len(),
        },
    };
    Ok(FrameSummary {
        src,
        dst,
        vlans,
        payload,
    })
}

impl fmt::Display for FrameSummary {
    /// `9e:9f:91:56:7f:9b > ff:ff:ff:ff:ff:ff, vlan 100, ARP who-has 10.0.0.2 tell 10.0.0.1`;
    /// an IP packet as [`Summary`] shows it (its length is the IP packet's).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} > {}", mac(&self.src), mac(&self.dst))?;
        for v in &self.vlans {
            write!(f, ", vlan {v}")?;
        }
        match &self.payload {
            FramePayload::Ip(Ok(s)) => write!(f, ", {s}"),
            FramePayload::Ip(Err(e)) => write!(f, ", {e}"),
            FramePayload::Arp {
                op: 1, spa, tpa, ..
            } => write!(f, ", ARP who-has {tpa} tell {spa}"),
            FramePayload::Arp {
                op: 2, sha, spa, ..
            } => write!(f, ", ARP reply {spa} is-at {}", mac(sha)),
            FramePayload::Arp { op, spa, tpa, .. } => {
                write!(f, ", ARP op {op} {spa} > {tpa}")
            }
            FramePayload::Other { ethertype, len } => {
                write!(f, ", ethertype {ethertype:#06x}, length {len}")
            }
        }
    }
}

fn sock(addr: IpAddr, port: u16) -> String {
    match addr {
        IpAddr::V4(a) => format!("{a}:{port}"),
        IpAddr::V6(a) => format!("[{a}]:{port}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An ICMP echo request as `ping` sends it: 20 B IP header + 8 B ICMP + 56 B payload.
    fn ping_v4() -> Vec<u8> {
        let mut p = vec![0u8; 84];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&84u16.to_be_bytes());
        p[8] = 64;
        p[9] = 1;
        p[12..16].copy_from_slice(&[10, 0, 0, 1]);
        p[16..20].copy_from_slice(&[10, 0, 0, 2]);
        p[20] = 8;
        p
    }

    #[test]
    fn decodes_icmp_echo_request() {
        let s = decode(&ping_v4()).unwrap();
        assert_eq!(s.len, 84);
        assert_eq!(
            s.to_string(),
            "ICMP 10.0.0.1 > 10.0.0.2 echo-request, length 84"
        );
    }

    #[test]
    fn decodes_tcp_syn_ack_v6() {
        let mut p = vec![0u8; 60];
        p[0] = 0x60;
        p[6] = 6;
        p[8..24].copy_from_slice(&"fd00::1".parse::<Ipv6Addr>().unwrap().octets());
        p[24..40].copy_from_slice(&"fd00::2".parse::<Ipv6Addr>().unwrap().octets());
        p[40..42].copy_from_slice(&8080u16.to_be_bytes());
        p[42..44].copy_from_slice(&40000u16.to_be_bytes());
        p[53] = 0x12;
        let s = decode(&p).unwrap();
        assert_eq!(
            s.to_string(),
            "TCP [fd00::1]:8080 > [fd00::2]:40000 [SA], length 60"
        );
    }

    #[test]
    fn decodes_udp_after_hop_by_hop_header() {
        let mut p = vec![0u8; 56];
        p[0] = 0x60;
        p[6] = 0; // hop-by-hop
        p[40] = 17; // next: UDP
        p[41] = 0; // 8 bytes long
        p[48..50].copy_from_slice(&53u16.to_be_bytes());
        p[50..52].copy_from_slice(&5353u16.to_be_bytes());
        let s = decode(&p).unwrap();
        assert_eq!(
            s.transport,
            Transport::Udp {
                src_port: 53,
                dst_port: 5353
            }
        );
    }

    fn v6(next: u8, len: usize) -> Vec<u8> {
        let mut p = vec![0u8; len];
        p[0] = 0x60;
        p[6] = next;
        p[8..24].copy_from_slice(&"fd00::1".parse::<Ipv6Addr>().unwrap().octets());
        p[24..40].copy_from_slice(&"fd00::2".parse::<Ipv6Addr>().unwrap().octets());
        p
    }

    #[test]
    fn names_ipv6_extension_headers_and_fragments() {
        // Hop-by-hop, then a first fragment (more follow) of a UDP datagram.
        let mut p = v6(0, 64);
        p[40] = 44; // next: fragment
        p[48] = 17; // fragment's next: UDP
        p[50..52].copy_from_slice(&1u16.to_be_bytes()); // offset 0, M
        p[52..56].copy_from_slice(&7u32.to_be_bytes());
        p[56..58].copy_from_slice(&5000u16.to_be_bytes());
        p[58..60].copy_from_slice(&6000u16.to_be_bytes());
        assert_eq!(
            decode(&p).unwrap().to_string(),
            "UDP [fd00::1]:5000 > [fd00::2]:6000 (hop-by-hop, fragment id 7 offset 0 more), length 64"
        );
        // A later fragment: no ports to read.
        let mut q = v6(44, 100);
        q[40] = 17;
        q[42..44].copy_from_slice(&1232u16.to_be_bytes());
        q[44..48].copy_from_slice(&7u32.to_be_bytes());
        assert_eq!(
            decode(&q).unwrap().to_string(),
            "UDP fragment fd00::1 > fd00::2 (fragment id 7 offset 1232 last), length 100"
        );
        // Routing and destination options, then ICMPv6.
        let mut r = v6(43, 64);
        r[40] = 60;
        r[48] = 58;
        r[56] = 128;
        assert_eq!(
            decode(&r).unwrap().to_string(),
            "ICMPv6 fd00::1 > fd00::2 echo-request (routing, dest-opts), length 64"
        );
        // Known protocols by name.
        assert_eq!(
            decode(&v6(50, 48)).unwrap().to_string(),
            "ESP fd00::1 > fd00::2, length 48"
        );
    }

    #[test]
    fn names_ipv4_fragments() {
        let mut p = ping_v4();
        p[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
        p[6..8].copy_from_slice(&(185u16).to_be_bytes()); // offset 185*8 = 1480, last
        assert_eq!(
            decode(&p).unwrap().to_string(),
            "ICMP fragment 10.0.0.1 > 10.0.0.2 (fragment id 4660 offset 1480 last), length 84"
        );
    }

    #[test]
    fn rejects_garbage_without_panicking() {
        assert_eq!(decode(&[]), Err(DecodeError::Empty));
        assert_eq!(decode(&[0x10, 0, 0]), Err(DecodeError::UnknownVersion(1)));
        assert_eq!(decode(&[0x45, 0, 0]), Err(DecodeError::Truncated));
        assert_eq!(decode(&[0x60; 39]), Err(DecodeError::Truncated));
        // Header length field larger than the buffer.
        let mut p = ping_v4();
        p[0] = 0x4f;
        p.truncate(30);
        assert_eq!(decode(&p), Err(DecodeError::Truncated));
        // Truncated transport headers decode as "other".
        let mut q = ping_v4();
        q[9] = 6;
        q.truncate(24);
        assert_eq!(decode(&q).unwrap().transport, Transport::Other(6));
    }

    fn frame(ethertype: &[u8], payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&[0x02, 0, 0, 0, 0, 1]);
        f.extend_from_slice(ethertype);
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn finds_the_ip_header_after_ethernet_and_vlan_tags() {
        let p = ping_v4();
        assert_eq!(ip_offset(LinkLayer::Ip, &p), Some(0));
        assert_eq!(
            ip_offset(LinkLayer::Ethernet, &frame(&[8, 0], &p)),
            Some(14)
        );
        assert_eq!(
            ip_offset(
                LinkLayer::Ethernet,
                &frame(&[0x81, 0, 0, 100, 0x86, 0xdd], &p)
            ),
            Some(18)
        );
        assert_eq!(
            ip_offset(
                LinkLayer::Ethernet,
                &frame(&[0x88, 0xa8, 0, 5, 0x81, 0, 0, 100, 8, 0], &p)
            ),
            Some(22)
        );
        assert_eq!(ip_offset(LinkLayer::Ethernet, &frame(&[8, 6], &p)), None);
        assert_eq!(ip_offset(LinkLayer::Ethernet, &[0; 13]), None);
        assert_eq!(
            ip_offset(LinkLayer::Ethernet, &frame(&[0x81, 0, 0], &[])),
            None
        );
    }

    #[test]
    fn decodes_frames_arp_and_vlan() {
        let s = decode_frame(&frame(&[8, 0], &ping_v4())).unwrap();
        assert_eq!(
            s.to_string(),
            "02:00:00:00:00:01 > ff:ff:ff:ff:ff:ff, ICMP 10.0.0.1 > 10.0.0.2 echo-request, length 84"
        );
        let mut arp = vec![0, 1, 8, 0, 6, 4, 0, 1, 2, 0, 0, 0, 0, 1, 10, 0, 0, 1];
        arp.extend_from_slice(&[0; 6]);
        arp.extend_from_slice(&[10, 0, 0, 2]);
        assert_eq!(
            decode_frame(&frame(&[0x81, 0, 0x20, 7, 8, 6], &arp))
                .unwrap()
                .to_string(),
            "02:00:00:00:00:01 > ff:ff:ff:ff:ff:ff, vlan 7, ARP who-has 10.0.0.2 tell 10.0.0.1"
        );
        arp[7] = 2;
        assert!(
            decode_frame(&frame(&[8, 6], &arp))
                .unwrap()
                .to_string()
                .ends_with("ARP reply 10.0.0.1 is-at 02:00:00:00:00:01")
        );
        assert_eq!(
            decode_frame(&frame(&[0x88, 0xb5], b"hello"))
                .unwrap()
                .to_string(),
            "02:00:00:00:00:01 > ff:ff:ff:ff:ff:ff, ethertype 0x88b5, length 5"
        );
        assert_eq!(decode_frame(&[1, 2, 3]), Err(DecodeError::ShortFrame(3)));
    }
}
