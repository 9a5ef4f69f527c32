//! Unit tests: super-packets built here, segmented, and every segment checked on its own by
//! a checksum verifier and header reader written separately from the code under test.

use super::*;
use proptest::prelude::*;

// ---------------------------------------------------------------------------------------------
// An independent reference: naive RFC 1071 and explicit pseudo-header bytes.
// ---------------------------------------------------------------------------------------------

/// Naive ones' complement sum of 16-bit words, folded.
fn ref_sum(data: &[u8]) -> u16 {
    let mut s: u64 = 0;
    let mut i = 0;
    while i < data.len() {
        let hi = u64::from(data[i]);
        let lo = data.get(i + 1).map_or(0, |&b| u64::from(b));
        s += (hi << 8) | lo;
        i += 2;
    }
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

/// The pseudo-header as bytes (RFC 793 / RFC 8200 8.1 layout).
fn ref_pseudo(pkt: &[u8], proto: u8, len: usize) -> Vec<u8> {
    let mut v = Vec::new();
    if pkt[0] >> 4 == 4 {
        v.extend_from_slice(&pkt[12..20]);
        v.push(0);
        v.push(proto);
        v.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        v.extend_from_slice(&pkt[8..40]);
        v.extend_from_slice(&(len as u32).to_be_bytes());
        v.extend_from_slice(&[0, 0, 0, proto]);
    }
    v
}

/// Offsets of one segment as read by the reference: (transport offset, protocol).
fn ref_l4(pkt: &[u8]) -> (usize, u8) {
    if pkt[0] >> 4 == 4 {
        (usize::from(pkt[0] & 15) * 4, pkt[9])
    } else {
        let (mut next, mut off) = (pkt[6], 40);
        while matches!(next, 0 | 43 | 60) {
            next = pkt[off];
            off += (usize::from(pkt[off + 1]) + 1) * 8;
        }
        (off, next)
    }
}

fn be16(p: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([p[at], p[at + 1]])
}

fn be32(p: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([p[at], p[at + 1], p[at + 2], p[at + 3]])
}

/// Checks one wire packet on its own: IP lengths and header checksum, transport length and
/// checksum. Returns (transport offset, protocol).
pub(super) fn verify_wire_packet(pkt: &[u8]) -> (usize, u8) {
    let (l4, proto) = ref_l4(pkt);
    if pkt[0] >> 4 == 4 {
        assert_eq!(usize::from(be16(pkt, 2)), pkt.len(), "IPv4 total length");
        assert_eq!(ref_sum(&pkt[..l4]), 0xffff, "IPv4 header checksum");
    } else {
        assert_eq!(
            usize::from(be16(pkt, 4)) + 40,
            pkt.len(),
            "IPv6 payload len"
        );
    }
    let l4_len = pkt.len() - l4;
    if proto == 17 {
        assert_eq!(usize::from(be16(pkt, l4 + 4)), l4_len, "UDP length");
        assert_ne!(be16(pkt, l4 + 6), 0, "UDP checksum 0 means none");
    }
    let mut all = ref_pseudo(pkt, proto, l4_len);
    all.extend_from_slice(&pkt[l4..]);
    assert_eq!(ref_sum(&all), 0xffff, "transport checksum");
    (l4, proto)
}

// ---------------------------------------------------------------------------------------------
// Building super-packets
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
pub(super) struct Spec {
    pub(super) v6: bool,
    pub(super) udp: bool,
    pub(super) payload: Vec<u8>,
    pub(super) mss: u16,
    /// TCP flags byte.
    pub(super) flags: u8,
    /// TCP option words (4 bytes each).
    pub(super) tcp_opts: usize,
    /// IPv4 option words (4 bytes each), or IPv6 destination-options headers (8 bytes each).
    pub(super) ip_opts: usize,
    pub(super) needs_csum: bool,
    pub(super) ecn: bool,
    pub(super) id: u16,
    pub(super) seq: u32,
}

impl Spec {
    pub(super) fn new(v6: bool, udp: bool, payload_len: usize, mss: u16) -> Spec {
        Spec {
            v6,
            udp,
            payload: (0..payload_len).map(|i| (i * 7 + i / 251) as u8).collect(),
            mss,
            flags: 0x10, // ACK
            tcp_opts: 3,
            ip_opts: 0,
            needs_csum: true,
            ecn: false,
            id: 0x1234,
            seq: 1_000_000,
        }
    }

    /// The super-packet and its header, as a kernel with TSO/USO would hand it over.
    pub(super) fn build(&self) -> (VnetHdr, Vec<u8>) {
        let mut p = Vec::new();
        if self.v6 {
            p.extend_from_slice(&[0x60, 0x0a, 0xbc, 0xde, 0, 0, 0, 64]);
            p.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
            p.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
            let last = if self.udp { 17 } else { 6 };
            p[6] = if self.ip_opts > 0 { 60 } else { last };
            for k in 0..self.ip_opts {
                let next = if k + 1 == self.ip_opts { last } else { 60 };
                // Destination options: next header, length 0 (8 bytes), PadN of 4 bytes.
                p.extend_from_slice(&[next, 0, 1, 4, 0, 0, 0, 0]);
            }
        } else {
            let ihl = 5 + self.ip_opts;
            p.extend_from_slice(&[0x40 | ihl as u8, 0x02, 0, 0]);
            p.extend_from_slice(&self.id.to_be_bytes());
            p.extend_from_slice(&[0x40, 0]); // DF
            p.extend_from_slice(&[64, if self.udp { 17 } else { 6 }, 0, 0]);
            p.extend_from_slice(&[10, 0, 0, 1, 10, 0, 0, 2]);
            for _ in 0..self.ip_opts {
                p.extend_from_slice(&[1, 1, 1, 1]); // NOPs
            }
        }
        let l4 = p.len();
        if self.udp {
            p.extend_from_slice(&[0x13, 0x88, 0x17, 0x70, 0, 0, 0, 0]);
        } else {
            p.extend_from_slice(&[0x1f, 0x90, 0x9c, 0x40]);
            p.extend_from_slice(&self.seq.to_be_bytes());
            p.extend_from_slice(&0xa0b0c0d0u32.to_be_bytes());
            p.push(((5 + self.tcp_opts) as u8) << 4);
            p.push(self.flags);
            p.extend_from_slice(&[0x01, 0xf5, 0, 0, 0, 0]);
            for _ in 0..self.tcp_opts {
                // NOP, NOP, an empty experimental option (kind 254, length 2).
                p.extend_from_slice(&[1, 1, 254, 2]);
            }
        }
        let hdrs = p.len();
        p.extend_from_slice(&self.payload);
        let len = p.len();
        if self.v6 {
            p[4..6].copy_from_slice(&((len - 40) as u16).to_be_bytes());
        } else {
            p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
            let c = !ref_sum(&p[..l4]);
            p[10..12].copy_from_slice(&c.to_be_bytes());
        }
        if self.udp {
            p[l4 + 4..l4 + 6].copy_from_slice(&((len - l4) as u16).to_be_bytes());
        }
        let (proto, field) = if self.udp { (17, 6) } else { (6, 16) };
        let check = if self.needs_csum {
            ref_sum(&ref_pseudo(&p, proto, len - l4))
        } else {
            0xdead // ignored by the kernel without NEEDS_CSUM
        };
        p[l4 + field..l4 + field + 2].copy_from_slice(&check.to_be_bytes());
        let gso_type = match (self.udp, self.v6) {
            (true, _) => VnetHdr::GSO_UDP_L4,
            (false, false) => VnetHdr::GSO_TCPV4,
            (false, true) => VnetHdr::GSO_TCPV6,
        } | if self.ecn { VnetHdr::GSO_ECN } else { 0 };
        let hdr = VnetHdr {
            flags: if self.needs_csum {
                VnetHdr::F_NEEDS_CSUM
            } else {
                0
            },
            gso_type,
            hdr_len: hdrs as u16,
            gso_size: self.mss,
            csum_start: if self.needs_csum { l4 as u16 } else { 0 },
            csum_offset: if self.needs_csum { field as u16 } else { 0 },
        };
        (hdr, p)
    }
}

fn run(hdr: &VnetHdr, p: &[u8]) -> Result<Vec<Vec<u8>>, GsoError> {
    let mut segs = Vec::new();
    let n = Segmenter::new().segment(hdr, p, |s| segs.push(s.to_vec()))?;
    assert_eq!(n, segs.len(), "returned count");
    assert_eq!(segment_count(hdr, p), Ok(n), "segment_count agrees");
    Ok(segs)
}

/// Header bytes with the fields segmentation may change zeroed.
fn stable_headers(pkt: &[u8], l4: usize, thlen: usize, udp: bool) -> Vec<u8> {
    let mut h = pkt[..l4 + thlen].to_vec();
    if h[0] >> 4 == 4 {
        h[2..6].fill(0);
        h[10..12].fill(0);
    } else {
        h[4..6].fill(0);
    }
    if udp {
        h[l4 + 4..l4 + 8].fill(0);
    } else {
        h[l4 + 4..l4 + 8].fill(0);
        h[l4 + 13] = 0;
        h[l4 + 16..l4 + 18].fill(0);
    }
    h
}

/// Segments `spec`'s super-packet and checks every segment against the spec.
fn check(spec: &Spec) -> Vec<Vec<u8>> {
    let (hdr, p) = spec.build();
    let segs = run(&hdr, &p).expect("segments");
    let mss = usize::from(spec.mss);
    let expected = spec.payload.len().div_ceil(mss).max(1);
    assert_eq!(segs.len(), expected, "segment count");
    let (l4, _) = ref_l4(&p);
    let thlen = if spec.udp {
        8
    } else {
        usize::from(p[l4 + 12] >> 4) * 4
    };
    let want_headers = stable_headers(&p, l4, thlen, spec.udp);
    let mut payload = Vec::new();
    for (i, s) in segs.iter().enumerate() {
        let (sl4, proto) = verify_wire_packet(s);
        assert_eq!(sl4, l4);
        assert_eq!(proto, if spec.udp { 17 } else { 6 });
        assert_eq!(
            stable_headers(s, l4, thlen, spec.udp),
            want_headers,
            "seg {i}"
        );
        let chunk = &s[l4 + thlen..];
        if i + 1 < segs.len() {
            assert_eq!(chunk.len(), mss, "seg {i} payload");
        } else {
            assert!(chunk.len() <= mss && (!chunk.is_empty() || spec.payload.is_empty()));
        }
        payload.extend_from_slice(chunk);
        if !spec.v6 {
            assert_eq!(be16(s, 4), spec.id.wrapping_add(i as u16), "IPv4 ID");
        }
        if !spec.udp {
            assert_eq!(
                be32(s, l4 + 4),
                spec.seq.wrapping_add((i * mss) as u32),
                "seq"
            );
            let flags = s[l4 + 13];
            let last = i + 1 == segs.len();
            let first = i == 0;
            assert_eq!(flags & 0x01 != 0, last && spec.flags & 0x01 != 0, "FIN");
            assert_eq!(flags & 0x08 != 0, last && spec.flags & 0x08 != 0, "PSH");
            assert_eq!(flags & 0x80 != 0, first && spec.flags & 0x80 != 0, "CWR");
            assert_eq!(flags & 0x76, spec.flags & 0x76, "other flags");
        }
    }
    assert_eq!(payload, spec.payload, "payload reassembles");
    segs
}

// ---------------------------------------------------------------------------------------------
// Segmentation
// ---------------------------------------------------------------------------------------------

#[test]
fn tcp_v4_with_odd_last_segment_fin_psh_cwr_ecn() {
    let mut s = Spec::new(false, false, 5000, 1448);
    s.flags = 0x80 | 0x40 | 0x10 | 0x08 | 0x01; // CWR ECE ACK PSH FIN
    s.ecn = true;
    let segs = check(&s);
    assert_eq!(segs.len(), 4);
    assert_eq!(segs[3].len(), 20 + 32 + 5000 - 3 * 1448);
}

#[test]
fn tcp_v6_with_and_without_needs_csum() {
    for needs_csum in [true, false] {
        let mut s = Spec::new(true, false, 4096, 1000);
        s.needs_csum = needs_csum;
        s.flags = 0x18;
        check(&s);
    }
}

#[test]
fn tcp_v4_without_needs_csum_and_with_ip_options() {
    let mut s = Spec::new(false, false, 3000, 536);
    s.needs_csum = false;
    s.ip_opts = 3;
    s.tcp_opts = 0;
    check(&s);
}

#[test]
fn udp_v4_and_v6_uso() {
    for v6 in [false, true] {
        let segs = check(&Spec::new(v6, true, 3500, 1200));
        assert_eq!(segs.len(), 3);
        let (l4, _) = ref_l4(&segs[2]);
        assert_eq!(be16(&segs[2], l4 + 4), 8 + 1100);
    }
}

#[test]
fn ipv6_destination_options_are_copied_into_every_segment() {
    for udp in [false, true] {
        let mut s = Spec::new(true, udp, 2500, 700);
        s.ip_opts = 2;
        let segs = check(&s);
        for seg in &segs {
            assert_eq!(seg[6], 60);
            assert_eq!(seg[40], 60);
            assert_eq!(seg[48], if udp { 17 } else { 6 });
        }
    }
}

#[test]
fn ids_and_sequence_numbers_wrap() {
    let mut s = Spec::new(false, false, 4000, 1000);
    s.id = 0xfffe;
    s.seq = u32::MAX - 1500;
    let segs = check(&s);
    assert_eq!(be16(&segs[2], 4), 0);
    let mut u = Spec::new(false, true, 4000, 1000);
    u.id = 0xffff;
    check(&u);
}

#[test]
fn exact_multiple_and_single_segment_and_empty_payload() {
    assert_eq!(check(&Spec::new(false, false, 3000, 1000)).len(), 3);
    let mut one = Spec::new(false, false, 800, 1000);
    one.flags = 0x80 | 0x18 | 0x01;
    let segs = check(&one);
    assert_eq!(segs.len(), 1);
    // One segment: the super-packet itself with its checksum completed.
    let (_, p) = one.build();
    assert_eq!(segs[0][..36], p[..36]);
    assert_eq!(segs[0][38..], p[38..]);
    assert_eq!(check(&Spec::new(true, false, 0, 1000)).len(), 1);
    assert_eq!(check(&Spec::new(false, true, 0, 1000)).len(), 1);
    assert_eq!(check(&Spec::new(true, true, 1, 1)).len(), 1);
    assert_eq!(check(&Spec::new(false, false, 7, 1)).len(), 7);
}

#[test]
fn plain_packets_pass_through_and_partial_checksums_are_completed() {
    // A plain packet is yielded untouched, without a copy.
    let (_, p) = Spec::new(false, false, 100, 1000).build();
    let mut seen = Vec::new();
    let n = Segmenter::new()
        .segment(&VnetHdr::NONE, &p, |s| {
            seen.push((s.as_ptr(), s.len()));
        })
        .unwrap();
    assert_eq!((n, seen), (1, vec![(p.as_ptr(), p.len())]));

    // GSO_NONE with NEEDS_CSUM: the checksum is completed, nothing else changes.
    for (v6, udp) in [(false, false), (false, true), (true, false), (true, true)] {
        let (mut hdr, p) = Spec::new(v6, udp, 333, 1000).build();
        hdr.gso_type = VnetHdr::GSO_NONE;
        hdr.gso_size = 0;
        let segs = run(&hdr, &p).unwrap();
        assert_eq!(segs.len(), 1);
        verify_wire_packet(&segs[0]);
        let field = usize::from(hdr.csum_start + hdr.csum_offset);
        assert_eq!(segs[0][..field], p[..field]);
        assert_eq!(segs[0][field + 2..], p[field + 2..]);
    }
}

#[test]
fn segmenter_reuses_its_buffer() {
    let (hdr, p) = Spec::new(false, false, 60000, 1400).build();
    let mut seg = Segmenter::new();
    seg.segment(&hdr, &p, |_| {}).unwrap();
    let cap = seg.buf.capacity();
    let ptr = seg.buf.as_ptr();
    let mut ptrs = Vec::new();
    seg.segment(&hdr, &p, |s| ptrs.push(s.as_ptr())).unwrap();
    assert!(
        ptrs.iter().all(|&q| q == ptr),
        "every segment in one buffer"
    );
    assert_eq!(seg.buf.capacity(), cap);
    assert!(cap < 2 * (52 + 1400), "the buffer holds one segment: {cap}");
}

#[test]
fn vnet_hdr_round_trips_in_native_order() {
    let h = VnetHdr {
        flags: VnetHdr::F_NEEDS_CSUM,
        gso_type: VnetHdr::GSO_TCPV6 | VnetHdr::GSO_ECN,
        hdr_len: 74,
        gso_size: 1428,
        csum_start: 40,
        csum_offset: 16,
    };
    let b = h.to_bytes();
    assert_eq!(b.len(), VnetHdr::LEN);
    assert_eq!(b[..2], [1, 0x84]);
    assert_eq!(b[4..6], 1428u16.to_ne_bytes());
    assert_eq!(VnetHdr::from_bytes(b), h);
    let mut framed = b.to_vec();
    framed.extend_from_slice(&[0x45, 0]);
    let (h2, rest) = VnetHdr::split(&framed).unwrap();
    assert_eq!((h2, rest), (h, &[0x45, 0][..]));
    assert_eq!(
        VnetHdr::split(&b[..9]),
        Err(GsoError::ShortVnetHdr { len: 9 })
    );
    assert_eq!(VnetHdr::from_bytes([0; 10]), VnetHdr::NONE);
    assert!(!VnetHdr::NONE.is_gso() && !VnetHdr::NONE.needs_csum());
    assert!(h.is_gso() && h.needs_csum());
}

// ---------------------------------------------------------------------------------------------
// Malformed input
// ---------------------------------------------------------------------------------------------

/// Segments expecting an error, and checks nothing was yielded.
fn refuse(hdr: &VnetHdr, p: &[u8]) -> GsoError {
    let mut yielded = 0;
    let err = Segmenter::new()
        .segment(hdr, p, |_| yielded += 1)
        .expect_err("should be refused");
    assert_eq!(yielded, 0, "nothing yielded before an error");
    assert_eq!(segment_count(hdr, p), Err(err.clone()));
    err
}

#[test]
fn malformed_vnet_headers_are_refused() {
    let (hdr, p) = Spec::new(false, false, 3000, 1000).build();
    let with = |f: &dyn Fn(&mut VnetHdr)| {
        let mut h = hdr;
        f(&mut h);
        refuse(&h, &p)
    };
    assert_eq!(
        with(&|h| h.hdr_len = 3053),
        GsoError::HdrLenBeyondPacket {
            hdr_len: 3053,
            len: 3052
        }
    );
    assert_eq!(with(&|h| h.gso_size = 0), GsoError::ZeroGsoSize);
    assert_eq!(with(&|h| h.gso_type = 2), GsoError::UnknownGsoType(2));
    assert_eq!(
        with(&|h| h.gso_type = VnetHdr::GSO_ECN),
        GsoError::UnknownGsoType(0x80)
    );
    assert!(matches!(
        with(&|h| h.gso_type = VnetHdr::GSO_UDP),
        GsoError::Unsupported(_)
    ));
    assert!(matches!(
        with(&|h| h.gso_type = VnetHdr::GSO_TCPV6),
        GsoError::ProtocolMismatch { version: 4, .. }
    ));
    assert!(matches!(
        with(&|h| h.gso_type = VnetHdr::GSO_UDP_L4),
        GsoError::ProtocolMismatch { protocol: 6, .. }
    ));
    assert!(matches!(
        with(&|h| h.csum_start = 24),
        GsoError::CsumMismatch { transport: 20, .. }
    ));
    assert!(matches!(
        with(&|h| h.csum_offset = 6),
        GsoError::CsumMismatch { field: 16, .. }
    ));
    // NONE with a checksum location outside the packet.
    assert!(matches!(
        with(&|h| {
            h.gso_type = 0;
            h.csum_start = 3045;
            h.csum_offset = 9;
        }),
        GsoError::CsumOutOfRange { .. }
    ));
    // ECN on UDP.
    let (mut uh, up) = Spec::new(true, true, 3000, 1000).build();
    uh.gso_type |= VnetHdr::GSO_ECN;
    assert!(matches!(refuse(&uh, &up), GsoError::Unsupported(_)));
}

#[test]
fn malformed_packets_are_refused() {
    let (hdr, p) = Spec::new(false, false, 3000, 1000).build();
    let with = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut q = p.clone();
        f(&mut q);
        let mut h = hdr;
        h.hdr_len = h.hdr_len.min(q.len() as u16);
        refuse(&h, &q)
    };
    assert!(matches!(
        with(&|q| q.truncate(3051)),
        GsoError::Truncated { .. }
    ));
    assert!(matches!(
        with(&|q| q.push(0)),
        GsoError::LengthMismatch {
            claimed: 3052,
            actual: 3053,
            ..
        }
    ));
    assert!(matches!(with(&|q| q.clear()), GsoError::Truncated { .. }));
    assert!(matches!(
        with(&|q| q.truncate(19)),
        GsoError::Truncated { .. }
    ));
    assert_eq!(with(&|q| q[0] = 0x55), GsoError::NotIp(5));
    assert!(matches!(with(&|q| q[0] = 0x44), GsoError::Malformed(_)));
    assert!(matches!(
        with(&|q| {
            q.truncate(40);
            q[2..4].copy_from_slice(&40u16.to_be_bytes());
            q[0] = 0x4f; // a 60-byte header in 40 bytes
        }),
        GsoError::Truncated {
            what: "IPv4 header",
            ..
        }
    ));
    assert!(matches!(
        with(&|q| q[2..4].copy_from_slice(&10u16.to_be_bytes())),
        GsoError::Malformed(_)
    ));
    assert!(matches!(
        with(&|q| q[6] |= 0x20),
        GsoError::Unsupported("IPv4 fragment")
    ));
    assert!(matches!(with(&|q| q[32] = 0x40), GsoError::Malformed(_))); // doff 4
    // A TCP header cut short (IP length adjusted so only the TCP check fails).
    let mut short = p[..30].to_vec();
    short[2..4].copy_from_slice(&30u16.to_be_bytes());
    let mut h = hdr;
    h.hdr_len = 0;
    assert!(matches!(
        refuse(&h, &short),
        GsoError::Truncated {
            what: "TCP header",
            ..
        }
    ));
    // TCP data offset beyond the packet.
    short = p[..56].to_vec();
    short[2..4].copy_from_slice(&56u16.to_be_bytes());
    short[32] = 0xf0;
    assert!(matches!(
        refuse(&h, &short),
        GsoError::Truncated {
            what: "TCP header (data offset)",
            ..
        }
    ));

    // UDP length field that disagrees.
    let (uh, mut up) = Spec::new(false, true, 3000, 1000).build();
    up[24..26].copy_from_slice(&2000u16.to_be_bytes());
    assert!(matches!(
        refuse(&uh, &up),
        GsoError::LengthMismatch {
            field: "UDP length",
            ..
        }
    ));

    // IPv6: payload length off, fragment header, authentication header, truncated ext header.
    let (vh, vp) = Spec::new(true, false, 3000, 1000).build();
    let mut q = vp.clone();
    q[4..6].copy_from_slice(&100u16.to_be_bytes());
    assert!(matches!(refuse(&vh, &q), GsoError::LengthMismatch { .. }));
    q = vp.clone();
    q[4..6].copy_from_slice(&0u16.to_be_bytes()); // jumbogram-style 0
    assert!(matches!(refuse(&vh, &q), GsoError::LengthMismatch { .. }));
    for (next, what) in [
        (44, "IPv6 fragment header"),
        (51, "IPv6 authentication header"),
    ] {
        q = vp.clone();
        q[6] = next;
        assert_eq!(refuse(&vh, &q), GsoError::Unsupported(what));
    }
    q = Spec::new(true, false, 100, 1000).build().1;
    q[6] = 60;
    q[41] = 255; // a 2 KiB destination-options header in a short packet
    let mut h = vh;
    h.flags = 0;
    assert!(matches!(refuse(&h, &q), GsoError::Truncated { .. }));
    q = vp.clone();
    q[6] = 17; // says UDP, GSO type says TCPv6
    assert!(matches!(
        refuse(&vh, &q),
        GsoError::ProtocolMismatch { protocol: 17, .. }
    ));
    // A loop of extension headers is bounded.
    let mut looped = vec![0u8; 40 + 9 * 8];
    looped[0] = 0x60;
    looped[4..6].copy_from_slice(&(9u16 * 8).to_be_bytes());
    looped[6] = 60;
    for k in 0..9 {
        looped[40 + k * 8] = 60;
    }
    assert!(matches!(
        refuse(&h, &looped),
        GsoError::Unsupported("more than 8 IPv6 extension headers")
    ));
}

// ---------------------------------------------------------------------------------------------
// Checksum helpers
// ---------------------------------------------------------------------------------------------

#[test]
fn rfc1071_example_and_pieces() {
    // RFC 1071 section 3's example: the sum of 00 01 f2 03 f4 f5 f6 f7 is ddf2.
    let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
    assert_eq!(Checksum::new().add_bytes(&data).sum(), 0xddf2);
    assert_eq!(checksum(&data), !0xddf2);
    // Any split, including odd ones, gives the same sum.
    let long: Vec<u8> = (0..1001u32).map(|i| (i * 37 % 256) as u8).collect();
    let whole = Checksum::new().add_bytes(&long).sum();
    assert_eq!(whole, ref_sum(&long));
    for cut in [0, 1, 2, 3, 7, 8, 9, 500, 999, 1000, 1001] {
        let (a, b) = long.split_at(cut);
        assert_eq!(
            Checksum::new().add_bytes(a).add_bytes(b).sum(),
            whole,
            "cut {cut}"
        );
    }
    let (a, rest) = long.split_at(3);
    let (b, c) = rest.split_at(5);
    assert_eq!(
        Checksum::new().add_bytes(a).add_bytes(b).add_bytes(c).sum(),
        whole
    );
    // add_u16/add_u32 at odd positions.
    assert_eq!(
        Checksum::new()
            .add_bytes(&[9])
            .add_u16(0x1234)
            .add_u32(0xdeadbeef)
            .sum(),
        ref_sum(&[9, 0x12, 0x34, 0xde, 0xad, 0xbe, 0xef])
    );
}

#[test]
fn incremental_update_matches_recomputation() {
    // RFC 1624's example: HC 0xdd2f, m 0x5555 -> m' 0x3285 gives HC' 0x0000.
    assert_eq!(checksum_update_u16(0xdd2f, 0x5555, 0x3285), 0x0000);
    let (_, mut p) = Spec::new(false, true, 200, 1000).build();
    fix_transport_checksum(&mut p).unwrap();
    let check = be16(&p, 26);
    let old = p[12..16].to_vec();
    let new = [192, 168, 7, 9];
    p[12..16].copy_from_slice(&new);
    let updated = checksum_update(check, &old, &new);
    fix_transport_checksum(&mut p).unwrap();
    assert_eq!(ref_sum(&updated.to_be_bytes()), ref_sum(&p[26..28]));
    verify_wire_packet(&{
        let mut q = p.clone();
        q[26..28].copy_from_slice(&updated.to_be_bytes());
        fix_ipv4_header_checksum(&mut q).unwrap();
        q
    });
}

/// A complete ICMP/ICMPv6 echo request.
fn echo(v6: bool) -> Vec<u8> {
    let mut p = if v6 {
        let mut p = vec![0u8; 40 + 16];
        p[0] = 0x60;
        p[4..6].copy_from_slice(&16u16.to_be_bytes());
        p[6] = 58;
        p[7] = 64;
        p[8] = 0xfd;
        p[23] = 1;
        p[24] = 0xfd;
        p[39] = 2;
        p[40] = 128;
        p
    } else {
        let mut p = vec![0u8; 20 + 16];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&36u16.to_be_bytes());
        p[8] = 64;
        p[9] = 1;
        p[12..16].copy_from_slice(&[10, 0, 0, 1]);
        p[16..20].copy_from_slice(&[10, 0, 0, 2]);
        p[20] = 8;
        p
    };
    let n = p.len();
    for (i, b) in p[n - 12..].iter_mut().enumerate() {
        *b = i as u8 * 3;
    }
    p
}

#[test]
fn fix_transport_checksum_covers_tcp_udp_icmp_icmpv6() {
    for (v6, udp) in [(false, false), (false, true), (true, false), (true, true)] {
        let (_, mut p) = Spec::new(v6, udp, 777, 1000).build();
        fix_ipv4_header_checksum(&mut p).unwrap();
        fix_transport_checksum(&mut p).unwrap();
        verify_wire_packet(&p);
        // After a rewrite of a port and an address.
        let (l4, _) = ref_l4(&p);
        p[l4] ^= 0x55;
        p[15] ^= 1;
        fix_ipv4_header_checksum(&mut p).unwrap();
        fix_transport_checksum(&mut p).unwrap();
        verify_wire_packet(&p);
    }
    let mut icmp = echo(false);
    fix_ipv4_header_checksum(&mut icmp).unwrap();
    fix_transport_checksum(&mut icmp).unwrap();
    assert_eq!(ref_sum(&icmp[..20]), 0xffff);
    assert_eq!(ref_sum(&icmp[20..]), 0xffff, "ICMP: no pseudo-header");
    let mut icmp6 = echo(true);
    fix_transport_checksum(&mut icmp6).unwrap();
    let mut all = ref_pseudo(&icmp6, 58, 16);
    all.extend_from_slice(&icmp6[40..]);
    assert_eq!(ref_sum(&all), 0xffff, "ICMPv6: with pseudo-header");
}

#[test]
fn fix_transport_checksum_edge_cases() {
    // IPv4 UDP without a checksum stays without.
    let (_, mut p) = Spec::new(false, true, 50, 1000).build();
    p[26..28].fill(0);
    fix_transport_checksum(&mut p).unwrap();
    assert_eq!(be16(&p, 26), 0);
    // Trailing bytes after the IP length are ignored.
    let (_, mut p) = Spec::new(false, false, 50, 1000).build();
    let n = p.len();
    p.extend_from_slice(&[0xee; 5]);
    fix_transport_checksum(&mut p).unwrap();
    verify_wire_packet(&p[..n]);
    assert_eq!(p[n..], [0xee; 5]);
    // Refused: fragments, routing with segments left, unknown protocols, bad lengths.
    let mut frag = echo(false);
    frag[6] = 0x20;
    assert!(matches!(
        fix_transport_checksum(&mut frag),
        Err(GsoError::Unsupported(_))
    ));
    let mut routed = vec![0u8; 40 + 24 + 8];
    routed[0] = 0x60;
    routed[4..6].copy_from_slice(&32u16.to_be_bytes());
    routed[6] = 43;
    routed[40] = 17;
    routed[41] = 2;
    routed[43] = 1; // segments left
    assert!(matches!(
        fix_transport_checksum(&mut routed),
        Err(GsoError::Unsupported(_))
    ));
    routed[43] = 0;
    routed[68..70].copy_from_slice(&8u16.to_be_bytes());
    fix_transport_checksum(&mut routed).unwrap();
    verify_wire_packet(&routed);
    let mut gre = echo(false);
    gre[9] = 47;
    assert_eq!(
        fix_transport_checksum(&mut gre),
        Err(GsoError::UnsupportedProtocol(47))
    );
    let mut icmp_in_v6 = echo(true);
    icmp_in_v6[6] = 1;
    assert_eq!(
        fix_transport_checksum(&mut icmp_in_v6),
        Err(GsoError::UnsupportedProtocol(1))
    );
    let (_, mut bad) = Spec::new(true, true, 50, 1000).build();
    bad[44..46].copy_from_slice(&9u16.to_be_bytes());
    assert!(matches!(
        fix_transport_checksum(&mut bad),
        Err(GsoError::LengthMismatch { .. })
    ));
    let mut tiny = echo(false)[..22].to_vec();
    tiny[2..4].copy_from_slice(&22u16.to_be_bytes());
    assert!(matches!(
        fix_transport_checksum(&mut tiny),
        Err(GsoError::Truncated { .. })
    ));
    assert!(fix_transport_checksum(&mut []).is_err());
    assert!(fix_ipv4_header_checksum(&mut [0x45, 0]).is_err());
}

// ---------------------------------------------------------------------------------------------
// Ethernet frames (TAP devices)
// ---------------------------------------------------------------------------------------------

/// `spec`'s super-packet as a TAP device hands it over: behind an Ethernet header (with
/// `tags` VLAN tags), `csum_start` and `hdr_len` counting from the start of the frame.
fn as_frame(spec: &Spec, tags: usize) -> (VnetHdr, Vec<u8>, usize) {
    let (mut hdr, p) = spec.build();
    let mut f = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1];
    for t in 0..tags {
        let tpid: u16 = if t + 1 < tags { 0x88a8 } else { 0x8100 };
        f.extend_from_slice(&tpid.to_be_bytes());
        f.extend_from_slice(&(0x2000u16 | (100 + t as u16)).to_be_bytes());
    }
    f.extend_from_slice(&(if spec.v6 { 0x86ddu16 } else { 0x0800 }).to_be_bytes());
    let l2 = f.len();
    f.extend_from_slice(&p);
    hdr.hdr_len += l2 as u16;
    if hdr.needs_csum() {
        hdr.csum_start += l2 as u16;
    }
    (hdr, f, l2)
}

/// A frame's segments are the packet's segments, each behind a copy of the frame's header.
fn check_frame(spec: &Spec, tags: usize) {
    let (hdr, p) = spec.build();
    let want = run(&hdr, &p).expect("segments");
    let (fhdr, frame, l2) = as_frame(spec, tags);
    let mut got = Vec::new();
    let n = Segmenter::new()
        .segment_link(LinkLayer::Ethernet, &fhdr, &frame, |s| got.push(s.to_vec()))
        .expect("frame segments");
    assert_eq!(n, want.len());
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(&g[..l2], &frame[..l2], "link-layer header copied");
        assert_eq!(&g[l2..], &w[..], "the IP packet as without a link layer");
    }
}

#[test]
fn ethernet_frames_segment_like_their_ip_packets() {
    for (v6, udp) in [(false, false), (true, false), (false, true), (true, true)] {
        for tags in 0..=2 {
            let mut s = Spec::new(v6, udp, 5000, 1448);
            s.flags = 0x10 | 0x08 | 0x01;
            check_frame(&s, tags);
            s.needs_csum = false;
            check_frame(&s, tags);
        }
    }
}

#[test]
fn frames_without_ip_pass_and_a_frame_checksum_is_completed_at_its_offset() {
    let arp = [
        vec![0xff; 6],
        vec![2, 0, 0, 0, 0, 1],
        vec![8, 6],
        vec![0; 28],
    ]
    .concat();
    let mut got = Vec::new();
    Segmenter::new()
        .segment_link(LinkLayer::Ethernet, &VnetHdr::NONE, &arp, |s| {
            got.push(s.to_vec())
        })
        .unwrap();
    assert_eq!(got, vec![arp.clone()]);
    let gso = VnetHdr {
        gso_type: VnetHdr::GSO_TCPV4,
        gso_size: 100,
        ..VnetHdr::NONE
    };
    assert!(matches!(
        Segmenter::new().segment_link(LinkLayer::Ethernet, &gso, &arp, |_| {}),
        Err(GsoError::Unsupported(_))
    ));
    // One TCP segment with a partial checksum, as a TAP device hands it over.
    let spec = Spec::new(false, false, 300, 1448);
    let (hdr, frame, l2) = as_frame(&spec, 1);
    let single = VnetHdr {
        gso_type: VnetHdr::GSO_NONE,
        gso_size: 0,
        ..hdr
    };
    let mut out = Vec::new();
    Segmenter::new()
        .segment_link(LinkLayer::Ethernet, &single, &frame, |s| {
            out.push(s.to_vec())
        })
        .unwrap();
    verify_wire_packet(&out[0][l2..]);
}

// ---------------------------------------------------------------------------------------------
// Randomized
// ---------------------------------------------------------------------------------------------

fn spec_strategy() -> impl Strategy<Value = Spec> {
    (
        (any::<bool>(), any::<bool>(), 0usize..4000, 1u16..1600),
        (any::<u8>(), 0usize..=10, 0usize..=10, any::<bool>()),
        (any::<bool>(), any::<u16>(), any::<u32>(), any::<u8>()),
    )
        .prop_map(
            |(
                (v6, udp, len, mss),
                (flags, tcp_opts, ip_opts, needs_csum),
                (ecn, id, seq, salt),
            )| {
                let mut s = Spec::new(v6, udp, len, mss);
                s.payload.iter_mut().for_each(|b| *b ^= salt);
                s.flags = flags & !0x02; // no SYN on a data segment
                s.tcp_opts = tcp_opts;
                s.ip_opts = if v6 { ip_opts.min(3) } else { ip_opts };
                s.needs_csum = needs_csum;
                s.ecn = ecn && !udp;
                s.id = id;
                s.seq = seq;
                s
            },
        )
}

proptest! {
    // No regression files: this crate keeps its tests under src/; a failure prints its input.
    #![proptest_config(ProptestConfig {
        cases: 200,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_super_packets_segment_correctly(spec in spec_strategy()) {
        check(&spec);
    }

    #[test]
    fn random_super_frames_segment_like_their_packets(spec in spec_strategy(), tags in 0usize..3) {
        check_frame(&spec, tags);
    }

    #[test]
    fn the_checksum_of_any_bytes_in_any_pieces_is_rfc_1071s(
        bytes in proptest::collection::vec(any::<u8>(), 0..3000),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..4),
    ) {
        // The reference: big-endian 16-bit words, a last odd byte padded, end-around carry.
        let mut sum: u32 = 0;
        for pair in bytes.chunks(2) {
            sum += u32::from(pair[0]) << 8 | u32::from(pair.get(1).copied().unwrap_or(0));
            sum = (sum & 0xffff) + (sum >> 16);
        }
        let want = !(sum as u16);
        let mut at: Vec<usize> = cuts.iter().map(|c| c.index(bytes.len() + 1)).collect();
        at.sort_unstable();
        let mut c = Checksum::new();
        let mut from = 0;
        for to in at.into_iter().chain([bytes.len()]) {
            c = c.add_bytes(&bytes[from..to]);
            from = to;
        }
        prop_assert_eq!(c.finish(), want);
        prop_assert_eq!(checksum(&bytes), want);
    }

    #[test]
    fn arbitrary_input_never_panics(
        hdr in any::<[u8; 10]>(),
        bytes in proptest::collection::vec(any::<u8>(), 0..300),
    ) {
        let hdr = VnetHdr::from_bytes(hdr);
        let _ = run(&hdr, &bytes);
        let _ = Segmenter::new().segment_link(LinkLayer::Ethernet, &hdr, &bytes, |_| {});
        let mut b = bytes.clone();
        let _ = fix_transport_checksum(&mut b);
        let _ = fix_ipv4_header_checksum(&mut b);
    }

    #[test]
    fn corrupted_super_packets_never_panic(
        spec in spec_strategy(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<prop::sample::Index>(),
        mss in any::<u16>(),
    ) {
        let (mut hdr, mut p) = spec.build();
        let hdrs = usize::from(hdr.hdr_len) + 4;
        for (at, v) in edits {
            let i = at.index(hdrs.min(p.len()));
            p[i] = v;
        }
        if mss % 3 == 0 {
            p.truncate(cut.index(p.len() + 1));
        }
        hdr.gso_size = if mss % 5 == 0 { mss } else { hdr.gso_size };
        if let Ok(segs) = run(&hdr, &p) {
            for s in &segs {
                prop_assert!(s.len() <= p.len());
            }
        }
    }
}
