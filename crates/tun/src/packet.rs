//! Decoding IP packets into one-line summaries for the packet log. Pure; no I/O.

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
    /// Another protocol number, or a non-first fragment.
    Other(u8),
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
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Empty => write!(f, "empty packet"),
            DecodeError::UnknownVersion(v) => write!(f, "not IP (version nibble {v})"),
            DecodeError::Truncated => write!(f, "truncated IP packet"),
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
    let frag_offset = u16::from_be_bytes([pkt[6], pkt[7]]) & 0x1fff;
    let transport = if frag_offset != 0 {
        Transport::Other(proto)
    } else {
        transport(proto, &pkt[ihl..], false)
    };
    Ok(Summary {
        src: src.into(),
        dst: dst.into(),
        transport,
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
    // Skip the common extension headers (hop-by-hop, routing, destination options).
    let mut next = pkt[6];
    let mut off = 40;
    for _ in 0..8 {
        match next {
            0 | 43 | 60 if pkt.len() >= off + 2 => {
                next = pkt[off];
                off += (usize::from(pkt[off + 1]) + 1) * 8;
            }
            _ => break,
        }
    }
    let rest = pkt.get(off..).unwrap_or(&[]);
    Ok(Summary {
        src: addr(8).into(),
        dst: addr(24).into(),
        transport: transport(next, rest, true),
        len: pkt.len(),
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
            Transport::Other(p) => write!(f, "proto {p} {src} > {dst}")?,
        }
        write!(f, ", length {}", self.len)
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
}
