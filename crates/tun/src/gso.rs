//! Segmenting GSO super-packets into the packets the kernel would put on a wire, and the
//! Internet-checksum helpers that go with it. Pure; no I/O.
//!
//! A TUN device opened with `IFF_VNET_HDR` and `TUNSETOFFLOAD` (see [`crate::TunDevice`]) hands
//! userspace every packet behind a 10-byte [`VnetHdr`], and may hand it a *super-packet*: up
//! to 64 KiB of TCP or UDP payload behind one set of headers, whose transport checksum field
//! holds only the pseudo-header sum ([`VnetHdr::F_NEEDS_CSUM`]). The relay forwards such
//! packets as they are. A stage that needs wire-sized packets (capture, impairment, user
//! code) runs them through a [`Segmenter`], which does what the kernel's software GSO does
//! (`skb_segment` with `tcp_gso_segment`/`__udp_gso_segment` under `inet_gso_segment`/
//! `ipv6_gso_segment`, then the checksum completion) when a super-packet leaves through a
//! device without those offloads:
//!
//! * TCP ([`VnetHdr::GSO_TCPV4`], [`VnetHdr::GSO_TCPV6`], either with [`VnetHdr::GSO_ECN`]):
//!   each segment carries `gso_size` payload bytes (the last one what is left); the sequence
//!   number advances by the payload before it; FIN and PSH stay only on the last segment, CWR
//!   only on the first; every other header byte (options, window, ECN bits, TTL, flow label,
//!   extension headers) is copied unchanged.
//! * UDP ([`VnetHdr::GSO_UDP_L4`], USO): each segment is a whole UDP datagram of `gso_size`
//!   payload bytes (the last one shorter) with its own length and checksum.
//! * Both: IPv4 total length, identification (the first segment's ID plus the segment's
//!   index, wrapping, whatever DF says: `inet_gso_segment` without `FIXEDID`, which a
//!   `virtio_net_hdr` cannot express) and header checksum; IPv6 payload length; the full
//!   transport checksum over the pseudo-header.
//! * [`VnetHdr::GSO_NONE`] with [`VnetHdr::F_NEEDS_CSUM`]: the one packet, its checksum
//!   completed at `csum_start`/`csum_offset` (`skb_checksum_help`). Without the flag the
//!   packet is passed through untouched (no copy).
//!
//! **Frames.** A TAP device (Ethernet frames) hands over the same header, with `csum_start`
//! and `hdr_len` counting from the start of the frame. [`Segmenter::segment_link`] finds the
//! IP header after the Ethernet header and any 802.1Q/802.1ad tags (14, 18, 22 bytes) and
//! puts a copy of that link-layer header before every segment; the rest is as above.
//!
//! A super-packet whose payload fits in one `gso_size` is one segment (the kernel does not
//! mark it GSO at all). With `F_NEEDS_CSUM` the pseudo-header sum is taken from the checksum
//! field, as the kernel does (so an IPv6 routing header's final destination is honoured);
//! without it, it is computed from the IP addresses, as `tcp4_gso_segment` does.
//!
//! A computed checksum of 0 is written as `0xffff` (the same value in ones' complement) for
//! UDP, where 0 means "no checksum", and for any single packet (`skb_checksum_help`); TCP
//! segments of a split super-packet keep it as computed (`gso_make_checksum`).
//!
//! # What is refused
//!
//! Everything is checked before the first segment is yielded, so an error means nothing was
//! yielded; nothing here panics on any input. Refused ([`GsoError`]): `hdr_len` beyond the
//! packet, `gso_size` 0, unknown GSO types, UFO ([`VnetHdr::GSO_UDP`], which needs IP
//! fragmentation), ECN on a non-TCP type, a GSO type that does not match the packet's IP
//! version or protocol, IP lengths that do not add up to the packet's, truncated or
//! malformed headers, IPv4 fragments, IPv6 fragment and authentication headers (hop-by-hop,
//! routing and destination-options headers are copied into every segment, as
//! `ipv6_gso_segment` does), a UDP length field that is not the datagram's, and a
//! `csum_start`/`csum_offset` that does not point at the transport checksum.
//!
//! # Cost
//!
//! The relay's fast path never calls this: super-packets are forwarded whole. A stage that
//! does pays, per super-packet, one pass to parse and validate the headers, then per segment
//! one copy of headers and payload into the [`Segmenter`]'s buffer and one checksum pass over
//! the segment's transport part (plus the ≤ 60-byte IPv4 header): about two passes over the
//! payload in all, roughly what the kernel's software GSO costs (measured: about 5 µs for a
//! 64 KiB TCP super-packet into 45 segments, release build, one current x86 core). The
//! buffer is allocated
//! once per [`Segmenter`] and reused; nothing is allocated per segment. The free function
//! [`segment`] allocates one buffer per call.

use std::fmt;

use crate::device::VNET_HDR_LEN;
use crate::packet::LinkLayer;

/// The `struct virtio_net_hdr` that precedes every packet on an `IFF_VNET_HDR` device, in
/// the host's byte order (TUN's legacy layout; this toolkit does not set `TUNSETVNETBE`/`LE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct VnetHdr {
    /// [`VnetHdr::F_NEEDS_CSUM`], [`VnetHdr::F_DATA_VALID`], [`VnetHdr::F_RSC_INFO`].
    pub flags: u8,
    /// One of the `GSO_*` types, possibly with [`VnetHdr::GSO_ECN`].
    pub gso_type: u8,
    /// Length of the headers (from the kernel: a hint, the linear part's length). Only
    /// checked to lie within the packet; the headers are parsed.
    pub hdr_len: u16,
    /// Payload bytes per segment (the MSS for TCP).
    pub gso_size: u16,
    /// Where checksumming starts (the transport header) when `F_NEEDS_CSUM` is set.
    pub csum_start: u16,
    /// Where, from `csum_start`, the checksum is stored (16 for TCP, 6 for UDP).
    pub csum_offset: u16,
}

impl VnetHdr {
    /// Size of the header on the wire between userspace and the device.
    pub const LEN: usize = VNET_HDR_LEN;
    /// The checksum field holds only the pseudo-header sum; the sum from `csum_start` to the
    /// end of the packet still has to be added (`VIRTIO_NET_HDR_F_NEEDS_CSUM`).
    pub const F_NEEDS_CSUM: u8 = 1;
    /// The checksum has been validated (`VIRTIO_NET_HDR_F_DATA_VALID`); informational.
    pub const F_DATA_VALID: u8 = 2;
    /// `VIRTIO_NET_HDR_F_RSC_INFO`; informational.
    pub const F_RSC_INFO: u8 = 4;
    /// Not a GSO packet.
    pub const GSO_NONE: u8 = 0;
    /// TCP over IPv4 (TSO).
    pub const GSO_TCPV4: u8 = 1;
    /// UDP fragmentation offload (UFO): refused here.
    pub const GSO_UDP: u8 = 3;
    /// TCP over IPv6 (TSO).
    pub const GSO_TCPV6: u8 = 4;
    /// UDP segmentation (USO) over IPv4 or IPv6.
    pub const GSO_UDP_L4: u8 = 5;
    /// Bit on a TCP type: the first segment may carry CWR (`VIRTIO_NET_HDR_GSO_ECN`).
    pub const GSO_ECN: u8 = 0x80;
    /// The header of a plain packet: no GSO, checksum complete.
    pub const NONE: VnetHdr = VnetHdr {
        flags: 0,
        gso_type: Self::GSO_NONE,
        hdr_len: 0,
        gso_size: 0,
        csum_start: 0,
        csum_offset: 0,
    };

    /// Reads a header from its 10 bytes.
    pub fn from_bytes(b: [u8; VNET_HDR_LEN]) -> VnetHdr {
        let u16_at = |at: usize| u16::from_ne_bytes([b[at], b[at + 1]]);
        VnetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u16_at(2),
            gso_size: u16_at(4),
            csum_start: u16_at(6),
            csum_offset: u16_at(8),
        }
    }

    /// The header's 10 bytes.
    pub fn to_bytes(&self) -> [u8; VNET_HDR_LEN] {
        let mut b = [0u8; VNET_HDR_LEN];
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_ne_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_ne_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_ne_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_ne_bytes());
        b
    }

    /// Splits what a read from an `IFF_VNET_HDR` device returned into header and packet.
    pub fn split(buf: &[u8]) -> Result<(VnetHdr, &[u8]), GsoError> {
        match buf.split_first_chunk::<VNET_HDR_LEN>() {
            Some((head, packet)) => Ok((VnetHdr::from_bytes(*head), packet)),
            None => Err(GsoError::ShortVnetHdr { len: buf.len() }),
        }
    }

    /// Whether `F_NEEDS_CSUM` is set.
    pub fn needs_csum(&self) -> bool {
        self.flags & Self::F_NEEDS_CSUM != 0
    }

    /// Whether the packet is a super-packet to segment (any GSO type but NONE).
    pub fn is_gso(&self) -> bool {
        self.gso_type != Self::GSO_NONE
    }
}

/// Why a packet cannot be segmented or its checksum fixed. The caller decides what to do
/// (typically drop and count).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GsoError {
    /// The buffer is shorter than a `virtio_net_hdr`.
    #[error("{len}-byte buffer is shorter than a virtio_net_hdr ({VNET_HDR_LEN} bytes)")]
    ShortVnetHdr {
        /// The buffer's length.
        len: usize,
    },
    /// `hdr_len` lies beyond the packet.
    #[error("virtio_net_hdr hdr_len {hdr_len} is beyond the {len}-byte packet")]
    HdrLenBeyondPacket {
        /// The header's `hdr_len`.
        hdr_len: u16,
        /// The packet's length.
        len: usize,
    },
    /// A GSO type with `gso_size` 0.
    #[error("GSO packet with gso_size 0")]
    ZeroGsoSize,
    /// A `gso_type` that is not one of the known values.
    #[error("unknown gso_type {0:#04x}")]
    UnknownGsoType(u8),
    /// Something valid that this module does not do (UFO, fragments, some IPv6 headers).
    #[error("unsupported: {0}")]
    Unsupported(&'static str),
    /// The first nibble is neither 4 nor 6.
    #[error("not an IP packet (version nibble {0})")]
    NotIp(u8),
    /// A header extends beyond the packet.
    #[error("truncated {what}: needs {need} bytes, the packet has {have}")]
    Truncated {
        /// Which header.
        what: &'static str,
        /// Bytes needed from the start of the packet.
        need: usize,
        /// Bytes there are.
        have: usize,
    },
    /// A header field holds an impossible value.
    #[error("malformed {0}")]
    Malformed(&'static str),
    /// A length field disagrees with the packet.
    #[error("{field} says {claimed} bytes, the packet has {actual}")]
    LengthMismatch {
        /// Which field.
        field: &'static str,
        /// The length the field implies.
        claimed: usize,
        /// The length there is.
        actual: usize,
    },
    /// The GSO type does not fit the packet (e.g. `GSO_TCPV4` on IPv6, or on UDP).
    #[error("gso_type {gso_type:#04x} does not fit an IPv{version} packet of protocol {protocol}")]
    ProtocolMismatch {
        /// The header's `gso_type`.
        gso_type: u8,
        /// The packet's IP version.
        version: u8,
        /// The packet's transport protocol.
        protocol: u8,
    },
    /// No checksum to fix for this transport protocol (or it is not known here).
    #[error("no transport checksum known for protocol {0}")]
    UnsupportedProtocol(u8),
    /// `csum_start`/`csum_offset` point outside the packet.
    #[error("checksum at start {start} + offset {offset} lies outside the {len}-byte packet")]
    CsumOutOfRange {
        /// `csum_start`.
        start: u16,
        /// `csum_offset`.
        offset: u16,
        /// The packet's length.
        len: usize,
    },
    /// `csum_start`/`csum_offset` do not point at the transport checksum of a GSO packet.
    #[error(
        "csum_start {start}/csum_offset {offset} is not the transport checksum (header at {transport}, field at +{field})"
    )]
    CsumMismatch {
        /// `csum_start`.
        start: u16,
        /// `csum_offset`.
        offset: u16,
        /// Where the transport header is.
        transport: usize,
        /// Where in it the checksum field is.
        field: usize,
    },
}

// ---------------------------------------------------------------------------------------------
// Internet checksum (RFC 1071, RFC 1624)
// ---------------------------------------------------------------------------------------------

/// A running Internet checksum (RFC 1071): the ones' complement sum of big-endian 16-bit
/// words. Data may be added in pieces of any length (a piece after an odd-length one is
/// summed at the right byte position). [`Checksum::finish`] gives the value for a checksum
/// field; a region whose checksum field is right sums ([`Checksum::sum`]) to `0xffff`.
///
/// Cost: one pass over the data, 8 bytes per step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Checksum {
    /// Partial sum, kept below 2^33 between calls.
    acc: u64,
    /// An odd number of bytes has been added.
    odd: bool,
}

impl Checksum {
    /// An empty sum.
    pub const fn new() -> Checksum {
        Checksum { acc: 0, odd: false }
    }

    /// Adds bytes.
    #[must_use]
    pub fn add_bytes(self, data: &[u8]) -> Checksum {
        let mut s = sum_be(data);
        if self.odd {
            // The piece starts at an odd position: its bytes weigh the other way round,
            // and ones' complement addition commutes with swapping the bytes.
            s = u64::from(fold(s).swap_bytes());
        }
        Checksum {
            acc: fold32(self.acc + s),
            odd: self.odd ^ (data.len() % 2 == 1),
        }
    }

    /// Adds a 16-bit value (as its two big-endian bytes).
    #[must_use]
    pub fn add_u16(self, v: u16) -> Checksum {
        if self.odd {
            self.add_bytes(&v.to_be_bytes())
        } else {
            Checksum {
                acc: fold32(self.acc + u64::from(v)),
                odd: false,
            }
        }
    }

    /// Adds a 32-bit value (as its four big-endian bytes).
    #[must_use]
    pub fn add_u32(self, v: u32) -> Checksum {
        self.add_u16((v >> 16) as u16).add_u16(v as u16)
    }

    /// The folded ones' complement sum, not complemented (what `F_NEEDS_CSUM` packets carry
    /// in their checksum field for the pseudo-header).
    pub fn sum(self) -> u16 {
        fold(self.acc)
    }

    /// The value for a checksum field: the complement of [`Checksum::sum`].
    pub fn finish(self) -> u16 {
        !self.sum()
    }
}

/// The Internet checksum of `data` (RFC 1071): the value to store in a zeroed checksum
/// field. Over data that includes a correct checksum field it is 0.
pub fn checksum(data: &[u8]) -> u16 {
    Checksum::new().add_bytes(data).finish()
}

/// Updates checksum field value `check` for bytes `old` replaced by `new` (RFC 1624, eqn. 3:
/// `HC' = ~(~HC + ~m + m')`), without touching the rest of the data. `old` and `new` are the
/// same bytes before and after the rewrite (e.g. an address), starting at an even offset
/// from the start of the checksummed region.
pub fn checksum_update(check: u16, old: &[u8], new: &[u8]) -> u16 {
    Checksum::new()
        .add_u16(!check)
        .add_u16(!Checksum::new().add_bytes(old).sum())
        .add_bytes(new)
        .finish()
}

/// [`checksum_update`] for one 16-bit field at an even offset (a port, a length, an ID).
pub fn checksum_update_u16(check: u16, old: u16, new: u16) -> u16 {
    Checksum::new()
        .add_u16(!check)
        .add_u16(!old)
        .add_u16(new)
        .finish()
}

/// Sum of big-endian 16-bit words (odd tail padded with a zero byte), not folded; below
/// 2^33 for any slice shorter than 16 GiB.
fn sum_be(data: &[u8]) -> u64 {
    // The ones' complement sum does not depend on byte order (RFC 1071, 2.B): sum the
    // 4-byte-aligned part as native-endian words (no byte swap per word, so the loop
    // vectorizes), fold it to 16 bits and swap once; then the tail as big-endian.
    let mut native: u64 = 0;
    let mut words = data.chunks_exact(4);
    for w in &mut words {
        native += u64::from(u32::from_ne_bytes([w[0], w[1], w[2], w[3]]));
    }
    let folded = fold(native);
    let mut acc = u64::from(if cfg!(target_endian = "little") {
        folded.swap_bytes()
    } else {
        folded
    });
    let mut rest = words.remainder().chunks_exact(2);
    for w in &mut rest {
        acc += u64::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [last] = rest.remainder() {
        acc += u64::from(*last) << 8;
    }
    acc
}

/// Folds a sum to below 2^33 (congruent modulo 0xffff).
fn fold32(s: u64) -> u64 {
    (s & 0xffff_ffff) + (s >> 32)
}

/// Folds a sum to 16 bits with end-around carry.
fn fold(mut s: u64) -> u16 {
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

// ---------------------------------------------------------------------------------------------
// Header parsing
// ---------------------------------------------------------------------------------------------

const PROTO_ICMP: u8 = 1;
const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;
const PROTO_ICMPV6: u8 = 58;
const TCP_FIN: u8 = 0x01;
const TCP_PSH: u8 = 0x08;
const TCP_CWR: u8 = 0x80;
/// Where the checksum field is in a TCP header.
const TCP_CSUM: usize = 16;
/// Where the checksum field is in a UDP header.
const UDP_CSUM: usize = 6;
/// How many IPv6 extension headers are walked before giving up.
const MAX_EXT_HEADERS: usize = 8;

fn get16(p: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([p[at], p[at + 1]])
}

fn put16(p: &mut [u8], at: usize, v: u16) {
    p[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

/// The IP layer of a packet (offsets from the start of the buffer, which may hold a link-layer
/// header before the IP header).
#[derive(Debug, Clone, Copy)]
struct Ip {
    /// Where the IP header starts (0, or after an Ethernet header).
    start: usize,
    v6: bool,
    /// IPv4 header length (the part with a header checksum); 40 for IPv6.
    ip_hdr_len: usize,
    /// Where the transport header starts.
    l4: usize,
    /// The transport protocol.
    proto: u8,
    /// Where the IP packet ends, by its length field.
    end: usize,
    /// An IPv4 fragment (offset or MF set).
    fragment: bool,
    /// An IPv6 routing header with segments left: the pseudo-header's destination is not
    /// the header's.
    routed: bool,
}

fn need(what: &'static str, need: usize, have: usize) -> Result<(), GsoError> {
    if need > have {
        Err(GsoError::Truncated { what, need, have })
    } else {
        Ok(())
    }
}

fn parse_ip(p: &[u8]) -> Result<Ip, GsoError> {
    parse_ip_at(p, 0)
}

/// Parses the IP header at `start` of `p`; the offsets of the result count from the start of
/// `p` (the lengths checked and reported are the IP packet's).
fn parse_ip_at(p: &[u8], start: usize) -> Result<Ip, GsoError> {
    let q = p.get(start..).unwrap_or(&[]);
    let first = *q.first().ok_or(GsoError::Truncated {
        what: "IP header",
        need: 1,
        have: 0,
    })?;
    let ip = match first >> 4 {
        4 => parse_v4(q),
        6 => parse_v6(q),
        v => Err(GsoError::NotIp(v)),
    }?;
    Ok(Ip {
        start,
        l4: start + ip.l4,
        end: start + ip.end,
        ..ip
    })
}

fn parse_v4(p: &[u8]) -> Result<Ip, GsoError> {
    need("IPv4 header", 20, p.len())?;
    let ihl = usize::from(p[0] & 0x0f) * 4;
    if ihl < 20 {
        return Err(GsoError::Malformed("IPv4 header length (IHL below 5)"));
    }
    need("IPv4 header", ihl, p.len())?;
    let end = usize::from(get16(p, 2));
    if end < ihl {
        return Err(GsoError::Malformed(
            "IPv4 total length (shorter than the header)",
        ));
    }
    need("IPv4 packet (total length)", end, p.len())?;
    Ok(Ip {
        start: 0,
        v6: false,
        ip_hdr_len: ihl,
        l4: ihl,
        proto: p[9],
        end,
        fragment: get16(p, 6) & 0x3fff != 0,
        routed: false,
    })
}

fn parse_v6(p: &[u8]) -> Result<Ip, GsoError> {
    need("IPv6 header", 40, p.len())?;
    let end = 40 + usize::from(get16(p, 4));
    need("IPv6 packet (payload length)", end, p.len())?;
    let mut next = p[6];
    let mut off = 40;
    let mut routed = false;
    for _ in 0..MAX_EXT_HEADERS {
        match next {
            // Hop-by-hop, routing, destination options: copied into every segment.
            0 | 43 | 60 => {
                need("IPv6 extension header", off + 8, end)?;
                let len = (usize::from(p[off + 1]) + 1) * 8;
                need("IPv6 extension header", off + len, end)?;
                if next == 43 && p[off + 3] != 0 {
                    routed = true;
                }
                next = p[off];
                off += len;
            }
            44 => return Err(GsoError::Unsupported("IPv6 fragment header")),
            51 => return Err(GsoError::Unsupported("IPv6 authentication header")),
            proto => {
                return Ok(Ip {
                    start: 0,
                    v6: true,
                    ip_hdr_len: 40,
                    l4: off,
                    proto,
                    end,
                    fragment: false,
                    routed,
                });
            }
        }
    }
    Err(GsoError::Unsupported("more than 8 IPv6 extension headers"))
}

/// The folded pseudo-header sum for a transport segment of `len` bytes, from the IP header at
/// the start of `p`.
fn pseudo_header(p: &[u8], v6: bool, proto: u8, len: u16) -> u16 {
    let addrs = if v6 { &p[8..40] } else { &p[12..20] };
    Checksum::new()
        .add_bytes(addrs)
        .add_u16(u16::from(proto))
        .add_u16(len)
        .sum()
}

// ---------------------------------------------------------------------------------------------
// Segmentation
// ---------------------------------------------------------------------------------------------

/// A validated super-packet, ready to split.
#[derive(Debug, Clone, Copy)]
struct Split {
    ip: Ip,
    udp: bool,
    /// Where the payload starts (all headers before it).
    hdrs: usize,
    /// Payload bytes per segment.
    mss: usize,
    /// Number of segments.
    segs: usize,
    /// Folded pseudo-header sum for the super-packet's transport length `l4_len`.
    pseudo: u16,
    l4_len: u16,
}

/// What to do with one packet.
#[derive(Debug, Clone, Copy)]
enum Plan {
    /// Yield it as it is.
    AsIs,
    /// Complete the partial checksum: sum from `start`, store at `field`.
    Complete { start: usize, field: usize },
    /// Split it.
    Split(Split),
}

/// The plan for `p`, whose IP header starts at `ip_start` (`None`: a frame without one, which
/// can only be passed on or have its checksum completed).
fn plan(hdr: &VnetHdr, p: &[u8], ip_start: Option<usize>) -> Result<Plan, GsoError> {
    if usize::from(hdr.hdr_len) > p.len() {
        return Err(GsoError::HdrLenBeyondPacket {
            hdr_len: hdr.hdr_len,
            len: p.len(),
        });
    }
    let ecn = hdr.gso_type & VnetHdr::GSO_ECN != 0;
    let udp = match hdr.gso_type & !VnetHdr::GSO_ECN {
        VnetHdr::GSO_NONE if ecn => return Err(GsoError::UnknownGsoType(hdr.gso_type)),
        VnetHdr::GSO_NONE => {
            if !hdr.needs_csum() {
                return Ok(Plan::AsIs);
            }
            let start = usize::from(hdr.csum_start);
            let field = start + usize::from(hdr.csum_offset);
            if field + 2 > p.len() {
                return Err(GsoError::CsumOutOfRange {
                    start: hdr.csum_start,
                    offset: hdr.csum_offset,
                    len: p.len(),
                });
            }
            return Ok(Plan::Complete { start, field });
        }
        VnetHdr::GSO_TCPV4 | VnetHdr::GSO_TCPV6 => false,
        VnetHdr::GSO_UDP_L4 if ecn => {
            return Err(GsoError::Unsupported("the ECN bit on GSO_UDP_L4"));
        }
        VnetHdr::GSO_UDP_L4 => true,
        VnetHdr::GSO_UDP => {
            return Err(GsoError::Unsupported(
                "UFO (GSO_UDP): IP fragmentation is not implemented",
            ));
        }
        _ => return Err(GsoError::UnknownGsoType(hdr.gso_type)),
    };
    if hdr.gso_size == 0 {
        return Err(GsoError::ZeroGsoSize);
    }

    let Some(ip_start) = ip_start else {
        return Err(GsoError::Unsupported(
            "a GSO frame without an IPv4 or IPv6 header",
        ));
    };
    let ip = parse_ip_at(p, ip_start)?;
    if ip.end != p.len() {
        return Err(GsoError::LengthMismatch {
            field: if ip.v6 {
                "IPv6 payload length (+ 40)"
            } else {
                "IPv4 total length"
            },
            claimed: ip.end - ip.start,
            actual: p.len() - ip.start,
        });
    }
    if ip.fragment {
        return Err(GsoError::Unsupported("IPv4 fragment"));
    }
    let fits = match hdr.gso_type & !VnetHdr::GSO_ECN {
        VnetHdr::GSO_TCPV4 => !ip.v6 && ip.proto == PROTO_TCP,
        VnetHdr::GSO_TCPV6 => ip.v6 && ip.proto == PROTO_TCP,
        _ => ip.proto == PROTO_UDP,
    };
    if !fits {
        return Err(GsoError::ProtocolMismatch {
            gso_type: hdr.gso_type,
            version: if ip.v6 { 6 } else { 4 },
            protocol: ip.proto,
        });
    }

    let (l4_hdr_len, csum_field) = if udp {
        need("UDP header", ip.l4 + 8, p.len())?;
        let claimed = usize::from(get16(p, ip.l4 + 4));
        if claimed != p.len() - ip.l4 {
            return Err(GsoError::LengthMismatch {
                field: "UDP length",
                claimed,
                actual: p.len() - ip.l4,
            });
        }
        (8, UDP_CSUM)
    } else {
        need("TCP header", ip.l4 + 20, p.len())?;
        let doff = usize::from(p[ip.l4 + 12] >> 4) * 4;
        if doff < 20 {
            return Err(GsoError::Malformed("TCP data offset (below 5)"));
        }
        need("TCP header (data offset)", ip.l4 + doff, p.len())?;
        (doff, TCP_CSUM)
    };
    // Below 64 KiB: the IP length fields are 16 bits and matched the packet.
    let l4_len = (p.len() - ip.l4) as u16;
    let pseudo = if hdr.needs_csum() {
        if usize::from(hdr.csum_start) != ip.l4 || usize::from(hdr.csum_offset) != csum_field {
            return Err(GsoError::CsumMismatch {
                start: hdr.csum_start,
                offset: hdr.csum_offset,
                transport: ip.l4,
                field: csum_field,
            });
        }
        get16(p, ip.l4 + csum_field)
    } else {
        pseudo_header(&p[ip.start..], ip.v6, ip.proto, l4_len)
    };
    let hdrs = ip.l4 + l4_hdr_len;
    let mss = usize::from(hdr.gso_size);
    let payload = p.len() - hdrs;
    Ok(Plan::Split(Split {
        ip,
        udp,
        hdrs,
        mss,
        segs: payload.div_ceil(mss).max(1),
        pseudo,
        l4_len,
    }))
}

/// How many packets [`Segmenter::segment`] would yield, without copying anything; the same
/// checks and errors.
pub fn segment_count(hdr: &VnetHdr, packet: &[u8]) -> Result<usize, GsoError> {
    Ok(match plan(hdr, packet, Some(0))? {
        Plan::AsIs | Plan::Complete { .. } => 1,
        Plan::Split(s) => s.segs,
    })
}

/// Splits super-packets into wire-sized packets, reusing one buffer (see the
/// [module documentation](self) for what it does, refuses and costs).
#[derive(Clone, Default)]
pub struct Segmenter {
    buf: Vec<u8>,
}

impl fmt::Debug for Segmenter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Segmenter")
            .field("capacity", &self.buf.capacity())
            .finish()
    }
}

impl Segmenter {
    /// A segmenter; its buffer grows to the largest segment seen and stays.
    pub fn new() -> Segmenter {
        Segmenter::default()
    }

    /// Calls `out` with each wire packet of `packet` (what followed `hdr` on the device), in
    /// order, and returns how many there were. On error nothing has been yielded.
    ///
    /// The slice given to `out` is valid only during the call (the next segment reuses the
    /// buffer). A plain packet (`GSO_NONE` without `F_NEEDS_CSUM`) is yielded as it is.
    pub fn segment<F: FnMut(&[u8])>(
        &mut self,
        hdr: &VnetHdr,
        packet: &[u8],
        mut out: F,
    ) -> Result<usize, GsoError> {
        self.run_ref(plan(hdr, packet, Some(0))?, packet, &mut out)
    }

    /// [`Segmenter::segment`] for a packet of any link layer: for an Ethernet frame (a TAP
    /// device's), the IP header is found after the Ethernet header and any VLAN tags
    /// ([`crate::packet::ip_offset`]), `csum_start` and `hdr_len` count from the start of the
    /// frame (as the kernel writes them), and every segment is a frame with a copy of the
    /// original's link-layer header. A frame that carries no IP (ARP, another EtherType) is
    /// yielded as it is unless its header asks for segmentation (refused).
    pub fn segment_link<F: FnMut(&[u8])>(
        &mut self,
        link: LinkLayer,
        hdr: &VnetHdr,
        packet: &[u8],
        mut out: F,
    ) -> Result<usize, GsoError> {
        let start = crate::packet::ip_offset(link, packet);
        self.run_ref(plan(hdr, packet, start)?, packet, &mut out)
    }

    /// [`Segmenter::segment_link`], yielding each wire packet in the segmenter's own buffer,
    /// to be changed in place before the next one is made (a plain packet is copied there
    /// first).
    pub fn segment_link_mut<F: FnMut(&mut [u8])>(
        &mut self,
        link: LinkLayer,
        hdr: &VnetHdr,
        packet: &[u8],
        mut out: F,
    ) -> Result<usize, GsoError> {
        let start = crate::packet::ip_offset(link, packet);
        self.run(plan(hdr, packet, start)?, packet, &mut out)
    }

    /// [`Segmenter::run`] for a reader: a plain packet is yielded where it is, uncopied.
    fn run_ref<F: FnMut(&[u8])>(
        &mut self,
        plan: Plan,
        packet: &[u8],
        out: &mut F,
    ) -> Result<usize, GsoError> {
        if let Plan::AsIs = plan {
            out(packet);
            return Ok(1);
        }
        self.run(plan, packet, &mut |seg: &mut [u8]| out(seg))
    }

    fn run<F: FnMut(&mut [u8])>(
        &mut self,
        plan: Plan,
        packet: &[u8],
        out: &mut F,
    ) -> Result<usize, GsoError> {
        match plan {
            Plan::AsIs => {
                self.buf.clear();
                self.buf.extend_from_slice(packet);
                out(&mut self.buf);
                Ok(1)
            }
            Plan::Complete { start, field } => {
                let buf = &mut self.buf;
                buf.clear();
                buf.extend_from_slice(packet);
                // The field holds the pseudo-header sum; the sum over it and the rest is
                // the checksum (skb_checksum_help, which writes 0 as 0xffff).
                let c = Checksum::new().add_bytes(&buf[start..]).finish();
                put16(buf, field, if c == 0 { 0xffff } else { c });
                out(buf);
                Ok(1)
            }
            Plan::Split(s) => {
                self.split(&s, packet, out);
                Ok(s.segs)
            }
        }
    }

    fn split<F: FnMut(&mut [u8])>(&mut self, s: &Split, p: &[u8], mut out: F) {
        let Split {
            ip,
            udp,
            hdrs,
            mss,
            segs,
            ..
        } = *s;
        let (l4, at) = (ip.l4, ip.start);
        let buf = &mut self.buf;
        buf.clear();
        buf.reserve(hdrs + mss.min(p.len() - hdrs));
        let id0 = get16(p, at + 4);
        // TCP only (a UDP header is 8 bytes).
        let (seq0, flags0) = if udp {
            (0, 0)
        } else {
            (
                u32::from_be_bytes([p[l4 + 4], p[l4 + 5], p[l4 + 6], p[l4 + 7]]),
                p[l4 + 13],
            )
        };
        let csum_field = l4 + if udp { UDP_CSUM } else { TCP_CSUM };
        // Pseudo-header sum without the super-packet's length, to add each segment's.
        let pseudo_base = Checksum::new().add_u16(s.pseudo).add_u16(!s.l4_len);
        // A single packet is checksummed like skb_checksum_help does; see the module docs.
        let mangle_zero = udp || segs == 1;

        for (i, chunk) in p[hdrs..]
            .chunks(mss)
            .chain(
                // A super-packet with no payload is still one (header-only) packet.
                (p.len() == hdrs).then_some(&[][..]),
            )
            .enumerate()
        {
            // The headers again from the super-packet: the previous segment's may have been
            // changed in place (`segment_link_mut`).
            buf.clear();
            buf.extend_from_slice(&p[..hdrs]);
            buf.extend_from_slice(chunk);
            let len = buf.len();
            if ip.v6 {
                put16(buf, at + 4, (len - at - 40) as u16);
            } else {
                put16(buf, at + 2, (len - at) as u16);
                put16(buf, at + 4, id0.wrapping_add(i as u16));
                put16(buf, at + 10, 0);
                let c = checksum(&buf[at..at + ip.ip_hdr_len]);
                put16(buf, at + 10, c);
            }
            let l4_len = (len - l4) as u16;
            if udp {
                put16(buf, l4 + 4, l4_len);
            } else {
                let seq = seq0.wrapping_add((i * mss) as u32);
                buf[l4 + 4..l4 + 8].copy_from_slice(&seq.to_be_bytes());
                let mut flags = flags0;
                if i + 1 < segs {
                    flags &= !(TCP_FIN | TCP_PSH);
                }
                if i > 0 {
                    flags &= !TCP_CWR;
                }
                buf[l4 + 13] = flags;
            }
            put16(buf, csum_field, pseudo_base.add_u16(l4_len).sum());
            let c = Checksum::new().add_bytes(&buf[l4..]).finish();
            put16(
                buf,
                csum_field,
                if c == 0 && mangle_zero { 0xffff } else { c },
            );
            out(buf);
        }
    }
}

/// [`Segmenter::segment`] with a fresh buffer: one allocation per call. Stages that see
/// many packets keep a [`Segmenter`] instead.
pub fn segment(
    hdr: &VnetHdr,
    packet: &[u8],
    out: &mut impl FnMut(&[u8]),
) -> Result<usize, GsoError> {
    Segmenter::new().segment(hdr, packet, out)
}

// ---------------------------------------------------------------------------------------------
// Fixing checksums after a rewrite
// ---------------------------------------------------------------------------------------------

/// Recomputes the IPv4 header checksum (after a rewrite of the header). IPv6 has none: a
/// no-op for it.
///
/// Cost: one pass over the ≤ 60-byte header.
pub fn fix_ipv4_header_checksum(packet: &mut [u8]) -> Result<(), GsoError> {
    let ip = parse_ip(packet)?;
    if !ip.v6 {
        put16(packet, 10, 0);
        let c = checksum(&packet[..ip.ip_hdr_len]);
        put16(packet, 10, c);
    }
    Ok(())
}

/// Recomputes the TCP, UDP, ICMP or ICMPv6 checksum of a complete IPv4 or IPv6 packet (no
/// `virtio_net_hdr`, not a super-packet) from scratch, after a stage rewrote it (addresses,
/// ports, payload). For a change of a few bytes [`checksum_update`] is cheaper. The IPv4
/// header checksum is [`fix_ipv4_header_checksum`]'s job.
///
/// The transport part ends where the IP length field says (bytes after it are ignored). An
/// IPv4 UDP checksum of 0 ("none") is left alone; a computed UDP checksum of 0 is written as
/// `0xffff`. Refused: fragments (the checksum covers the whole datagram), an IPv6 routing
/// header with segments left (the pseudo-header needs the final destination), a UDP length
/// field that is not the datagram's, other protocols.
///
/// Cost: one pass over the transport part.
pub fn fix_transport_checksum(packet: &mut [u8]) -> Result<(), GsoError> {
    let ip = parse_ip(packet)?;
    if ip.fragment {
        return Err(GsoError::Unsupported("IPv4 fragment"));
    }
    if ip.routed {
        return Err(GsoError::Unsupported(
            "IPv6 routing header with segments left",
        ));
    }
    let len = ip.end - ip.l4;
    let (field, pseudo) = match (ip.proto, ip.v6) {
        (PROTO_TCP, _) => {
            need("TCP header", ip.l4 + 20, ip.end)?;
            (TCP_CSUM, true)
        }
        (PROTO_UDP, v6) => {
            need("UDP header", ip.l4 + 8, ip.end)?;
            let claimed = usize::from(get16(packet, ip.l4 + 4));
            if claimed != len {
                return Err(GsoError::LengthMismatch {
                    field: "UDP length",
                    claimed,
                    actual: len,
                });
            }
            if !v6 && get16(packet, ip.l4 + UDP_CSUM) == 0 {
                return Ok(());
            }
            (UDP_CSUM, true)
        }
        (PROTO_ICMP, false) => {
            need("ICMP header", ip.l4 + 4, ip.end)?;
            (2, false)
        }
        (PROTO_ICMPV6, true) => {
            need("ICMPv6 header", ip.l4 + 4, ip.end)?;
            (2, true)
        }
        (proto, _) => return Err(GsoError::UnsupportedProtocol(proto)),
    };
    let at = ip.l4 + field;
    put16(packet, at, 0);
    let mut c = Checksum::new();
    if pseudo {
        c = c.add_u16(pseudo_header(packet, ip.v6, ip.proto, len as u16));
    }
    let mut value = c.add_bytes(&packet[ip.l4..ip.end]).finish();
    if value == 0 && ip.proto == PROTO_UDP {
        value = 0xffff;
    }
    put16(packet, at, value);
    Ok(())
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod kernel_tests;
