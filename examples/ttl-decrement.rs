//! The relay as a router hop: the stage decrements the IPv4 TTL and the IPv6 hop limit of
//! every packet crossing the tunnel and, like a router, drops a packet whose TTL would reach 0
//! and sends the sender an ICMP time exceeded (type 11 code 0; ICMPv6 type 3 code 0). `ping`
//! then shows `ttl=63`, and `traceroute` one hop more than without it.
//!
//! It shows a stage that changes packets in place ([`Packet::data_mut`]) and keeps the IPv4
//! header checksum right incrementally (RFC 1624: only the TTL/protocol word changed — see
//! [`checksum_update_u16`]; IPv6 has no header checksum), and one that builds a whole new
//! packet and injects it toward the sender ([`Ctx::inject`] with
//! `packet.direction().reverse()`), with its checksums computed from scratch.
//!
//! **The hop's address.** The relay has no address of its own, yet the time exceeded needs a
//! source that `traceroute` shows and that the sender's kernel accepts. It uses the expired
//! packet's destination: in this tunnel every packet crossing is addressed to the far end of
//! the sender's point-to-point link (tun0's peer, 10.0.0.2, for traffic from 10.0.0.1), which
//! is where a router on that link would answer from. The error arrives on the sender's device
//! (tun0) from an address the kernel routes through that very device (the peer route
//! `10.0.0.2 dev tun0`), so even a strict `rp_filter` lets it in, and its destination, the
//! sender's address, is a local route of table 13, which the tunnel's `iif tun0` rule consults.
//! A made-up router address such as 10.0.0.254 would not do: nothing in the namespace routes
//! it, so with `rp_filter` on (many distributions set it, and IPv4 namespaces inherit it) the
//! kernel drops the error as a martian. So `traceroute -n 10.0.0.2` shows `1 10.0.0.2` (this
//! stage's time exceeded) and `2 10.0.0.2` (the far end's port unreachable), where the tunnel
//! alone shows only the second.
//!
//! Like a router (RFC 1812, RFC 4443) it sends no error for an ICMP error, a fragment other
//! than the first, a multicast or broadcast destination, or an unspecified, multicast or
//! broadcast source; the error quotes as much of the expired packet as fits in 576 bytes
//! (IPv4) or 1280 bytes (IPv6). It does not rate-limit its errors, as a kernel would. It does
//! not ask for wire-sized packets: the TTL is in the IP header, which a GSO super-packet carries
//! once for all its segments, so super-packets are decremented whole and the fast path stays
//! fast.
//!
//! Run it (as root) in a namespace of its own:
//!
//! ```text
//! ip netns add lab
//! cargo run --release --example ttl-decrement -- --netns lab \
//!     --addr0 10.0.0.1 --addr0 fd00::1 --addr1 10.0.0.2 --addr1 fd00::2
//! ip netns exec lab ping -c 1 10.0.0.2          # in another terminal: ttl=63
//! ip netns exec lab traceroute -n 10.0.0.2      # two hops
//! ip netns exec lab traceroute -6 -n fd00::2
//! ```
//!
//! It takes every `hostkit tun up` option; stop it with Ctrl-C or SIGTERM. The final report
//! lists `ttl-decrement tun0 -> tun1: … N dropped … (decremented M, expired N)`.

use std::process::ExitCode;

use hostkit_tun::gso::{Checksum, checksum, checksum_update_u16};
use hostkit_tun::{Ctx, Packet, Processor, Verdict};

const ICMP: u8 = 1;
const ICMPV6: u8 = 58;
const TIME_EXCEEDED: u8 = 11;
const TIME_EXCEEDED_V6: u8 = 3;
/// The TTL / hop limit of the errors it sends (Linux's default).
const ERROR_TTL: u8 = 64;
/// The longest IPv4 ICMP error (RFC 1812 4.3.2.3).
const MAX_ERROR_V4: usize = 576;
/// The longest ICMPv6 error: the IPv6 minimum MTU (RFC 4443 2.4 (c)).
const MAX_ERROR_V6: usize = 1280;

/// Decrements TTLs; answers expiry with time exceeded.
#[derive(Default)]
struct TtlDecrement {
    /// Packets forwarded with a TTL one lower, per direction.
    decremented: [u64; 2],
    /// Packets dropped because their TTL expired, per direction.
    expired: [u64; 2],
    /// Time exceeded errors sent back, per direction of the expired packet.
    errors_sent: [u64; 2],
}

fn get16(p: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([p[at], p[at + 1]])
}

fn put16(p: &mut [u8], at: usize, v: u16) {
    p[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

/// The ICMP time exceeded for an expired IPv4 packet, or `None` where a router sends none.
fn time_exceeded_v4(p: &[u8]) -> Option<Vec<u8>> {
    let ihl = usize::from(p[0] & 0x0f) * 4;
    if ihl < 20 || p.len() < ihl {
        return None;
    }
    let (src, dst) = (&p[12..16], &p[16..20]);
    // Not for a fragment other than the first.
    if get16(p, 6) & 0x1fff != 0 {
        return None;
    }
    // Not about an ICMP error (unreachable, quench, redirect, time exceeded, parameter
    // problem); queries such as echo get one.
    if p[9] == ICMP && p.len() > ihl && matches!(p[ihl], 3 | 4 | 5 | 11 | 12) {
        return None;
    }
    // Unicast source and destination only.
    let unicast = |a: &[u8]| a[0] != 0 && a[0] != 127 && a[0] < 224;
    if !unicast(src) || !unicast(dst) {
        return None;
    }
    // The expired packet as received (TTL 1), cut to what fits.
    let total = usize::from(get16(p, 2)).clamp(ihl, p.len());
    let quote = &p[..total.min(MAX_ERROR_V4 - 28)];
    let mut e = Vec::with_capacity(28 + quote.len());
    e.extend_from_slice(&[0x45, 0xc0]); // TOS: internetwork control, as Linux's errors
    e.extend_from_slice(&((28 + quote.len()) as u16).to_be_bytes());
    e.extend_from_slice(&[0, 0, 0, 0, ERROR_TTL, ICMP, 0, 0]);
    e.extend_from_slice(dst); // from the far end of the sender's link (see above)
    e.extend_from_slice(src);
    let header_sum = checksum(&e[..20]);
    put16(&mut e, 10, header_sum);
    e.extend_from_slice(&[TIME_EXCEEDED, 0, 0, 0, 0, 0, 0, 0]);
    e.extend_from_slice(quote);
    let icmp_sum = checksum(&e[20..]);
    put16(&mut e, 22, icmp_sum);
    Some(e)
}

/// The ICMPv6 time exceeded for an expired IPv6 packet, or `None` where a router sends none.
fn time_exceeded_v6(p: &[u8]) -> Option<Vec<u8>> {
    if p.len() < 40 {
        return None;
    }
    let (src, dst) = (&p[8..24], &p[24..40]);
    // Not for an ICMPv6 error (types below 128) directly after the header.
    if p[6] == ICMPV6 && p.len() > 40 && p[40] < 128 {
        return None;
    }
    // Not to or from a multicast address, nor from the unspecified one.
    if src[0] == 0xff || dst[0] == 0xff || src.iter().all(|&b| b == 0) {
        return None;
    }
    let total = (40 + usize::from(get16(p, 4))).min(p.len());
    let quote = &p[..total.min(MAX_ERROR_V6 - 48)];
    let len = 8 + quote.len();
    let mut e = Vec::with_capacity(40 + len);
    e.extend_from_slice(&[0x60, 0, 0, 0]);
    e.extend_from_slice(&(len as u16).to_be_bytes());
    e.extend_from_slice(&[ICMPV6, ERROR_TTL]);
    e.extend_from_slice(dst); // from the far end of the sender's link (see above)
    e.extend_from_slice(src);
    e.extend_from_slice(&[TIME_EXCEEDED_V6, 0, 0, 0, 0, 0, 0, 0]);
    e.extend_from_slice(quote);
    // The ICMPv6 checksum covers a pseudo-header: addresses, length, next header.
    let sum = Checksum::new()
        .add_bytes(&e[8..40])
        .add_u32(len as u32)
        .add_u32(u32::from(ICMPV6))
        .add_bytes(&e[40..])
        .finish();
    put16(&mut e, 42, sum);
    Some(e)
}

impl Processor for TtlDecrement {
    fn name(&self) -> &str {
        "ttl-decrement"
    }

    fn describe(&self) -> String {
        "a router hop: TTL and hop limit minus one, time exceeded at 0".into()
    }

    fn process(&mut self, packet: &mut Packet<'_>, ctx: &mut Ctx<'_>) -> Verdict {
        let d = packet.direction().index();
        let data = packet.data();
        let (ttl_at, v6) = match data.first().map(|b| b >> 4) {
            Some(4) if data.len() >= 20 => (8, false),
            Some(6) if data.len() >= 40 => (7, true),
            // Not IP (or truncated): not for a router to judge.
            _ => return Verdict::Forward,
        };
        let ttl = data[ttl_at];
        if ttl <= 1 {
            self.expired[d] += 1;
            let error = if v6 {
                time_exceeded_v6(data)
            } else {
                time_exceeded_v4(data)
            };
            if let Some(error) = error {
                ctx.inject(packet.direction().reverse(), &error);
                self.errors_sent[d] += 1;
            }
            return Verdict::Drop;
        }
        let p = packet.data_mut();
        p[ttl_at] = ttl - 1;
        if !v6 {
            // The TTL shares a 16-bit word with the protocol: update the header checksum for
            // that word alone.
            let proto = u16::from(p[9]);
            let old = (u16::from(ttl) << 8) | proto;
            let new = (u16::from(ttl - 1) << 8) | proto;
            let sum = checksum_update_u16(get16(p, 10), old, new);
            put16(p, 10, sum);
        }
        self.decremented[d] += 1;
        Verdict::Forward
    }

    fn counters(&self) -> [Vec<(&'static str, u64)>; 2] {
        let dir = |d: usize| {
            vec![
                ("decremented", self.decremented[d]),
                ("expired", self.expired[d]),
                ("time_exceeded_sent", self.errors_sent[d]),
            ]
        };
        [dir(0), dir(1)]
    }
}

fn main() -> ExitCode {
    hostkit::tunnel::Relay::builder()
        .processor(TtlDecrement::default())
        .run()
}

/// The stage without a kernel: packets through a [`hostkit_tun::Pipeline`] holding it alone.
#[cfg(test)]
mod tests {
    use std::time::Instant;

    use hostkit_tun::Direction;
    use hostkit_tun::gso::{VnetHdr, fix_transport_checksum};
    use hostkit_tun::pipeline::{Fate, Out, Pipeline};

    use super::*;

    /// A UDP datagram 10.0.0.1 -> 10.0.0.2 (or fd00::1 -> fd00::2), as traceroute sends them.
    fn udp(v6: bool, ttl: u8, id: u16) -> Vec<u8> {
        let mut udp = vec![0u8; 8 + 32];
        put16(&mut udp, 0, 40000);
        put16(&mut udp, 2, 33434);
        let len = udp.len() as u16;
        put16(&mut udp, 4, len);
        let mut p = if v6 {
            let mut h = vec![0x60, 0, 0, 0, 0, 0, 17, ttl];
            h.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
            h.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
            put16(&mut h, 4, udp.len() as u16);
            h
        } else {
            let mut h = vec![0x45, 0, 0, 0, 0, 0, 0, 0, ttl, 17, 0, 0];
            h.extend_from_slice(&[10, 0, 0, 1, 10, 0, 0, 2]);
            put16(&mut h, 2, (20 + udp.len()) as u16);
            put16(&mut h, 4, id);
            let sum = checksum(&h);
            put16(&mut h, 10, sum);
            h
        };
        p.extend_from_slice(&udp);
        fix_transport_checksum(&mut p).unwrap();
        p
    }

    fn run(packet: &mut [u8]) -> (Fate, Vec<Out>) {
        let pipeline = Pipeline::builder().stage(TtlDecrement::default()).build();
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
    fn ttls_go_down_by_one_and_the_ipv4_header_checksum_stays_valid() {
        // Every IP ID with a few TTLs: every header checksum value, its edge cases too.
        for id in 0..=u16::MAX {
            for ttl in [2, 64, 255] {
                let mut p = udp(false, ttl, id);
                assert_eq!(run(&mut p), (Fate::Write, vec![]));
                assert_eq!(p[8], ttl - 1);
                assert_eq!(checksum(&p[..20]), 0, "id {id} ttl {ttl}");
            }
        }
        let mut p = udp(true, 64, 0);
        assert_eq!(run(&mut p), (Fate::Write, vec![]));
        assert_eq!(p[7], 63);
    }

    #[test]
    fn at_ttl_1_the_packet_is_dropped_and_time_exceeded_goes_back() {
        for v6 in [false, true] {
            let expired = udp(v6, 1, 7);
            let (fate, out) = run(&mut expired.clone());
            assert_eq!(fate, Fate::Taken);
            let [error] = &out[..] else {
                panic!("one error expected: {out:?}")
            };
            assert_eq!(error.direction, Direction::Backward);
            let mut e = error.data.clone();
            // From the far end (the expired packet's destination) to the sender.
            let (hdr, src, addr) = if v6 { (40, 8, 16) } else { (20, 12, 4) };
            assert_eq!(e[src..src + addr], expired[src + addr..src + 2 * addr]);
            assert_eq!(e[src + addr..src + 2 * addr], expired[src..src + addr]);
            let kind = if v6 { TIME_EXCEEDED_V6 } else { TIME_EXCEEDED };
            assert_eq!(e[hdr..hdr + 2], [kind, 0]);
            // It quotes the packet as it arrived.
            assert_eq!(e[hdr + 8..], expired[..]);
            // Its checksums are the ones a from-scratch computation gives.
            let sent = e.clone();
            fix_transport_checksum(&mut e).unwrap();
            if !v6 {
                assert_eq!(checksum(&e[..20]), 0);
            }
            assert_eq!(e, sent);
        }
    }

    #[test]
    fn no_error_about_an_icmp_error() {
        // A destination unreachable with TTL 1: dropped, not answered.
        let mut p = udp(false, 1, 0);
        p[9] = ICMP;
        p[20] = 3;
        let (fate, out) = run(&mut p);
        assert_eq!((fate, out.len()), (Fate::Taken, 0));
    }
}
