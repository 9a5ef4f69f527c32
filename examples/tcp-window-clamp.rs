//! Clamping TCP's advertised window on the wire: the stage rewrites the window field of every
//! TCP segment crossing the tunnel, both ways, to at most `--clamp BYTES` (default 1000), so
//! each sender sees its peer offer no more than that (`ss -tin` shows `snd_wnd:1000`) and
//! keeps at most that much unacknowledged data in flight.
//!
//! It shows three things:
//!
//! * a program with options of its own next to `hostkit tun up`'s: a clap parser that
//!   flattens [`hostkit::GlobalArgs`] (`-v`, `-q`), [`hostkit::tunnel::UpArgs`] and `--clamp`,
//!   handed over with `Relay::builder().global(…).args(…)` and run with
//!   [`hostkit::tunnel::RelayBuilder::run`];
//! * a stage that rewrites bytes, so it asks for wire-sized packets
//!   ([`Processor::wire_sized`]): the pipeline segments GSO super-packets for it, each segment
//!   with a complete checksum, and the stage keeps that checksum right incrementally
//!   (RFC 1624, [`checksum_update_u16`] and [`checksum_update`]) instead of summing the segment
//!   again;
//! * window scaling. The field holds the window shifted right by the scale its sender
//!   announced in its SYN (RFC 7323), so clamping the field alone would clamp the real window to
//!   `BYTES << scale` — up to 16 384 times too much. The stage strips the window-scale option
//!   from every SYN and SYN-ACK (overwriting it with NOPs, so no length changes); a connection
//!   whose SYN carried no scale uses none in either direction, every window field is then the
//!   window in bytes, and clamping it clamps the effective window. The price: at most 64 KiB
//!   in flight (hence `--clamp` at most 65535), and the stage must see the SYNs — a
//!   `--processor-filter` must let them through, and connections opened before the relay
//!   started are not clamped right. Tracking each connection's scale instead would need a table
//!   of connections and would still need the SYNs.
//!
//! It handles TCP directly behind the IPv4 header or the fixed IPv6 header; TCP behind IPv6
//! extension headers and IPv4 fragments pass untouched.
//!
//! Run it (as root) in a namespace of its own, then look at a connection crossing the tunnel:
//!
//! ```text
//! ip netns add lab
//! cargo run --release --example tcp-window-clamp -- --netns lab --clamp 1000
//! ip netns exec lab iperf3 -s -B 10.0.0.2 &          # in another terminal
//! ip netns exec lab iperf3 -c 10.0.0.2 -B 10.0.0.1 -t 3 &
//! ip netns exec lab ss -tin dst 10.0.0.2             # snd_wnd:1000, no wscale
//! ```
//!
//! It takes every `hostkit tun up` option; stop it with Ctrl-C or SIGTERM. The final report
//! lists `tcp-window-clamp tun0 -> tun1: … (clamped N, wscale_stripped M)`.

use std::process::ExitCode;

use clap::Parser;
use hostkit::tunnel::{Relay, UpArgs};
use hostkit_tun::gso::{checksum_update, checksum_update_u16};
use hostkit_tun::{Ctx, Packet, Processor, Verdict};

/// Runs `hostkit tun up` with a stage that clamps every TCP window to `--clamp` bytes.
#[derive(Debug, Parser)]
#[command(name = "tcp-window-clamp", max_term_width = 100)]
struct Cli {
    #[command(flatten)]
    global: hostkit::GlobalArgs,
    /// The largest window a TCP segment crossing the tunnel may advertise, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = 1000, value_parser = clap::value_parser!(u16).range(1..))]
    clamp: u16,
    #[command(flatten)]
    up: UpArgs,
}

const TCP: u8 = 6;
const SYN: u8 = 0x02;
const OPT_END: u8 = 0;
const OPT_NOP: u8 = 1;
const OPT_WSCALE: u8 = 3;

/// Rewrites TCP windows to at most `clamp` bytes.
struct WindowClamp {
    clamp: u16,
    /// Segments whose window was lowered, per direction.
    clamped: [u64; 2],
    /// SYNs whose window-scale option was removed, per direction.
    wscale_stripped: [u64; 2],
}

fn get16(p: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([p[at], p[at + 1]])
}

fn put16(p: &mut [u8], at: usize, v: u16) {
    p[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

/// Where the TCP header starts and how long it is, if the packet is a TCP segment this stage
/// handles.
fn tcp_header(p: &[u8]) -> Option<(usize, usize)> {
    let (l4, end) = match p.first()? >> 4 {
        4 if p.len() >= 20 => {
            let ihl = usize::from(p[0] & 0x0f) * 4;
            // Not a fragment: only a whole datagram has the whole header and a checksum we
            // can update.
            if p[9] != TCP || ihl < 20 || get16(p, 6) & 0x3fff != 0 {
                return None;
            }
            (ihl, usize::from(get16(p, 2)))
        }
        6 if p.len() >= 40 => {
            if p[6] != TCP {
                return None;
            }
            (40, 40 + usize::from(get16(p, 4)))
        }
        _ => return None,
    };
    if end > p.len() || end < l4 + 20 {
        return None;
    }
    let len = usize::from(p[l4 + 12] >> 4) * 4;
    (len >= 20 && l4 + len <= end).then_some((l4, len))
}

impl WindowClamp {
    fn new(clamp: u16) -> WindowClamp {
        WindowClamp {
            clamp,
            clamped: [0; 2],
            wscale_stripped: [0; 2],
        }
    }

    /// Overwrites the window-scale option of a SYN's TCP header (at `l4`, `len` bytes) with
    /// NOPs, updating the checksum; returns whether there was one.
    fn strip_wscale(p: &mut [u8], l4: usize, len: usize) -> bool {
        let mut i = l4 + 20;
        let end = l4 + len;
        while i < end {
            match p[i] {
                OPT_END => break,
                OPT_NOP => i += 1,
                kind => {
                    let Some(&olen) = p.get(i + 1) else { break };
                    let olen = usize::from(olen);
                    if olen < 2 || i + olen > end {
                        break; // malformed: leave the options alone
                    }
                    if kind == OPT_WSCALE && olen == 3 {
                        // The checksum sums 16-bit words from the header's start (at an even
                        // offset, as is `l4`): update it over the words the option overlaps.
                        let from = l4 + ((i - l4) & !1);
                        let to = (l4 + ((i + olen - l4 + 1) & !1)).min(end);
                        let old = p[from..to].to_vec();
                        p[i..i + olen].fill(OPT_NOP);
                        let sum = checksum_update(get16(p, l4 + 16), &old, &p[from..to]);
                        put16(p, l4 + 16, sum);
                        return true;
                    }
                    i += olen;
                }
            }
        }
        false
    }
}

impl Processor for WindowClamp {
    fn name(&self) -> &str {
        "tcp-window-clamp"
    }

    fn describe(&self) -> String {
        format!(
            "TCP windows clamped to {} bytes (window scaling stripped from SYNs)",
            self.clamp
        )
    }

    fn wire_sized(&self) -> bool {
        // It rewrites bytes: it needs each segment as the wire carries it, checksum complete.
        true
    }

    fn process(&mut self, packet: &mut Packet<'_>, _ctx: &mut Ctx<'_>) -> Verdict {
        let Some((l4, len)) = tcp_header(packet.data()) else {
            return Verdict::Forward;
        };
        let d = packet.direction().index();
        let p = packet.data_mut();
        if p[l4 + 13] & SYN != 0 && WindowClamp::strip_wscale(p, l4, len) {
            self.wscale_stripped[d] += 1;
        }
        let window = get16(p, l4 + 14);
        if window > self.clamp {
            put16(p, l4 + 14, self.clamp);
            let sum = checksum_update_u16(get16(p, l4 + 16), window, self.clamp);
            put16(p, l4 + 16, sum);
            self.clamped[d] += 1;
        }
        Verdict::Forward
    }

    fn counters(&self) -> [Vec<(&'static str, u64)>; 2] {
        let dir = |d: usize| {
            vec![
                ("clamped", self.clamped[d]),
                ("wscale_stripped", self.wscale_stripped[d]),
            ]
        };
        [dir(0), dir(1)]
    }
}

fn main() -> ExitCode {
    use clap::{CommandFactory, FromArgMatches};
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    // `tun up`'s options, a `--config` file applied as `hostkit tun up` applies it.
    let up = match UpArgs::from_matches(&matches) {
        Ok(up) => up,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    Relay::builder()
        .global(cli.global)
        .args(up)
        .processor(WindowClamp::new(cli.clamp))
        .run()
}

/// The stage without a kernel: packets through a [`hostkit_tun::Pipeline`] holding it alone.
#[cfg(test)]
mod tests {
    use std::time::Instant;

    use hostkit_tun::Direction;
    use hostkit_tun::gso::{VnetHdr, checksum, fix_transport_checksum};
    use hostkit_tun::pipeline::{Fate, Out, Pipeline};

    use super::*;

    /// Linux's SYN options: MSS, SACK permitted, timestamps, NOP, window scale 7.
    const LINUX_SYN: [u8; 20] = [
        2, 4, 5, 180, 4, 2, 8, 10, 0, 1, 2, 3, 0, 0, 0, 0, 1, 3, 3, 7,
    ];
    /// The window scale first (at an even offset), then NOP and MSS.
    const WS_FIRST: [u8; 8] = [3, 3, 7, 1, 2, 4, 5, 180];

    /// A TCP segment 10.0.0.1 -> 10.0.0.2 (or fd00::1 -> fd00::2).
    fn tcp(v6: bool, flags: u8, window: u16, options: &[u8], payload: &[u8]) -> Vec<u8> {
        let mut t = vec![0u8; 20];
        put16(&mut t, 0, 40000);
        put16(&mut t, 2, 5001);
        t[4..8].copy_from_slice(&0x1234_5678u32.to_be_bytes());
        t[12] = (((20 + options.len()) / 4) << 4) as u8;
        t[13] = flags;
        put16(&mut t, 14, window);
        t.extend_from_slice(options);
        t.extend_from_slice(payload);
        let mut p = if v6 {
            let mut h = vec![0x60, 0, 0, 0, 0, 0, TCP, 64];
            h.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
            h.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
            put16(&mut h, 4, t.len() as u16);
            h
        } else {
            let mut h = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, TCP, 0, 0];
            h.extend_from_slice(&[10, 0, 0, 1, 10, 0, 0, 2]);
            put16(&mut h, 2, (20 + t.len()) as u16);
            let sum = checksum(&h);
            put16(&mut h, 10, sum);
            h
        };
        p.extend_from_slice(&t);
        fix_transport_checksum(&mut p).unwrap();
        p
    }

    fn run(clamp: u16, packet: &mut [u8]) -> (Fate, Vec<Out>) {
        let pipeline = Pipeline::builder().stage(WindowClamp::new(clamp)).build();
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

    /// Whether the TCP checksum is the one a from-scratch computation gives.
    fn checksum_ok(p: &[u8]) -> bool {
        let mut q = p.to_vec();
        fix_transport_checksum(&mut q).unwrap();
        q == p
    }

    #[test]
    fn syns_lose_the_window_scale_and_windows_are_clamped_with_valid_checksums() {
        for v6 in [false, true] {
            // The options, and where the window scale is in them (odd, then even offset).
            for (options, ws) in [(&LINUX_SYN[..], 17), (&WS_FIRST[..], 0)] {
                // Many windows: many checksum values.
                for window in (0..=u16::MAX).step_by(7) {
                    let mut p = tcp(v6, SYN, window, options, &[]);
                    let before = p.clone();
                    assert_eq!(run(1000, &mut p), (Fate::Write, vec![]));
                    let l4 = if v6 { 40 } else { 20 };
                    assert_eq!(get16(&p, l4 + 14), window.min(1000));
                    let opts = &p[l4 + 20..];
                    assert_eq!(opts[ws..ws + 3], [OPT_NOP; 3], "{opts:?}");
                    // Every other byte as it was.
                    assert_eq!(before[l4 + 20 + ws], OPT_WSCALE);
                    assert_eq!(opts[..ws], before[l4 + 20..l4 + 20 + ws]);
                    assert_eq!(opts[ws + 3..], before[l4 + 23 + ws..]);
                    assert!(checksum_ok(&p), "window {window}: {p:02x?}");
                }
            }
        }
    }

    #[test]
    fn data_segments_keep_small_windows_and_their_options() {
        let ts = [1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2];
        for v6 in [false, true] {
            let mut small = tcp(v6, 0x10, 900, &ts, b"data");
            let before = small.clone();
            run(1000, &mut small);
            assert_eq!(small, before);
            let mut big = tcp(v6, 0x18, 64_000, &ts, b"data");
            run(1000, &mut big);
            assert_eq!(get16(&big, if v6 { 54 } else { 34 }), 1000);
            assert!(checksum_ok(&big));
        }
    }
}
