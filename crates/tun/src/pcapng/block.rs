//! The block encoding, pure and without I/O: Section Header, Interface Description and Enhanced
//! Packet Blocks appended to a caller's buffer (which keeps its capacity, so encoding a packet
//! allocates nothing). Every multi-byte field is little-endian, as the Section Header's
//! byte-order magic declares; every block is `type, total length, body padded to 32 bits,
//! total length`.

use super::{Direction, LinkType};

/// Block type of a Section Header Block.
pub(crate) const SHB: u32 = 0x0A0D_0D0A;
/// Block type of an Interface Description Block.
pub(crate) const IDB: u32 = 1;
/// Block type of an Enhanced Packet Block.
pub(crate) const EPB: u32 = 6;
/// The byte-order magic of a Section Header Block.
pub(crate) const BYTE_ORDER_MAGIC: u32 = 0x1A2B_3C4D;

/// `opt_endofopt`.
const OPT_END: u16 = 0;
/// `shb_userappl`: the application that wrote the section.
const SHB_USERAPPL: u16 = 4;
/// `if_name`.
const IF_NAME: u16 = 2;
/// `if_tsresol`.
const IF_TSRESOL: u16 = 9;
/// `epb_flags`.
const EPB_FLAGS: u16 = 2;

/// `if_tsresol` value for nanoseconds (10^-9 s).
pub(crate) const TSRESOL_NANOS: u8 = 9;

/// Length of the `LINKTYPE_LINUX_SLL2` header put before each packet.
pub(crate) const SLL2_LEN: usize = 20;
/// `ARPHRD_NONE`, the hardware type of a TUN device.
const ARPHRD_NONE: u16 = 0xFFFE;
/// SLL2 packet type of a packet to this host (`PACKET_HOST`).
const PACKET_HOST: u8 = 0;
/// SLL2 packet type of a packet sent out of the interface (`PACKET_OUTGOING`).
const PACKET_OUTGOING: u8 = 4;

/// `n` rounded up to a multiple of 4.
pub(crate) const fn pad4(n: usize) -> usize {
    (n + 3) & !3
}

/// Bytes an Enhanced Packet Block with `caplen` captured bytes takes: 28 bytes of header and
/// fixed fields, the data padded to 32 bits, 12 bytes of options (`epb_flags` and
/// `opt_endofopt`) and the trailing length.
pub(crate) const fn epb_len(caplen: usize) -> usize {
    28 + pad4(caplen) + 12 + 4
}

fn put_u16(buf: &mut Vec<u8>, v: u16) {
    buf.extend_from_slice(&v.to_le_bytes());
}

fn put_u32(buf: &mut Vec<u8>, v: u32) {
    buf.extend_from_slice(&v.to_le_bytes());
}

fn put_zeros(buf: &mut Vec<u8>, n: usize) {
    const ZEROS: [u8; 4] = [0; 4];
    buf.extend_from_slice(&ZEROS[..n]);
}

/// One option: code, unpadded length, value padded to 32 bits with zeros.
fn put_option(buf: &mut Vec<u8>, code: u16, value: &[u8]) {
    debug_assert!(value.len() <= usize::from(u16::MAX));
    put_u16(buf, code);
    put_u16(buf, value.len() as u16);
    buf.extend_from_slice(value);
    put_zeros(buf, pad4(value.len()) - value.len());
}

/// Appends a block of type `ty` whose body `body` writes (a multiple of 4 bytes long), with its
/// total length before and after it.
fn put_block(buf: &mut Vec<u8>, ty: u32, body: impl FnOnce(&mut Vec<u8>)) {
    let start = buf.len();
    put_u32(buf, ty);
    put_u32(buf, 0);
    body(buf);
    let total = buf.len() - start + 4;
    debug_assert_eq!(total % 4, 0, "a block body is padded to 32 bits");
    let total = total as u32;
    buf[start + 4..start + 8].copy_from_slice(&total.to_le_bytes());
    put_u32(buf, total);
}

/// Appends a Section Header Block: version 1.0, section length unknown (-1), `shb_userappl`.
pub(crate) fn section_header(buf: &mut Vec<u8>) {
    put_block(buf, SHB, |b| {
        put_u32(b, BYTE_ORDER_MAGIC);
        put_u16(b, 1);
        put_u16(b, 0);
        b.extend_from_slice(&(-1i64).to_le_bytes());
        put_option(
            b,
            SHB_USERAPPL,
            concat!("hostkit ", env!("CARGO_PKG_VERSION")).as_bytes(),
        );
        put_option(b, OPT_END, &[]);
    });
}

/// Appends an Interface Description Block: the link type, the snap length, `if_name` = `name`
/// and `if_tsresol` = 9 (timestamps in nanoseconds).
pub(crate) fn interface_description(buf: &mut Vec<u8>, link: LinkType, snaplen: u32, name: &str) {
    put_block(buf, IDB, |b| {
        put_u16(b, link.code());
        put_u16(b, 0);
        put_u32(b, snaplen);
        put_option(b, IF_NAME, name.as_bytes());
        put_option(b, IF_TSRESOL, &[TSRESOL_NANOS]);
        put_option(b, OPT_END, &[]);
    });
}

/// The `epb_flags` word of a direction: bits 0-1 are 01 inbound, 10 outbound.
pub(crate) const fn direction_flags(dir: Direction) -> u32 {
    match dir {
        Direction::Inbound => 0b01,
        Direction::Outbound => 0b10,
    }
}

/// The `LINKTYPE_LINUX_SLL2` header of an IP packet (big-endian, as on the wire): EtherType
/// from the IP version nibble, interface index, `ARPHRD_NONE`, packet type (`PACKET_HOST`
/// inbound, `PACKET_OUTGOING` outbound), no link-layer address.
pub(crate) fn sll2_header(ip: &[u8], ifindex: u32, dir: Direction) -> [u8; SLL2_LEN] {
    let ethertype: u16 = match ip.first().map(|b| b >> 4) {
        Some(4) => 0x0800,
        Some(6) => 0x86DD,
        _ => 0,
    };
    let mut h = [0u8; SLL2_LEN];
    h[0..2].copy_from_slice(&ethertype.to_be_bytes());
    h[4..8].copy_from_slice(&ifindex.to_be_bytes());
    h[8..10].copy_from_slice(&ARPHRD_NONE.to_be_bytes());
    h[10] = match dir {
        Direction::Inbound => PACKET_HOST,
        Direction::Outbound => PACKET_OUTGOING,
    };
    h
}

/// One packet for [`enhanced_packet`]: what is captured (`head` then `data`, `head` being a
/// link-layer header or empty) and how long the packet was.
pub(crate) struct Packet<'a> {
    /// Interface id (the IDB's position in the section).
    pub iface: u32,
    /// Nanoseconds since 1970-01-01 UTC.
    pub ts_nanos: u64,
    /// Length of the whole packet, link-layer header included.
    pub orig_len: u32,
    /// A header put before the data (SLL2), or empty.
    pub head: &'a [u8],
    /// The captured bytes of the packet (already cut to the snap length).
    pub data: &'a [u8],
    /// The `epb_flags` word.
    pub flags: u32,
}

/// Appends an Enhanced Packet Block; it takes exactly
/// [`epb_len`]`(head.len() + data.len())` bytes.
pub(crate) fn enhanced_packet(buf: &mut Vec<u8>, p: &Packet<'_>) {
    let caplen = p.head.len() + p.data.len();
    put_block(buf, EPB, |b| {
        put_u32(b, p.iface);
        put_u32(b, (p.ts_nanos >> 32) as u32);
        put_u32(b, p.ts_nanos as u32);
        put_u32(b, caplen as u32);
        put_u32(b, p.orig_len);
        b.extend_from_slice(p.head);
        b.extend_from_slice(p.data);
        put_zeros(b, pad4(caplen) - caplen);
        put_option(b, EPB_FLAGS, &p.flags.to_le_bytes());
        put_option(b, OPT_END, &[]);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u16_at(b: &[u8], at: usize) -> u16 {
        u16::from_le_bytes(b[at..at + 2].try_into().unwrap())
    }

    fn u32_at(b: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
    }

    /// Splits a buffer into blocks, checking the framing of each: the total length is a
    /// multiple of 4, at least 12, and repeated at the end.
    fn blocks(mut b: &[u8]) -> Vec<(u32, &[u8])> {
        let mut out = Vec::new();
        while !b.is_empty() {
            let ty = u32_at(b, 0);
            let len = u32_at(b, 4) as usize;
            assert!(len >= 12 && len.is_multiple_of(4), "block length {len}");
            assert_eq!(u32_at(b, len - 4) as usize, len, "trailing length");
            out.push((ty, &b[8..len - 4]));
            b = &b[len..];
        }
        out
    }

    /// The options of a body from `at` on: (code, value), checking the padding is zeros and
    /// that the list ends with `opt_endofopt` exactly at the end of the body.
    fn options(body: &[u8], mut at: usize) -> Vec<(u16, &[u8])> {
        let mut out = Vec::new();
        loop {
            let code = u16_at(body, at);
            let len = usize::from(u16_at(body, at + 2));
            let value = &body[at + 4..at + 4 + len];
            assert!(
                body[at + 4 + len..at + 4 + pad4(len)]
                    .iter()
                    .all(|&x| x == 0),
                "option padding is zeros"
            );
            at += 4 + pad4(len);
            if code == OPT_END {
                assert_eq!(len, 0);
                assert_eq!(at, body.len(), "opt_endofopt ends the block body");
                return out;
            }
            out.push((code, value));
        }
    }

    #[test]
    fn pad4_rounds_up_to_32_bits() {
        assert_eq!(
            [0, 1, 2, 3, 4, 5, 8, 9].map(pad4),
            [0, 4, 4, 4, 4, 8, 8, 12]
        );
    }

    #[test]
    fn section_header_is_version_1_0_of_unknown_length() {
        let mut b = Vec::new();
        section_header(&mut b);
        let blocks = blocks(&b);
        assert_eq!(blocks.len(), 1);
        let (ty, body) = blocks[0];
        assert_eq!(ty, SHB);
        assert_eq!(&b[0..4], &[0x0A, 0x0D, 0x0D, 0x0A]);
        assert_eq!(u32_at(body, 0), BYTE_ORDER_MAGIC);
        assert_eq!(
            &body[0..4],
            &[0x4D, 0x3C, 0x2B, 0x1A],
            "little-endian magic"
        );
        assert_eq!((u16_at(body, 4), u16_at(body, 6)), (1, 0));
        assert_eq!(&body[8..16], &[0xFF; 8], "section length -1");
        let opts = options(body, 16);
        assert_eq!(opts.len(), 1);
        assert_eq!(opts[0].0, SHB_USERAPPL);
        assert!(opts[0].1.starts_with(b"hostkit "));
    }

    #[test]
    fn interface_description_carries_name_and_nanosecond_resolution() {
        for (name, link) in [
            ("tun0", LinkType::Raw),
            ("a", LinkType::LinuxSll2),
            ("hk-tun-long0", LinkType::Raw),
            ("abcdefgh", LinkType::Raw),
        ] {
            let mut b = Vec::new();
            interface_description(&mut b, link, 262_144, name);
            let blocks = blocks(&b);
            let (ty, body) = blocks[0];
            assert_eq!(ty, IDB);
            assert_eq!(u16_at(body, 0), link.code());
            assert_eq!(u16_at(body, 2), 0, "reserved");
            assert_eq!(u32_at(body, 4), 262_144);
            assert_eq!(
                options(body, 8),
                [(IF_NAME, name.as_bytes()), (IF_TSRESOL, &[9u8][..])]
            );
            assert_eq!(b.len(), 12 + 8 + 4 + pad4(name.len()) + 8 + 4);
        }
        assert_eq!(LinkType::Raw.code(), 101);
        assert_eq!(LinkType::LinuxSll2.code(), 276);
        assert_eq!(LinkType::Ethernet.code(), 1);
    }

    #[test]
    fn enhanced_packet_pads_data_and_repeats_its_length() {
        for caplen in 0..=9usize {
            let data: Vec<u8> = (1..=caplen as u8).collect();
            let mut b = vec![0xAA; 3]; // appended after what is there, untouched
            let ts = 1_700_000_000_123_456_789u64;
            enhanced_packet(
                &mut b,
                &Packet {
                    iface: 1,
                    ts_nanos: ts,
                    orig_len: 1500,
                    head: &[],
                    data: &data,
                    flags: direction_flags(Direction::Outbound),
                },
            );
            assert_eq!(&b[..3], &[0xAA; 3]);
            let b = &b[3..];
            assert_eq!(b.len(), epb_len(caplen));
            assert_eq!(b.len() % 4, 0);
            let blocks = blocks(b);
            let (ty, body) = blocks[0];
            assert_eq!(ty, EPB);
            assert_eq!(u32_at(body, 0), 1, "interface id");
            let got_ts = (u64::from(u32_at(body, 4)) << 32) | u64::from(u32_at(body, 8));
            assert_eq!(got_ts, ts);
            assert_eq!(u32_at(body, 12) as usize, caplen);
            assert_eq!(u32_at(body, 16), 1500);
            assert_eq!(&body[20..20 + caplen], &data[..]);
            assert!(body[20 + caplen..20 + pad4(caplen)].iter().all(|&x| x == 0));
            assert_eq!(
                options(body, 20 + pad4(caplen)),
                [(EPB_FLAGS, &2u32.to_le_bytes()[..])]
            );
        }
    }

    #[test]
    fn a_head_is_captured_before_the_data() {
        let mut b = Vec::new();
        let ip = [0x45u8, 0, 0, 20];
        let head = sll2_header(&ip, 7, Direction::Inbound);
        enhanced_packet(
            &mut b,
            &Packet {
                iface: 0,
                ts_nanos: 5,
                orig_len: 24,
                head: &head,
                data: &ip,
                flags: direction_flags(Direction::Inbound),
            },
        );
        assert_eq!(b.len(), epb_len(24));
        let body = blocks(&b)[0].1;
        assert_eq!(u32_at(body, 12), 24);
        assert_eq!(&body[20..40], &head);
        assert_eq!(&body[40..44], &ip);
        assert_eq!(options(body, 44), [(EPB_FLAGS, &1u32.to_le_bytes()[..])]);
    }

    #[test]
    fn direction_bits_are_01_inbound_10_outbound() {
        assert_eq!(direction_flags(Direction::Inbound), 1);
        assert_eq!(direction_flags(Direction::Outbound), 2);
    }

    #[test]
    fn sll2_header_is_big_endian_with_packet_type_and_ethertype() {
        let h = sll2_header(&[0x45], 0x0102_0304, Direction::Outbound);
        assert_eq!(
            h,
            [
                0x08, 0x00, 0, 0, 1, 2, 3, 4, 0xFF, 0xFE, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0
            ]
        );
        let h = sll2_header(&[0x60], 9, Direction::Inbound);
        assert_eq!(&h[0..2], &[0x86, 0xDD]);
        assert_eq!(h[10], 0);
        assert_eq!(&sll2_header(&[], 9, Direction::Inbound)[0..2], &[0, 0]);
    }
}
