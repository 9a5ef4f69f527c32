//! Answering pings inside the relay: the stage drops every ICMP echo request (IPv4) and ICMPv6
//! echo request crossing the tunnel and injects the echo reply back toward the sender, as if
//! the far end had answered — the request never reaches the far end's kernel.
//!
//! It shows how a stage reads a packet, drops it ([`Verdict::Drop`]) and writes a packet of
//! its own the other way ([`Ctx::inject`] with `packet.direction().reverse()`), and how to keep
//! the checksums right without recomputing them: a reply is the request with the addresses
//! swapped and another ICMP type, so the ICMP checksum only needs the RFC 1624 update for the
//! type word (the ICMPv6 pseudo-header sum does not change when source and destination swap);
//! the IPv4 header is new (no options, TTL 64) and gets a fresh header checksum. A request
//! whose checksum is wrong is passed on untouched, for the far end's kernel to discard.
//!
//! What it answers: echo requests (type 8 code 0; ICMPv6 type 128 code 0 directly after the
//! IPv6 header) to a unicast address, not fragmented, in either direction. Everything else
//! passes. It does not ask for wire-sized packets: echo requests are never GSO super-packets,
//! so TCP and UDP super-packets cross untouched and the fast path stays fast.
//!
//! Run it (as root) in a namespace of its own, and make the kernel ignore pings there, to see
//! that the replies come from the relay:
//!
//! ```text
//! ip netns add lab
//! ip netns exec lab sysctl -w net.ipv4.icmp_echo_ignore_all=1 net.ipv6.icmp.echo_ignore_all=1
//! cargo run --release --example icmp-responder -- --netns lab \
//!     --addr0 10.0.0.1 --addr0 fd00::1 --addr1 10.0.0.2 --addr1 fd00::2
//! ip netns exec lab ping -c 3 10.0.0.2       # in another terminal: replies
//! ip netns exec lab ping -c 3 fd00::2
//! ip netns exec lab tcpdump -n -i tun1 icmp or icmp6     # nothing: no request reaches tun1
//! ```
//!
//! It takes every `hostkit tun up` option; stop it with Ctrl-C or SIGTERM. The final report
//! lists `icmp-responder tun0 -> tun1: … N dropped … (answered N)` and, the other way,
//! `… N injected`.

use std::process::ExitCode;

use hostkit_tun::gso::{checksum, checksum_update_u16};
use hostkit_tun::{Ctx, Packet, Processor, Verdict};

const ICMP: u8 = 1;
const ICMPV6: u8 = 58;
const ECHO_REQUEST: u8 = 8;
const ECHO_REPLY: u8 = 0;
const ECHO_REQUEST_V6: u8 = 128;
const ECHO_REPLY_V6: u8 = 129;
/// The TTL / hop limit of a reply (Linux's default).
const REPLY_TTL: u8 = 64;

/// Answers echo requests in place of the far end.
#[derive(Default)]
struct IcmpResponder {
    /// Requests answered, per direction the request travelled.
    answered: [u64; 2],
    /// Requests passed on because their ICMP checksum was wrong.
    bad_checksum: [u64; 2],
}

fn get16(p: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([p[at], p[at + 1]])
}

fn put16(p: &mut [u8], at: usize, v: u16) {
    p[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

/// What to do with a packet that is not an answerable request.
enum Reply {
    /// Not an echo request we answer: pass it on.
    None,
    /// An echo request whose checksum is wrong: pass it on, counted.
    BadChecksum,
    /// The reply to inject.
    Packet(Vec<u8>),
}

/// The echo reply to an IPv4 echo request.
fn reply_v4(p: &[u8]) -> Reply {
    if p.len() < 20 {
        return Reply::None;
    }
    let ihl = usize::from(p[0] & 0x0f) * 4;
    let total = usize::from(get16(p, 2));
    // Not a fragment (MF clear, offset 0): a fragment's ICMP part is not all here.
    let fragment = get16(p, 6) & 0x3fff != 0;
    if ihl < 20 || total < ihl + 8 || total > p.len() || p[9] != ICMP || fragment {
        return Reply::None;
    }
    let (src, dst) = (&p[12..16], &p[16..20]);
    // Only unicast: not 0.0.0.0, multicast (224/4), broadcast or class E (240/4).
    if dst[0] >= 224 || dst == [0, 0, 0, 0] {
        return Reply::None;
    }
    let icmp = &p[ihl..total];
    if icmp[0] != ECHO_REQUEST || icmp[1] != 0 {
        return Reply::None;
    }
    if checksum(icmp) != 0 {
        return Reply::BadChecksum;
    }
    // A new 20-byte header (the request's options are not echoed), then the ICMP message.
    let mut r = Vec::with_capacity(20 + icmp.len());
    r.extend_from_slice(&[0x45, p[1]]);
    r.extend_from_slice(&((20 + icmp.len()) as u16).to_be_bytes());
    r.extend_from_slice(&p[4..6]); // identification: the request's
    r.extend_from_slice(&[0, 0, REPLY_TTL, ICMP, 0, 0]); // flags/offset, TTL, protocol, checksum
    r.extend_from_slice(dst); // from the address that was pinged
    r.extend_from_slice(src); // to the sender
    let header_sum = checksum(&r[..20]);
    put16(&mut r, 10, header_sum);
    r.extend_from_slice(icmp);
    // Type 8 -> 0, code 0: only the first 16-bit word changes.
    let new = checksum_update_u16(
        get16(&r, 22),
        u16::from(ECHO_REQUEST) << 8,
        u16::from(ECHO_REPLY) << 8,
    );
    r[20] = ECHO_REPLY;
    put16(&mut r, 22, new);
    Reply::Packet(r)
}

/// The echo reply to an ICMPv6 echo request.
fn reply_v6(p: &[u8]) -> Reply {
    if p.len() < 48 {
        return Reply::None;
    }
    let end = 40 + usize::from(get16(p, 4));
    // ICMPv6 directly after the fixed header (no extension headers), to a unicast address.
    if p[6] != ICMPV6 || end < 48 || end > p.len() || p[24] == 0xff {
        return Reply::None;
    }
    let icmp = &p[40..end];
    if icmp[0] != ECHO_REQUEST_V6 || icmp[1] != 0 {
        return Reply::None;
    }
    // The checksum covers the pseudo-header (addresses, length, next header) too.
    let sum = hostkit_tun::gso::Checksum::new()
        .add_bytes(&p[8..40])
        .add_u32(icmp.len() as u32)
        .add_u32(u32::from(ICMPV6))
        .add_bytes(icmp)
        .finish();
    if sum != 0 {
        return Reply::BadChecksum;
    }
    let mut r = p[..end].to_vec();
    r[7] = REPLY_TTL;
    r[8..24].copy_from_slice(&p[24..40]);
    r[24..40].copy_from_slice(&p[8..24]);
    // The pseudo-header sum is the same with the addresses swapped: only the type changes.
    let new = checksum_update_u16(
        get16(&r, 42),
        u16::from(ECHO_REQUEST_V6) << 8,
        u16::from(ECHO_REPLY_V6) << 8,
    );
    r[40] = ECHO_REPLY_V6;
    put16(&mut r, 42, new);
    Reply::Packet(r)
}

impl Processor for IcmpResponder {
    fn name(&self) -> &str {
        "icmp-responder"
    }

    fn describe(&self) -> String {
        "answers ICMP and ICMPv6 echo requests in place of the far end".into()
    }

    fn process(&mut self, packet: &mut Packet<'_>, ctx: &mut Ctx<'_>) -> Verdict {
        // A super-packet or a partial checksum is TCP or UDP: not ours.
        if packet.gso().is_gso() || packet.gso().needs_csum() {
            return Verdict::Forward;
        }
        let data = packet.data();
        let reply = match data.first().map(|b| b >> 4) {
            Some(4) => reply_v4(data),
            Some(6) => reply_v6(data),
            _ => Reply::None,
        };
        let d = packet.direction().index();
        match reply {
            Reply::None => Verdict::Forward,
            Reply::BadChecksum => {
                self.bad_checksum[d] += 1;
                Verdict::Forward
            }
            Reply::Packet(reply) => {
                // Into the device the request came from: the sender receives the reply.
                ctx.inject(packet.direction().reverse(), &reply);
                self.answered[d] += 1;
                Verdict::Drop
            }
        }
    }

    fn counters(&self) -> [Vec<(&'static str, u64)>; 2] {
        let dir = |d: usize| {
            let mut c = vec![("answered", self.answered[d])];
            if self.bad_checksum[d] > 0 {
                c.push(("bad_checksum", self.bad_checksum[d]));
            }
            c
        };
        [dir(0), dir(1)]
    }
}

fn main() -> ExitCode {
    hostkit::tunnel::Relay::builder()
        .processor(IcmpResponder::default())
        .run()
}

/// The stage without a kernel: packets through a [`hostkit_tun::Pipeline`] holding it alone.
#[cfg(test)]
mod tests {
    use std::time::Instant;

    use hostkit_tun::Direction;
    use hostkit_tun::gso::{Checksum, VnetHdr, checksum, fix_transport_checksum};
    use hostkit_tun::pipeline::{Fate, Out, Pipeline};

    use super::*;

    /// An echo request 10.0.0.1 -> 10.0.0.2 (or fd00::1 -> fd00::2) with 56 bytes of data.
    fn echo(v6: bool, id: u16, seq: u16) -> Vec<u8> {
        let mut icmp = vec![0u8; 8 + 56];
        icmp[0] = if v6 { ECHO_REQUEST_V6 } else { ECHO_REQUEST };
        put16(&mut icmp, 4, id);
        put16(&mut icmp, 6, seq);
        for (i, b) in icmp[8..].iter_mut().enumerate() {
            *b = i as u8;
        }
        let mut p = if v6 {
            let mut h = vec![0x60, 0, 0, 0, 0, 0, ICMPV6, 64];
            h.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
            h.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
            put16(&mut h, 4, icmp.len() as u16);
            h
        } else {
            let mut h = vec![0x45, 0, 0, 0, 0, 7, 0x40, 0, 64, ICMP, 0, 0];
            h.extend_from_slice(&[10, 0, 0, 1, 10, 0, 0, 2]);
            put16(&mut h, 2, (20 + icmp.len()) as u16);
            let sum = checksum(&h);
            put16(&mut h, 10, sum);
            h
        };
        p.extend_from_slice(&icmp);
        fix_transport_checksum(&mut p).unwrap();
        p
    }

    /// Whether every checksum of an ICMP or ICMPv6 packet verifies.
    fn checksums_ok(p: &[u8]) -> bool {
        if p[0] >> 4 == 4 {
            checksum(&p[..20]) == 0 && checksum(&p[20..]) == 0
        } else {
            let len = p.len() as u32 - 40;
            let pseudo = Checksum::new().add_bytes(&p[8..40]).add_u32(len);
            pseudo.add_u32(58).add_bytes(&p[40..]).finish() == 0
        }
    }

    fn run(packet: &mut [u8]) -> (Fate, Vec<Out>) {
        let pipeline = Pipeline::builder().stage(IcmpResponder::default()).build();
        let mut out = Vec::new();
        let fate = pipeline.process(
            Direction::Forward,
            VnetHdr::NONE,
            packet,
            Instant::now(),
            &mut out,
        );
        (fate, out)
    }

    #[test]
    fn requests_are_dropped_and_answered_toward_the_sender_with_valid_checksums() {
        // Many sequence numbers: many checksum values, the ones' complement edge cases too.
        for seq in 0..=u16::MAX {
            for v6 in [false, true] {
                let request = echo(v6, 0x4242, seq);
                let (fate, out) = run(&mut request.clone());
                assert_eq!(fate, Fate::Taken, "the request goes no further");
                let [reply] = &out[..] else {
                    panic!("one reply expected: {out:?}")
                };
                assert_eq!(reply.direction, Direction::Backward);
                let r = &reply.data;
                assert!(checksums_ok(r), "seq {seq}: {r:02x?}");
                let (hdr, addr) = if v6 { (40, 16) } else { (20, 4) };
                let src = if v6 { 8 } else { 12 };
                // Addresses swapped, type changed, the rest of the message echoed.
                assert_eq!(r[src..src + addr], request[src + addr..src + 2 * addr]);
                assert_eq!(r[src + addr..src + 2 * addr], request[src..src + addr]);
                assert_eq!(r[hdr], if v6 { ECHO_REPLY_V6 } else { ECHO_REPLY });
                assert_eq!(r[hdr + 4..], request[hdr + 4..]);
            }
        }
    }

    #[test]
    fn other_packets_and_bad_checksums_pass_untouched() {
        for v6 in [false, true] {
            let mut reply = echo(v6, 1, 1);
            let at = if v6 { 40 } else { 20 };
            reply[at] = if v6 { ECHO_REPLY_V6 } else { ECHO_REPLY };
            fix_transport_checksum(&mut reply).unwrap();
            let mut bad = echo(v6, 1, 1);
            bad[at + 9] ^= 1;
            for packet in [reply, bad] {
                assert_eq!(run(&mut packet.clone()), (Fate::Write, vec![]));
            }
        }
    }
}
