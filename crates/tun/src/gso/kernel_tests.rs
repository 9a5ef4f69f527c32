//! Cross-check against the running kernel (root only): a super-packet written into one TUN
//! device with a `virtio_net_hdr` is forwarded by the kernel out of a second TUN device that
//! has no offloads, so the kernel segments it in software (and completes the checksums);
//! what is read there must equal, byte for byte, what [`Segmenter`] makes of the same
//! super-packet (with the TTL or hop limit one lower, as forwarding leaves it).
//!
//! Gated like the integration tests (`tests/util.rs`): skipped visibly unless root, and a
//! failure under CI when a prerequisite is missing.

use std::process::Command;
use std::time::{Duration, Instant};

use super::tests::{Spec, verify_wire_packet};
use super::*;
use crate::device::{TunDevice, TunOptions};

use hostkit_testutil::skip;

fn sh(script: &str) {
    let out = Command::new("sh")
        .args(["-ec", script])
        .output()
        .expect("run sh");
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn open(name: &str, vnet_hdr: bool) -> TunDevice {
    TunDevice::open(&TunOptions {
        name: name.into(),
        mode: crate::DeviceMode::Tun,
        vnet_hdr,
        multi_queue: false,
        offload: 0,
    })
    .expect("open TUN device")
}

/// Reads from `dev` until `n` packets to 10.0.0.2 / fd00::2 arrived (other traffic, such as
/// IPv6 router solicitations, is ignored) or 3 s passed.
fn read_forwarded(dev: &TunDevice, n: usize) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    let mut buf = vec![0u8; 65536];
    let deadline = Instant::now() + Duration::from_secs(3);
    while got.len() < n && Instant::now() < deadline {
        match dev.read(&mut buf) {
            Ok(len) => {
                let p = &buf[..len];
                let ours = match p.first().map(|b| b >> 4) {
                    Some(4) => len >= 20 && p[16..20] == [10, 0, 0, 2],
                    Some(6) => len >= 40 && p[24] == 0xfd && p[25..39] == [0; 14] && p[39] == 2,
                    _ => false,
                };
                if ours {
                    got.push(p.to_vec());
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(e) => panic!("read: {e}"),
        }
    }
    got
}

#[test]
fn kernel_software_gso_matches_segmenter() {
    if !nix::unistd::geteuid().is_root() {
        skip("needs root (CAP_NET_ADMIN/CAP_SYS_ADMIN); run the suite as root");
        return;
    }
    if Command::new("ip").arg("-V").output().is_err() {
        skip("needs the `ip` command (iproute2)");
        return;
    }
    if !std::path::Path::new(crate::device::TUN_CLONE_PATH).exists() {
        skip("needs /dev/net/tun");
        return;
    }
    // A network namespace is per thread: a thread of our own, its namespace gone with it.
    let name = std::thread::current().name().map(str::to_string);
    let worker = std::thread::Builder::new()
        .name(name.unwrap_or_default())
        .spawn(in_private_netns)
        .expect("spawn");
    if let Err(panic) = worker.join() {
        std::panic::resume_unwind(panic);
    }
}

fn in_private_netns() {
    if let Err(e) = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET) {
        skip(&format!("cannot create a network namespace: {e}"));
        return;
    }
    let input = open("gsoin", true);
    let output = open("gsoout", false);
    sh("ip link set gsoin up
        ip link set gsoout up
        ip addr add 10.201.0.1/24 dev gsoin
        ip addr add 10.202.0.1/24 dev gsoout
        ip -6 addr add fd01::1/64 dev gsoin nodad
        ip -6 addr add fd02::1/64 dev gsoout nodad
        ip route add 10.0.0.1/32 dev gsoin
        ip route add 10.0.0.2/32 dev gsoout
        ip -6 route add fd00::1/128 dev gsoin
        ip -6 route add fd00::2/128 dev gsoout
        echo 0 > /proc/sys/net/ipv4/conf/all/rp_filter
        echo 0 > /proc/sys/net/ipv4/conf/gsoin/rp_filter
        echo 1 > /proc/sys/net/ipv4/ip_forward
        echo 1 > /proc/sys/net/ipv6/conf/all/forwarding");

    let tcp4 = {
        let mut s = Spec::new(false, false, 5000, 1000);
        s.flags = 0x80 | 0x40 | 0x10 | 0x08 | 0x01; // CWR ECE ACK PSH FIN
        s.ecn = true;
        s.id = 0xfffe;
        s.seq = u32::MAX - 2000;
        s
    };
    let tcp4_plain = {
        let mut s = Spec::new(false, false, 2900, 1400);
        s.needs_csum = false;
        s.ip_opts = 1;
        s.flags = 0x18;
        s
    };
    let tcp6 = {
        let mut s = Spec::new(true, false, 4000, 1200);
        s.ip_opts = 1;
        s.flags = 0x19;
        s
    };
    let tcp4_single = {
        let mut s = Spec::new(false, false, 700, 1000);
        s.flags = 0x80 | 0x18;
        s
    };
    let cases = [
        ("TCPv4, ECN, CWR/PSH/FIN, odd last", tcp4),
        ("TCPv4 without NEEDS_CSUM, IP options", tcp4_plain),
        ("TCPv6 with destination options", tcp6),
        ("TCPv4 payload within one gso_size", tcp4_single),
        ("UDPv4 (USO)", Spec::new(false, true, 3500, 1200)),
        ("UDPv6 (USO)", Spec::new(true, true, 3001, 1000)),
    ];
    let mut segmenter = Segmenter::new();
    for (what, spec) in cases {
        let (hdr, packet) = spec.build();
        let mut framed = hdr.to_bytes().to_vec();
        framed.extend_from_slice(&packet);
        let written = input.write(&framed).expect("write super-packet");
        assert_eq!(written, framed.len(), "{what}");

        // What we expect: the forwarded super-packet (TTL/hop limit one lower), segmented.
        let mut forwarded = packet.clone();
        if spec.v6 {
            forwarded[7] -= 1;
        } else {
            forwarded[8] -= 1;
        }
        let mut want = Vec::new();
        segmenter
            .segment(&hdr, &forwarded, |s| want.push(s.to_vec()))
            .expect("segment");

        let got = read_forwarded(&output, want.len());
        assert_eq!(got.len(), want.len(), "{what}: segments from the kernel");
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            verify_wire_packet(g);
            assert_eq!(g, w, "{what}: segment {i} differs from the kernel's");
        }
    }

    // A plain packet with a partial checksum, completed by the kernel (skb_checksum_help).
    let (mut hdr, packet) = Spec::new(false, true, 333, 1000).build();
    hdr.gso_type = VnetHdr::GSO_NONE;
    hdr.gso_size = 0;
    let mut framed = hdr.to_bytes().to_vec();
    framed.extend_from_slice(&packet);
    input.write(&framed).expect("write");
    let mut forwarded = packet;
    forwarded[8] -= 1;
    forwarded[10..12].copy_from_slice(&[0, 0]);
    fix_ipv4_header_checksum(&mut forwarded).unwrap();
    let mut want = Vec::new();
    segmenter
        .segment(&hdr, &forwarded, |s| want.push(s.to_vec()))
        .unwrap();
    assert_eq!(
        read_forwarded(&output, 1),
        want,
        "partial checksum completed"
    );
}
