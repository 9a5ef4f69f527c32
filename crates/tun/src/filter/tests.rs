//! Filter tests. Those that compile expressions need libpcap: when it is missing they fail under
//! CI (`CI` set) and are skipped visibly elsewhere, as in the integration tests' `tests/util.rs`.
//! The oracle tests compare our interpreter's verdict with libpcap's own `pcap_offline_filter`.

use super::bpf::op::*;
use super::*;

// --- Harness -----------------------------------------------------------------------------------

use hostkit_testutil::skip;

/// Skips the test (see [`skip`]) unless libpcap can be loaded.
macro_rules! require_libpcap {
    () => {
        if let Err(why) = libpcap::available() {
            skip(&why);
            return;
        }
    };
}

fn compile(expr: &str) -> Filter {
    Filter::compile(expr).unwrap_or_else(|e| panic!("{e}"))
}

/// A small deterministic PRNG (xorshift64*), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
    fn chance(&mut self, one_in: u64) -> bool {
        self.below(one_in) == 0
    }
}

// --- Packets -----------------------------------------------------------------------------------

const V4_A: [u8; 4] = [10, 0, 0, 1];
const V4_B: [u8; 4] = [10, 0, 0, 2];
const V4_C: [u8; 4] = [192, 168, 1, 9];
const V6_A: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
const V6_B: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
const V6_LL: [u8; 16] = [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7];

const TCP: u8 = 6;
const UDP: u8 = 17;
const ICMP: u8 = 1;
const ICMPV6: u8 = 58;

const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const ACK: u8 = 0x10;

/// An IPv4 packet (DF set, TTL 64); `frag_offset` in 8-byte units.
fn ipv4_frag(proto: u8, src: [u8; 4], dst: [u8; 4], frag_offset: u16, payload: &[u8]) -> Vec<u8> {
    let total = (20 + payload.len()) as u16;
    let mut p = vec![0x45, 0];
    p.extend_from_slice(&total.to_be_bytes());
    p.extend_from_slice(&[0x12, 0x34]);
    p.extend_from_slice(&(0x4000 | frag_offset).to_be_bytes());
    p.extend_from_slice(&[64, proto, 0, 0]);
    p.extend_from_slice(&src);
    p.extend_from_slice(&dst);
    p.extend_from_slice(payload);
    p
}

fn ipv4(proto: u8, src: [u8; 4], dst: [u8; 4], payload: &[u8]) -> Vec<u8> {
    ipv4_frag(proto, src, dst, 0, payload)
}

fn ipv6(next: u8, src: [u8; 16], dst: [u8; 16], payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x60, 0, 0, 0];
    p.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    p.extend_from_slice(&[next, 64]);
    p.extend_from_slice(&src);
    p.extend_from_slice(&dst);
    p.extend_from_slice(payload);
    p
}

fn tcp(sport: u16, dport: u16, flags: u8, data: &[u8]) -> Vec<u8> {
    let mut t = Vec::new();
    t.extend_from_slice(&sport.to_be_bytes());
    t.extend_from_slice(&dport.to_be_bytes());
    t.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    t.extend_from_slice(data);
    t
}

fn udp(sport: u16, dport: u16, data: &[u8]) -> Vec<u8> {
    let mut u = Vec::new();
    u.extend_from_slice(&sport.to_be_bytes());
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&((8 + data.len()) as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(data);
    u
}

fn icmp(kind: u8, code: u8) -> Vec<u8> {
    vec![kind, code, 0, 0, 0, 1, 0, 1, b'p', b'i', b'n', b'g']
}

/// A varied set of well-formed packets.
fn crafted_packets() -> Vec<Vec<u8>> {
    vec![
        ipv4(TCP, V4_A, V4_B, &tcp(40000, 80, SYN, b"")),
        ipv4(TCP, V4_B, V4_A, &tcp(80, 40000, SYN | ACK, b"")),
        ipv4(TCP, V4_A, V4_B, &tcp(40000, 80, ACK, b"GET / HTTP/1.1\r\n")),
        ipv4(TCP, V4_A, V4_C, &tcp(1234, 443, RST | ACK, b"")),
        ipv4(TCP, V4_C, V4_A, &tcp(8080, 1234, FIN | ACK, &[0u8; 100])),
        ipv4(UDP, V4_A, V4_B, &udp(5353, 53, b"\xde\xad\xbe\xefquery")),
        ipv4(UDP, V4_B, V4_A, &udp(53, 5353, &[7u8; 40])),
        ipv4(UDP, V4_A, [255, 255, 255, 255], &udp(68, 67, &[0u8; 30])),
        ipv4(UDP, V4_A, [224, 0, 0, 251], &udp(5353, 5353, b"mdns")),
        ipv4(ICMP, V4_A, V4_B, &icmp(8, 0)),
        ipv4(ICMP, V4_B, V4_A, &icmp(0, 0)),
        ipv4(ICMP, V4_C, V4_A, &icmp(3, 3)),
        ipv4(47, V4_A, V4_B, &[0u8; 24]),
        ipv4_frag(TCP, V4_A, V4_B, 185, &[0u8; 30]),
        ipv4_frag(UDP, V4_A, V4_B, 0x2000, &udp(1, 53, &[1u8; 16])),
        ipv6(TCP, V6_A, V6_B, &tcp(40000, 80, SYN, b"")),
        ipv6(TCP, V6_B, V6_A, &tcp(80, 40000, SYN | ACK, b"")),
        ipv6(TCP, V6_A, V6_B, &tcp(2000, 8000, ACK, &[9u8; 64])),
        ipv6(UDP, V6_A, V6_B, &udp(5353, 53, b"query")),
        ipv6(
            UDP,
            V6_LL,
            [0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xfb],
            &udp(5353, 5353, b"m"),
        ),
        ipv6(ICMPV6, V6_A, V6_B, &icmp(128, 0)),
        ipv6(ICMPV6, V6_B, V6_A, &icmp(129, 0)),
        ipv6(ICMPV6, V6_LL, V6_B, &icmp(135, 0)),
        ipv6(ICMP, V6_A, V6_B, &icmp(8, 0)),
        ipv6(0, V6_A, V6_B, &[TCP, 0, 1, 4, 0, 0, 0, 0, 0, 80, 0, 80]),
        ipv6(
            44,
            V6_A,
            V6_B,
            &[UDP, 0, 0, 0, 0, 0, 0, 1, 0, 53, 0, 53, 0, 8, 0, 0],
        ),
        // Not IP at all, and degenerate.
        vec![0x00, 0x01, 0x02, 0x03, 0x04, 0x05],
        vec![0x45],
        vec![],
    ]
}

// --- Compiled expressions on crafted packets ----------------------------------------------------

#[test]
fn compiled_expressions_match_crafted_packets() {
    require_libpcap!();
    let v4_syn = ipv4(TCP, V4_A, V4_B, &tcp(40000, 80, SYN, b""));
    let v4_synack = ipv4(TCP, V4_B, V4_A, &tcp(80, 40000, SYN | ACK, b""));
    let v4_ack = ipv4(TCP, V4_A, V4_B, &tcp(40000, 80, ACK, b"GET /"));
    let v4_tcp_81 = ipv4(TCP, V4_A, V4_B, &tcp(40000, 81, ACK, b""));
    let v4_udp_53 = ipv4(UDP, V4_A, V4_B, &udp(5353, 53, b"q"));
    let v4_udp_80 = ipv4(UDP, V4_A, V4_B, &udp(5353, 80, b"q"));
    let v4_other = ipv4(UDP, V4_C, [192, 168, 1, 10], &udp(1, 2, b""));
    let v4_echo = ipv4(ICMP, V4_A, V4_B, &icmp(8, 0));
    let v4_big = ipv4(UDP, V4_A, V4_B, &udp(1, 2, &[0u8; 200]));
    let v4_frag = ipv4_frag(TCP, V4_A, V4_B, 185, &tcp(40000, 80, ACK, b""));
    let v6_syn = ipv6(TCP, V6_A, V6_B, &tcp(40000, 80, SYN, b""));
    let v6_udp_53 = ipv6(UDP, V6_A, V6_B, &udp(5353, 53, b"q"));
    let v6_echo = ipv6(ICMPV6, V6_A, V6_B, &icmp(128, 0));
    let v6_ll = ipv6(UDP, V6_LL, V6_B, &udp(1, 2, b""));
    let garbage = vec![0x00, 0x11, 0x22];

    let cases: &[(&str, &[u8], bool)] = &[
        ("tcp port 80", &v4_syn, true),
        ("tcp port 80", &v4_synack, true),
        ("tcp port 80", &v6_syn, true),
        ("tcp port 80", &v4_tcp_81, false),
        ("tcp port 80", &v4_udp_80, false),
        ("tcp port 80", &v4_echo, false),
        ("tcp port 80", &v4_frag, false),
        ("tcp port 80", &v4_syn[..22], false),
        ("tcp port 80", &garbage, false),
        ("udp port 53", &v4_udp_53, true),
        ("udp port 53", &v6_udp_53, true),
        ("port 53", &v4_udp_53, true),
        ("port 53", &v6_syn, false),
        ("dst port 80", &v4_synack, false),
        ("src port 80", &v4_synack, true),
        ("icmp", &v4_echo, true),
        ("icmp", &v6_echo, false),
        ("icmp", &v4_syn, false),
        ("icmp[icmptype] == icmp-echo", &v4_echo, true),
        ("ip6 and icmp6", &v6_echo, true),
        ("ip6 and icmp6", &v4_echo, false),
        ("ip6 and udp", &v6_udp_53, true),
        ("ip6 and udp", &v4_udp_53, false),
        ("ip and udp", &v4_udp_53, true),
        ("host 10.0.0.2", &v4_syn, true),
        ("host 10.0.0.2", &v4_synack, true),
        ("host 10.0.0.2", &v4_other, false),
        ("host 10.0.0.2", &v6_syn, false),
        ("src host 10.0.0.2", &v4_syn, false),
        ("dst host 10.0.0.2", &v4_syn, true),
        ("net 10.0.0.0/8", &v4_syn, true),
        ("net 10.0.0.0/8", &v4_other, false),
        ("host fd00::2", &v6_syn, true),
        ("host fd00::2", &v4_syn, false),
        ("ip6 net fe80::/10", &v6_ll, true),
        ("ip6 net fe80::/10", &v6_syn, false),
        ("tcp[tcpflags] & tcp-syn != 0", &v4_syn, true),
        ("tcp[tcpflags] & tcp-syn != 0", &v4_synack, true),
        ("tcp[tcpflags] & tcp-syn != 0", &v4_ack, false),
        ("tcp[tcpflags] & tcp-syn != 0", &v4_udp_53, false),
        ("tcp[tcpflags] == tcp-syn", &v4_synack, false),
        ("less 100", &v4_syn, true),
        ("less 100", &v4_big, false),
        ("greater 100", &v4_big, true),
        ("portrange 50-60", &v4_udp_53, true),
        ("portrange 50-60", &v4_syn, false),
        ("ip[8] == 64", &v4_syn, true),
        ("not tcp", &v4_syn, false),
        ("not tcp", &v4_udp_53, true),
        ("", &v4_syn, true),
        ("", &[], true),
    ];
    for &(expr, packet, want) in cases {
        let filter = compile(expr);
        assert_eq!(
            filter.matches(packet),
            want,
            "filter '{expr}' on {packet:02x?}\nprogram: {:?}",
            filter.instructions()
        );
        if want {
            assert_eq!(filter.verdict(packet), 262_144, "{expr}");
        }
    }
}

#[test]
fn display_and_accessors_show_the_expression() {
    require_libpcap!();
    let filter = compile("tcp port 80");
    assert_eq!(filter.to_string(), "tcp port 80");
    assert_eq!(filter.expression(), "tcp port 80");
    let last = filter.instructions().last().unwrap();
    assert_eq!(last.code, RET | K);
    assert!(filter.instructions().len() > 5);
}

#[test]
fn bad_expressions_carry_libpcaps_message() {
    require_libpcap!();
    let err = Filter::compile("tcp prt 80").unwrap_err();
    assert_eq!(err.to_string(), "filter 'tcp prt 80': syntax error");
    assert_eq!(err.expression(), "tcp prt 80");
    assert!(matches!(err, FilterError::Compile { .. }));

    let err = Filter::compile("port 99999").unwrap_err();
    assert_eq!(
        err.to_string(),
        "filter 'port 99999': illegal port number 99999 > 65535"
    );
    let err = Filter::compile("ip and").unwrap_err();
    assert_eq!(err.to_string(), "filter 'ip and': syntax error");
    let err = Filter::compile("ip broadcast").unwrap_err();
    assert!(err.to_string().contains("netmask"), "{err}");
    let err = Filter::compile("tcp\0port 80").unwrap_err();
    assert!(err.to_string().contains("NUL"), "{err}");
}

#[test]
fn link_layer_primitives_are_refused_for_raw_ip() {
    require_libpcap!();
    for (expr, needle) in [
        ("vlan", "VLAN"),
        ("vlan 10 and tcp", "VLAN"),
        ("mpls", "MPLS"),
        ("ether host 01:02:03:04:05:06", "ethernet"),
    ] {
        let err = Filter::compile(expr).unwrap_err();
        assert!(matches!(err, FilterError::Compile { .. }), "{err}");
        assert!(err.to_string().starts_with(&format!("filter '{expr}': ")));
        assert!(err.to_string().contains(needle), "{err}");
    }
}

/// `payload` behind an Ethernet header from 02:00:00:00:00:01 to `dst`, with `vlans` 802.1Q
/// tags.
fn ether(dst: [u8; 6], vlans: &[u16], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = dst.to_vec();
    f.extend_from_slice(&[2, 0, 0, 0, 0, 1]);
    for v in vlans {
        f.extend_from_slice(&0x8100u16.to_be_bytes());
        f.extend_from_slice(&v.to_be_bytes());
    }
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

#[test]
fn ethernet_filters_match_frames_as_tcpdump_does() {
    require_libpcap!();
    const BCAST: [u8; 6] = [0xff; 6];
    const PEER: [u8; 6] = [2, 0, 0, 0, 0, 2];
    let mut arp = vec![0, 1, 8, 0, 6, 4, 0, 1, 2, 0, 0, 0, 0, 1];
    arp.extend_from_slice(&V4_A);
    arp.extend_from_slice(&[0; 6]);
    arp.extend_from_slice(&V4_B);
    let arp = ether(BCAST, &[], 0x0806, &arp);
    let ping = ether(PEER, &[], 0x0800, &ipv4(ICMP, V4_A, V4_B, &icmp(8, 0)));
    let ping6 = ether(PEER, &[], 0x86dd, &ipv6(ICMPV6, V6_A, V6_B, &icmp(128, 0)));
    let tagged = ether(PEER, &[100], 0x0800, &ipv4(ICMP, V4_A, V4_B, &icmp(8, 0)));
    let own = ether(PEER, &[], 0x88b5, b"hello");
    let cases: &[(&str, &[u8], bool)] = &[
        ("arp", &arp, true),
        ("arp", &ping, false),
        ("icmp", &ping, true),
        ("icmp", &arp, false),
        ("icmp6", &ping6, true),
        ("host 10.0.0.2", &ping, true),
        ("host 10.0.0.2", &arp, true),
        ("ether host 02:00:00:00:00:02", &ping, true),
        ("ether host 02:00:00:00:00:02", &arp, false),
        ("ether broadcast", &arp, true),
        ("ether src 02:00:00:00:00:01", &own, true),
        ("ether proto 0x88b5", &own, true),
        ("ether proto 0x88b5", &ping, false),
        ("vlan", &tagged, true),
        ("vlan", &ping, false),
        ("vlan 100", &tagged, true),
        ("vlan 101", &tagged, false),
        ("vlan 100 and icmp", &tagged, true),
        ("icmp", &tagged, false),
        ("not arp and not vlan", &ping, true),
    ];
    for &(expr, frame, want) in cases {
        let filter =
            Filter::compile_for(expr, LinkLayer::Ethernet).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(filter.link(), LinkLayer::Ethernet);
        assert_eq!(
            filter.matches(frame),
            want,
            "filter '{expr}' on {frame:02x?}\nprogram: {:?}",
            filter.instructions()
        );
        assert_eq!(
            libpcap::offline_filter(filter.instructions(), frame).unwrap() != 0,
            want,
            "libpcap's own verdict for '{expr}'"
        );
    }
    assert_eq!(compile("icmp").link(), LinkLayer::Ip);
}

#[test]
fn protochain_compiles_to_a_backward_jump_and_is_refused() {
    require_libpcap!();
    let err = Filter::compile("ip6 protochain 6").unwrap_err();
    assert!(
        matches!(
            err,
            FilterError::Invalid {
                error: ProgramError::BackwardJump { .. },
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("protochain"), "{err}");
}

#[test]
fn compiles_are_serialized_across_threads() {
    require_libpcap!();
    let exprs = [
        "tcp port 80",
        "udp and host 10.0.0.2",
        "ip6 and icmp6",
        "tcp[tcpflags] & tcp-syn != 0",
        "tcp prt 80",
        "less 100 or net 192.168.0.0/16",
    ];
    let expected: Vec<_> = exprs
        .iter()
        .map(|e| Filter::compile(e).map(|f| f.instructions().to_vec()))
        .collect();
    std::thread::scope(|scope| {
        for t in 0..8 {
            let expected = &expected;
            scope.spawn(move || {
                for round in 0..25 {
                    let i = (t + round) % exprs.len();
                    let got = Filter::compile(exprs[i]).map(|f| f.instructions().to_vec());
                    assert_eq!(got, expected[i], "{}", exprs[i]);
                }
            });
        }
    });
}

#[test]
fn a_missing_library_names_it_and_the_debian_package() {
    let err = libpcap::load(&["libhostkit-no-such-pcap.so.0"])
        .err()
        .expect("no such library");
    assert!(err.contains("libhostkit-no-such-pcap.so.0"), "{err}");
    assert!(err.contains("libpcap0.8"), "{err}");
    let all = libpcap::load(&[]).err().expect("no names");
    assert!(all.contains("libpcap0.8"), "{all}");
    let names = libpcap::LIBRARY_NAMES.join(", ");
    assert_eq!(names, "libpcap.so.0.8, libpcap.so.1, libpcap.so");
}

// --- Oracle: our interpreter against pcap_offline_filter ----------------------------------------

/// Expressions covering the primitives, qualifiers, byte-offset expressions and arithmetic.
const ORACLE_EXPRESSIONS: &[&str] = &[
    "",
    "ip",
    "ip6",
    "tcp",
    "udp",
    "icmp",
    "icmp6",
    "not ip",
    "ip6 and icmp6",
    "ip6 and udp",
    "ip and tcp",
    "tcp port 80",
    "udp port 53",
    "port 53",
    "src port 40000",
    "dst port 80",
    "tcp dst port 443 or udp src port 53",
    "portrange 8000-8080",
    "tcp portrange 1-1024",
    "udp dst portrange 50-70",
    "host 10.0.0.2",
    "src host 10.0.0.1",
    "dst host 10.0.0.2",
    "net 10.0.0.0/8",
    "net 192.168.0.0/16",
    "dst net 10.0.0.0/24",
    "src net 192.168.1.0 mask 255.255.255.0",
    "host fd00::2",
    "src host fd00::1",
    "ip6 net fd00::/16",
    "net fe80::/10",
    "tcp[tcpflags] & tcp-syn != 0",
    "tcp[tcpflags] & (tcp-syn|tcp-ack) == tcp-syn",
    "tcp[tcpflags] & tcp-rst != 0",
    "tcp[13] = 0x12",
    "icmp[icmptype] == icmp-echo",
    "icmp[icmptype] != icmp-echo and icmp[icmptype] != icmp-echoreply",
    "icmp6 and ip6[40] == 128",
    "ip6[6] == 58",
    "less 100",
    "greater 100",
    "len >= 60",
    "len < 41",
    "ip[8] == 64",
    "ip[0] & 0xf != 5",
    "ip[6:2] & 0x1fff != 0",
    "ip[2:2] > 576",
    "udp[8:4] == 0xdeadbeef",
    "tcp[20:2] == 0x4745",
    "udp[4:2] - 8 > 10",
    "ip proto 47",
    "ip6 proto 17",
    "proto 6",
    "ip multicast",
    "ip6 multicast",
    "dst host 255.255.255.255",
    "tcp and (port 80 or port 443) and not host 10.0.0.9",
    "(ip and udp) or (ip6 and tcp)",
    "ip[1] * 4 == 0",
    "ip[2:2] / 4 > 10",
    "ip[2:2] % 7 == 3",
    "ip[8] << 2 == 256",
    "ip[8] >> 3 == 8",
    "ip[8] ^ 0xff == 191",
    "ip[8] | 1 == 65",
    "ip[8] & 0xc0 != 0",
    "-ip[8] == 4294967232",
    "tcp[0:2] > tcp[2:2]",
    "ip[ip[0] & 0xf] != 0",
    "ip[len - 1] == 0",
    "udp[len - 30] > 3",
    "tcp[(tcp[12] >> 4) * 4 : 4] = 0x47455420",
    "ip6[len - 1 : 2] == 0",
];

/// `count` packets derived from the crafted ones: truncated at every interesting length, and
/// with a few random bytes changed (including the version nibble and header length).
fn derived_packets(rng: &mut Rng, count: usize) -> Vec<Vec<u8>> {
    let crafted = crafted_packets();
    let mut out = crafted.clone();
    for p in &crafted {
        for len in [
            1, 9, 13, 19, 20, 21, 23, 33, 35, 39, 40, 41, 43, 53, 54, 55, 59, 61,
        ] {
            if len < p.len() {
                out.push(p[..len].to_vec());
            }
        }
    }
    while out.len() < count {
        let mut p = crafted[rng.below(crafted.len() as u64 - 3) as usize].clone();
        for _ in 0..=rng.below(3) {
            let i = rng.below(p.len() as u64) as usize;
            p[i] = if rng.chance(3) {
                rng.next() as u8
            } else {
                p[i] ^ (1 << rng.below(8))
            };
        }
        if rng.chance(4) {
            p[0] = rng.pick(&[0x40, 0x46, 0x4f, 0x60, 0x65, 0x70]);
        }
        if rng.chance(5) {
            p.truncate(rng.below(p.len() as u64 + 1) as usize);
        }
        out.push(p);
    }
    out
}

#[test]
fn oracle_compiled_expressions_agree_with_libpcap() {
    require_libpcap!();
    let mut rng = Rng(0x5eed_f11e_7e55_0001);
    let packets = derived_packets(&mut rng, 600);
    let mut cases = 0usize;
    let mut matched = 0usize;
    for expr in ORACLE_EXPRESSIONS {
        let filter = compile(expr);
        for packet in &packets {
            let ours = filter.verdict(packet);
            let theirs = libpcap::offline_filter(filter.instructions(), packet).unwrap();
            assert_eq!(
                ours,
                theirs,
                "filter '{expr}' on {packet:02x?}\nprogram: {:?}",
                filter.instructions()
            );
            cases += 1;
            matched += usize::from(ours != 0);
        }
    }
    eprintln!("oracle (expressions): {cases} cases agree, {matched} of them matches");
    assert!(cases >= 40_000, "{cases}");
    // Both verdicts are well represented.
    assert!(
        matched > cases / 20 && matched < cases - cases / 20,
        "{matched}/{cases}"
    );
}

/// Scratch words the random programs use; their prologue writes them all, because libpcap
/// 1.10's interpreter leaves scratch memory uninitialised (ours zeroes it; libpcap 1.11 does too).
const RANDOM_SCRATCH: u32 = 4;

/// A random valid program of every instruction kind libpcap's interpreter runs.
fn random_program(rng: &mut Rng) -> Vec<BpfInsn> {
    let constant = |rng: &mut Rng| -> u32 {
        match rng.below(6) {
            0 => rng.next() as u32,
            1 => rng.pick(&[0, 1, 31, 32, 33, u32::MAX, 0x8000_0000]),
            _ => rng.below(80) as u32,
        }
    };
    let mut prog = Vec::new();
    for slot in 0..RANDOM_SCRATCH {
        prog.push(BpfInsn::new(LD | IMM, 0, 0, constant(rng)));
        prog.push(BpfInsn::new(ST, 0, 0, slot));
    }
    // Start the random part from A = X = 0 (the initial state) or from other values.
    prog.push(BpfInsn::new(
        LD | IMM,
        0,
        0,
        if rng.chance(2) { 0 } else { constant(rng) },
    ));
    prog.push(BpfInsn::new(
        LDX | W | IMM,
        0,
        0,
        if rng.chance(2) { 0 } else { constant(rng) },
    ));
    let len = prog.len() + 2 + rng.below(30) as usize;
    let offset = |rng: &mut Rng| -> u32 {
        match rng.below(10) {
            0 => rng.pick(&[
                u32::MAX,
                u32::MAX - 1,
                0x7fff_ffff,
                0xffff_f000 + 44,
                0x8000_0000,
            ]),
            1 => rng.below(200) as u32,
            _ => rng.below(64) as u32,
        }
    };
    for pc in prog.len()..len - 1 {
        let room = (len - 2 - pc) as u64; // instructions a jump may skip
        let jump = |rng: &mut Rng| rng.below(room.min(255) + 1) as u8;
        let insn = match rng.below(12) {
            0 | 1 => {
                let size = rng.pick(&[W, H, B]);
                let mode = rng.pick(&[ABS, IND]);
                BpfInsn::new(LD | size | mode, 0, 0, offset(rng))
            }
            2 => match rng.below(4) {
                0 => BpfInsn::new(LD | W | LEN, 0, 0, 0),
                1 => BpfInsn::new(LD | IMM, 0, 0, constant(rng)),
                _ => BpfInsn::new(LD | MEM, 0, 0, rng.below(u64::from(RANDOM_SCRATCH)) as u32),
            },
            3 => match rng.below(5) {
                0 => BpfInsn::new(LDX | W | LEN, 0, 0, 0),
                1 => BpfInsn::new(
                    LDX | W | MEM,
                    0,
                    0,
                    rng.below(u64::from(RANDOM_SCRATCH)) as u32,
                ),
                2 => BpfInsn::new(LDX | B | MSH, 0, 0, offset(rng)),
                _ => BpfInsn::new(LDX | W | IMM, 0, 0, constant(rng)),
            },
            4 => BpfInsn::new(
                rng.pick(&[ST, STX]),
                0,
                0,
                rng.below(u64::from(RANDOM_SCRATCH)) as u32,
            ),
            5..=7 => {
                let alu = rng.pick(&[ADD, SUB, MUL, DIV, MOD, AND, OR, XOR, LSH, RSH, NEG]);
                if alu == NEG {
                    BpfInsn::new(ALU | NEG, 0, 0, 0)
                } else if rng.chance(2) {
                    BpfInsn::new(ALU | alu | X, 0, 0, 0)
                } else {
                    let k = match alu {
                        DIV | MOD => constant(rng).max(1),
                        LSH | RSH => rng.below(32) as u32,
                        _ => constant(rng),
                    };
                    BpfInsn::new(ALU | alu | K, 0, 0, k)
                }
            }
            8..=10 => {
                if rng.chance(5) {
                    BpfInsn::new(JMP | JA, 0, 0, rng.below(room + 1) as u32)
                } else {
                    let cond = rng.pick(&[JEQ, JGT, JGE, JSET]);
                    let src = rng.pick(&[K, X]);
                    BpfInsn::new(JMP | cond | src, jump(rng), jump(rng), constant(rng))
                }
            }
            _ => match rng.below(4) {
                0 => BpfInsn::new(MISC | TAX, 0, 0, 0),
                1 => BpfInsn::new(MISC | TXA, 0, 0, 0),
                2 => BpfInsn::new(RET | K, 0, 0, constant(rng)),
                _ => BpfInsn::new(RET | RET_A, 0, 0, 0),
            },
        };
        prog.push(insn);
    }
    prog.push(if rng.chance(2) {
        BpfInsn::new(RET | RET_A, 0, 0, 0)
    } else {
        BpfInsn::new(RET | K, 0, 0, constant(&mut *rng))
    });
    prog
}

#[test]
fn oracle_random_programs_agree_with_libpcap() {
    require_libpcap!();
    let mut rng = Rng(0x0bad_c0de_1234_5678);
    let mut packets = derived_packets(&mut rng, 60);
    for _ in 0..20 {
        let len = rng.below(70) as usize;
        packets.push((0..len).map(|_| rng.next() as u8).collect());
    }
    let mut cases = 0usize;
    let mut accepted = 0usize;
    for _ in 0..2_000 {
        let program = random_program(&mut rng);
        let filter = Filter::from_program("random", program.clone())
            .unwrap_or_else(|e| panic!("{e}: {program:?}"));
        for packet in &packets {
            let ours = filter.verdict(packet);
            let theirs = libpcap::offline_filter(&program, packet).unwrap();
            assert_eq!(ours, theirs, "program {program:?} on {packet:02x?}");
            cases += 1;
            accepted += usize::from(ours != 0);
        }
    }
    eprintln!("oracle (random programs): {cases} cases agree, {accepted} accepted");
    assert!(accepted > cases / 10, "{accepted}/{cases}");
}

// --- The validator ------------------------------------------------------------------------------

fn invalid(insns: &[BpfInsn]) -> ProgramError {
    match Filter::from_program("hand-made", insns.to_vec()) {
        Err(FilterError::Invalid { expr, error }) => {
            assert_eq!(expr, "hand-made");
            error
        }
        other => panic!("accepted {insns:?}: {other:?}"),
    }
}

const RET_0: BpfInsn = BpfInsn::new(RET | K, 0, 0, 0);
const RET_1: BpfInsn = BpfInsn::new(RET | K, 0, 0, 1);

#[test]
fn the_validator_refuses_bad_programs() {
    assert_eq!(invalid(&[]), ProgramError::Empty);
    // Backward jumps: `ja -2` (as libpcap's protochain) and `ja -1` (to itself).
    assert_eq!(
        invalid(&[RET_0, BpfInsn::new(JMP | JA, 0, 0, (-2i32) as u32), RET_1]),
        ProgramError::BackwardJump { pc: 1 }
    );
    assert_eq!(
        invalid(&[BpfInsn::new(JMP | JA, 0, 0, u32::MAX), RET_1]),
        ProgramError::BackwardJump { pc: 0 }
    );
    // Past the end.
    assert_eq!(
        invalid(&[BpfInsn::new(JMP | JA, 0, 0, 1), RET_1]),
        ProgramError::JumpOutOfRange { pc: 0 }
    );
    assert_eq!(
        invalid(&[BpfInsn::new(JMP | JEQ | K, 0, 2, 1), RET_0, RET_1]),
        ProgramError::JumpOutOfRange { pc: 0 }
    );
    assert_eq!(
        invalid(&[BpfInsn::new(JMP | JSET | X, 255, 0, 1), RET_1]),
        ProgramError::JumpOutOfRange { pc: 0 }
    );
    // Missing RET.
    assert_eq!(
        invalid(&[BpfInsn::new(LD | IMM, 0, 0, 1)]),
        ProgramError::NoFinalReturn
    );
    assert_eq!(
        invalid(&[RET_1, BpfInsn::new(MISC | TAX, 0, 0, 0)]),
        ProgramError::NoFinalReturn
    );
    // Scratch memory.
    for code in [ST, STX, LD | MEM, LDX | MEM] {
        assert_eq!(
            invalid(&[BpfInsn::new(code, 0, 0, 16), RET_1]),
            ProgramError::BadScratchIndex { pc: 0, index: 16 }
        );
    }
    // Constant division, modulo and shifts.
    for alu in [DIV, MOD] {
        assert_eq!(
            invalid(&[BpfInsn::new(ALU | alu | K, 0, 0, 0), RET_1]),
            ProgramError::DivisionByZero { pc: 0 }
        );
    }
    assert_eq!(
        invalid(&[BpfInsn::new(ALU | LSH | K, 0, 0, 32), RET_1]),
        ProgramError::ShiftTooLarge { pc: 0, shift: 32 }
    );
    // Unknown opcodes: LD|H|IMM, LDX|W|ABS, RET|X, ALU|NEG|X, JMP|JA|X, an unused ALU op, a
    // class with high bits set, MISC with a stray bit.
    for code in [0x08, 0x21, 0x0e, 0x8c, 0x0d, 0xb4, 0x0106, 0x27] {
        assert_eq!(
            invalid(&[BpfInsn::new(code, 0, 0, 0), RET_1]),
            ProgramError::UnknownOpcode { pc: 0, code },
            "{code:#x}"
        );
    }
    // Messages name the instruction.
    let err = Filter::from_program("p", vec![BpfInsn::new(ST, 0, 0, 99), RET_1]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "filter 'p': BPF instruction 0: scratch memory index 99 (there are 16)"
    );
}

// --- The interpreter on hand-made programs (no libpcap needed) ----------------------------------

fn run(insns: &[BpfInsn], packet: &[u8]) -> u32 {
    Filter::from_program("t", insns.to_vec())
        .unwrap_or_else(|e| panic!("{e}"))
        .verdict(packet)
}

fn ret_a() -> BpfInsn {
    BpfInsn::new(RET | RET_A, 0, 0, 0)
}

#[test]
fn loads_are_big_endian_and_bounds_checked() {
    let p = [0x01, 0x02, 0x03, 0x04, 0x05];
    let ld = |code: u16, k: u32| run(&[BpfInsn::new(code, 0, 0, k), ret_a()], &p);
    assert_eq!(ld(LD | W | ABS, 0), 0x0102_0304);
    assert_eq!(ld(LD | W | ABS, 1), 0x0203_0405);
    assert_eq!(ld(LD | W | ABS, 2), 0, "word past the end");
    assert_eq!(ld(LD | H | ABS, 3), 0x0405);
    assert_eq!(ld(LD | H | ABS, 4), 0);
    assert_eq!(ld(LD | B | ABS, 4), 0x05);
    assert_eq!(ld(LD | B | ABS, 5), 0);
    assert_eq!(ld(LD | W | ABS, u32::MAX), 0);
    assert_eq!(ld(LD | W | LEN, 0), 5);
    assert_eq!(run(&[BpfInsn::new(LD | W | LEN, 0, 0, 0), ret_a()], &[]), 0);
    // A rejected load returns 0 even when RET would return a constant.
    let reject = [BpfInsn::new(LD | B | ABS, 0, 0, 9), RET_1];
    assert_eq!(run(&reject, &p), 0);
    // Indirect loads: X + k, with overflow rejected.
    let ind = |x: u32, code: u16, k: u32| {
        run(
            &[
                BpfInsn::new(LDX | W | IMM, 0, 0, x),
                BpfInsn::new(code, 0, 0, k),
                ret_a(),
            ],
            &p,
        )
    };
    assert_eq!(ind(1, LD | B | IND, 2), 0x04);
    assert_eq!(ind(1, LD | H | IND, 2), 0x0405);
    assert_eq!(ind(1, LD | W | IND, 0), 0x0203_0405);
    assert_eq!(ind(2, LD | W | IND, 0), 0);
    assert_eq!(ind(u32::MAX, LD | B | IND, 1), 0, "X + k wraps");
    assert_eq!(ind(1, LD | B | IND, u32::MAX), 0, "X + k wraps");
    // MSH: 4 * (low nibble), as for the IPv4 header length.
    let msh = [
        BpfInsn::new(LDX | B | MSH, 0, 0, 0),
        BpfInsn::new(MISC | TXA, 0, 0, 0),
        ret_a(),
    ];
    assert_eq!(run(&msh, &[0x45]), 20);
    assert_eq!(run(&msh, &[]), 0);
}

#[test]
fn alu_jumps_and_scratch_memory() {
    let alu = |a: u32, code: u16, k: u32, x: u32| {
        run(
            &[
                BpfInsn::new(LD | IMM, 0, 0, a),
                BpfInsn::new(LDX | W | IMM, 0, 0, x),
                BpfInsn::new(ALU | code, 0, 0, k),
                ret_a(),
            ],
            &[],
        )
    };
    assert_eq!(alu(u32::MAX, ADD | K, 2, 0), 1);
    assert_eq!(alu(1, SUB | X, 0, 2), u32::MAX);
    assert_eq!(alu(0x8000_0000, MUL | K, 2, 0), 0);
    assert_eq!(alu(100, DIV | K, 7, 0), 14);
    assert_eq!(alu(100, MOD | X, 0, 7), 2);
    assert_eq!(alu(100, DIV | X, 0, 0), 0, "division by X = 0 rejects");
    assert_eq!(alu(100, MOD | X, 0, 0), 0, "modulo by X = 0 rejects");
    assert_eq!(alu(1, LSH | K, 31, 0), 0x8000_0000);
    assert_eq!(alu(1, LSH | X, 0, 32), 0);
    assert_eq!(alu(u32::MAX, RSH | X, 0, 40), 0);
    assert_eq!(alu(0xf0, AND | K, 0x3c, 0), 0x30);
    assert_eq!(alu(0xf0, OR | X, 0, 0x0f), 0xff);
    assert_eq!(alu(0xff, XOR | K, 0x0f, 0), 0xf0);
    assert_eq!(alu(1, NEG, 0, 0), u32::MAX);

    // if A > 5 (JGT K) return 1 else return 2; the true branch skips one instruction.
    let jgt = |a: u32| {
        run(
            &[
                BpfInsn::new(LD | IMM, 0, 0, a),
                BpfInsn::new(JMP | JGT | K, 1, 0, 5),
                BpfInsn::new(RET | K, 0, 0, 2),
                RET_1,
            ],
            &[],
        )
    };
    assert_eq!(jgt(6), 1);
    assert_eq!(jgt(5), 2);
    let jset_x = run(
        &[
            BpfInsn::new(LD | IMM, 0, 0, 0b1010),
            BpfInsn::new(LDX | W | IMM, 0, 0, 0b0101),
            BpfInsn::new(JMP | JSET | X, 0, 1, 0),
            RET_1,
            BpfInsn::new(RET | K, 0, 0, 7),
        ],
        &[],
    );
    assert_eq!(jset_x, 7);
    let ja = run(
        &[
            BpfInsn::new(JMP | JA, 0, 0, 1),
            RET_0,
            BpfInsn::new(RET | K, 0, 0, 9),
        ],
        &[],
    );
    assert_eq!(ja, 9);
    // Scratch memory starts zeroed for every packet; ST/LDX MEM/TXA round-trip.
    let mem = [
        BpfInsn::new(LD | MEM, 0, 0, 15),
        BpfInsn::new(JMP | JEQ | K, 1, 0, 0),
        RET_0,
        BpfInsn::new(LD | IMM, 0, 0, 42),
        BpfInsn::new(ST, 0, 0, 15),
        BpfInsn::new(LDX | W | MEM, 0, 0, 15),
        BpfInsn::new(MISC | TXA, 0, 0, 0),
        ret_a(),
    ];
    let filter = Filter::from_program("mem", mem.to_vec()).unwrap();
    assert_eq!(filter.verdict(&[]), 42);
    assert_eq!(filter.verdict(&[]), 42);
    assert!(filter.matches(&[]));
}

#[test]
fn matching_does_not_allocate() {
    require_libpcap!();
    let filter = compile("tcp port 80 or (ip6 and udp) or tcp[tcpflags] & tcp-syn != 0");
    let packets = crafted_packets();
    let before = alloc_count::get();
    let mut hits = 0;
    for packet in &packets {
        hits += usize::from(filter.matches(packet));
    }
    assert_eq!(alloc_count::get(), before);
    assert!(hits > 0);
}

/// Counts this thread's heap allocations (the global allocator of the unit-test binary).
mod alloc_count {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    thread_local! {
        static COUNT: Cell<u64> = const { Cell::new(0) };
    }

    pub fn get() -> u64 {
        COUNT.with(Cell::get)
    }

    struct Counting;

    // SAFETY: every method forwards to `System` unchanged; the count is a const-initialised
    // thread-local `Cell` without a destructor, so touching it never allocates or recurses.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            let _ = COUNT.try_with(|c| c.set(c.get() + 1));
            // SAFETY: forwarded with the caller's guarantees.
            unsafe { System.alloc(layout) }
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            // SAFETY: forwarded with the caller's guarantees.
            unsafe { System.dealloc(ptr, layout) }
        }
        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            let _ = COUNT.try_with(|c| c.set(c.get() + 1));
            // SAFETY: forwarded with the caller's guarantees.
            unsafe { System.alloc_zeroed(layout) }
        }
        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            let _ = COUNT.try_with(|c| c.set(c.get() + 1));
            // SAFETY: forwarded with the caller's guarantees.
            unsafe { System.realloc(ptr, layout, new_size) }
        }
    }

    #[global_allocator]
    static GLOBAL: Counting = Counting;
}
