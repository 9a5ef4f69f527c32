//! The capture writer (`hostkit_tun::pcapng`) against the real readers: every file it writes
//! is read back with `tcpdump -r` and `tshark -r`, which must find every packet on its
//! interface, in its direction, at its nanosecond timestamp. Also: rotation, the refusal of a
//! FIFO, a symbolic link or a device at the path, and a disk that fills (a small tmpfs in a
//! private mount namespace).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hostkit_tun::pcapng::{
    Capture, CaptureError, CaptureOptions, Direction, LinkType, PcapngWriter, Rotation,
};

use crate::util::{NetNs, TestDir, have_tool, run, run_ok, texts};

// ---- packets -------------------------------------------------------------------------------

/// The Internet checksum of `data`, starting from `sum`.
fn checksum(data: &[u8], mut sum: u32) -> u16 {
    for chunk in data.chunks(2) {
        let word = u16::from_be_bytes([chunk[0], *chunk.get(1).unwrap_or(&0)]);
        sum += u32::from(word);
    }
    while sum > 0xFFFF {
        sum = (sum & 0xFFFF) + (sum >> 16);
    }
    !(sum as u16)
}

/// The pseudo-header sum of an L4 segment.
fn pseudo_sum(src: &[u8], dst: &[u8], proto: u8, len: usize) -> u32 {
    let mut p = Vec::new();
    p.extend_from_slice(src);
    p.extend_from_slice(dst);
    if src.len() == 4 {
        p.extend_from_slice(&[0, proto]);
        p.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        p.extend_from_slice(&(len as u32).to_be_bytes());
        p.extend_from_slice(&[0, 0, 0, proto]);
    }
    p.chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum()
}

const V4: ([u8; 4], [u8; 4]) = ([10, 0, 0, 1], [10, 0, 0, 2]);
const V6: ([u8; 16], [u8; 16]) = (
    [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
    [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2],
);

/// An IP packet (v4 if `v6` is false) carrying `seg` of protocol `proto`, whose checksum at
/// `csum_at` is filled in (with the pseudo-header unless it is ICMPv4).
fn ip(v6: bool, proto: u8, mut seg: Vec<u8>, csum_at: usize) -> Vec<u8> {
    let (src, dst): (&[u8], &[u8]) = if v6 { (&V6.0, &V6.1) } else { (&V4.0, &V4.1) };
    let init = if proto == 1 {
        0
    } else {
        pseudo_sum(src, dst, proto, seg.len())
    };
    let c = checksum(&seg, init);
    seg[csum_at..csum_at + 2].copy_from_slice(&c.to_be_bytes());
    let mut p = Vec::new();
    if v6 {
        p.extend_from_slice(&[0x60, 0, 0, 0]);
        p.extend_from_slice(&(seg.len() as u16).to_be_bytes());
        p.extend_from_slice(&[proto, 64]);
        p.extend_from_slice(src);
        p.extend_from_slice(dst);
    } else {
        p.extend_from_slice(&[0x45, 0]);
        p.extend_from_slice(&((20 + seg.len()) as u16).to_be_bytes());
        p.extend_from_slice(&[0x12, 0x34, 0x40, 0, 64, proto, 0, 0]);
        p.extend_from_slice(src);
        p.extend_from_slice(dst);
        let c = checksum(&p, 0);
        p[10..12].copy_from_slice(&c.to_be_bytes());
    }
    p.extend_from_slice(&seg);
    p
}

fn tcp_syn(v6: bool) -> Vec<u8> {
    let mut s = vec![0u8; 20];
    s[0..2].copy_from_slice(&40000u16.to_be_bytes());
    s[2..4].copy_from_slice(&80u16.to_be_bytes());
    s[4..8].copy_from_slice(&1000u32.to_be_bytes());
    s[12] = 5 << 4;
    s[13] = 0x02;
    s[14..16].copy_from_slice(&64240u16.to_be_bytes());
    ip(v6, 6, s, 16)
}

fn udp(v6: bool) -> Vec<u8> {
    let payload = b"hostkit capture";
    let mut s = vec![0u8; 8];
    s[0..2].copy_from_slice(&40001u16.to_be_bytes());
    s[2..4].copy_from_slice(&7777u16.to_be_bytes());
    s[4..6].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    s.extend_from_slice(payload);
    ip(v6, 17, s, 6)
}

fn echo(v6: bool) -> Vec<u8> {
    let mut s = vec![if v6 { 128 } else { 8 }, 0, 0, 0, 0x12, 0x34, 0, 1];
    s.extend_from_slice(b"ping ping ping");
    ip(v6, if v6 { 58 } else { 1 }, s, 2)
}

/// One packet of the sample: interface id, direction, timestamp (ns), bytes, and the
/// protocol a reader must find (`tshark`'s `frame.protocols` element).
struct Sample {
    iface: u32,
    dir: Direction,
    ts: u64,
    pkt: Vec<u8>,
    proto: &'static str,
}

const T0: u64 = 1_700_000_000_123_456_789;

/// IPv4 and IPv6 TCP, UDP and ICMP echo on interfaces 0 and 1, both directions, with a
/// different count per (interface, direction): tun0 out 6, tun0 in 3, tun1 out 5, tun1 in 2.
fn sample(interfaces: u32) -> Vec<Sample> {
    type Make = fn(bool) -> Vec<u8>;
    let kinds: [(Make, bool, &str); 6] = [
        (tcp_syn, false, "tcp"),
        (udp, false, "udp"),
        (echo, false, "icmp"),
        (tcp_syn, true, "tcp"),
        (udp, true, "udp"),
        (echo, true, "icmpv6"),
    ];
    let plan = [
        (0, Direction::Outbound, 6),
        (0, Direction::Inbound, 3),
        (1, Direction::Outbound, 5),
        (1, Direction::Inbound, 2),
    ];
    let mut out = Vec::new();
    let mut n = 0u64;
    // Interleaved, as a relay's workers would record them.
    for (round, &(make, v6, proto)) in kinds.iter().enumerate() {
        for &(iface, dir, count) in &plan {
            if round < count && iface < interfaces {
                out.push(Sample {
                    iface,
                    dir,
                    // Every digit of the nanoseconds matters.
                    ts: T0 + n * 1_000_000_007,
                    pkt: make(v6),
                    proto,
                });
                n += 1;
            }
        }
    }
    out
}

fn epoch(ns: u64) -> String {
    format!("{}.{:09}", ns / 1_000_000_000, ns % 1_000_000_000)
}

fn write_sample(path: &Path, names: &[&str], link: LinkType, sample: &[Sample]) {
    let opts = CaptureOptions {
        link,
        ..CaptureOptions::default()
    };
    let cap = Capture::create(path, names, opts).unwrap();
    for s in sample {
        cap.write_at(
            s.iface,
            s.dir,
            UNIX_EPOCH + Duration::from_nanos(s.ts),
            &s.pkt,
        )
        .unwrap();
    }
    cap.flush().unwrap();
    let st = cap.stats();
    assert_eq!((st.packets, st.drops), (sample.len() as u64, 0));
    assert_eq!(st.bytes, std::fs::metadata(path).unwrap().len());
}

// ---- readers -------------------------------------------------------------------------------

/// `tshark -r FILE -T fields`: (interface name, direction bits, epoch, protocols) per packet.
fn tshark(path: &Path) -> Vec<(String, u32, String, String)> {
    let out = run_ok(Command::new("tshark").arg("-r").arg(path).args([
        "-T",
        "fields",
        "-E",
        "separator=/t",
        "-e",
        "frame.interface_name",
        "-e",
        "frame.packet_flags_direction",
        "-e",
        "frame.time_epoch",
        "-e",
        "frame.protocols",
    ]));
    out.lines()
        .map(|line| {
            let f: Vec<&str> = line.split('\t').collect();
            assert_eq!(f.len(), 4, "tshark line {line:?}");
            let dir = u32::from_str_radix(f[1].trim_start_matches("0x"), 16)
                .unwrap_or_else(|_| panic!("direction in {line:?}"));
            (f[0].to_string(), dir, f[2].to_string(), f[3].to_string())
        })
        .collect()
}

/// Checks tshark's view of a file against the sample: every packet, in order, on its
/// interface, in its direction, at its nanosecond time, with its protocol; and the counts
/// per interface and direction.
fn tshark_sees(path: &Path, names: &[&str], sample: &[Sample]) {
    let got = tshark(path);
    assert_eq!(got.len(), sample.len(), "tshark read {got:#?}");
    let mut counts = BTreeMap::new();
    for (g, s) in got.iter().zip(sample) {
        let dir = match s.dir {
            Direction::Inbound => 1,
            Direction::Outbound => 2,
        };
        assert_eq!(g.0, names[s.iface as usize], "{g:?}");
        assert_eq!(g.1, dir, "{g:?}");
        assert_eq!(g.2, epoch(s.ts), "{g:?}");
        assert!(g.3.split(':').any(|p| p == s.proto), "{g:?}: {}", s.proto);
        *counts.entry((g.0.clone(), g.1)).or_insert(0) += 1;
    }
    let want: BTreeMap<(String, u32), i32> = [
        (("tun0".to_string(), 2), 6),
        (("tun0".to_string(), 1), 3),
        (("tun1".to_string(), 2), 5),
        (("tun1".to_string(), 1), 2),
    ]
    .into_iter()
    .filter(|((name, _), _)| names.contains(&name.as_str()))
    .collect();
    assert_eq!(counts, want, "packets per interface and direction");
}

/// `tcpdump -n -tt --time-stamp-precision=nano -r FILE` (in `ns` if given): its lines, or its
/// stderr if it failed.
fn tcpdump(path: &Path, ns: Option<&NetNs>) -> Result<Vec<String>, String> {
    let argv = [
        "tcpdump",
        "-n",
        "-tt",
        "--time-stamp-precision=nano",
        "-r",
        path.to_str().unwrap(),
    ];
    let mut cmd = match ns {
        Some(ns) => ns.exec(argv),
        None => {
            let mut c = Command::new(argv[0]);
            c.args(&argv[1..]);
            c
        }
    };
    let out = run(&mut cmd);
    let (stdout, stderr) = texts(&out);
    if out.status.success() {
        Ok(stdout.lines().map(str::to_string).collect())
    } else {
        Err(stderr)
    }
}

/// What tcpdump prints for a sample packet after the timestamp (and the SLL2 interface and
/// direction): the start of the decoded line.
fn tcpdump_says(s: &Sample) -> &'static str {
    let v6 = s.pkt[0] >> 4 == 6;
    match (s.proto, v6) {
        ("tcp", false) => "IP 10.0.0.1.40000 > 10.0.0.2.80: Flags [S]",
        ("tcp", true) => "IP6 fd00::1.40000 > fd00::2.80: Flags [S]",
        ("udp", false) => "IP 10.0.0.1.40001 > 10.0.0.2.7777: UDP, length 15",
        ("udp", true) => "IP6 fd00::1.40001 > fd00::2.7777: UDP, length 15",
        ("icmp", _) => "IP 10.0.0.1 > 10.0.0.2: ICMP echo request",
        ("icmpv6", _) => "IP6 fd00::1 > fd00::2: ICMP6, echo request",
        _ => unreachable!(),
    }
}

/// libpcap (1.10.3 at least) refuses a second `LINKTYPE_RAW` interface in a pcapng file.
const LIBPCAP_RAW_IDB_BUG: &str =
    "an interface has a type 101 different from the type of the first interface";

// ---- tests ---------------------------------------------------------------------------------

#[test]
fn tshark_reads_every_packet_on_its_interface_in_its_direction_at_its_nanosecond() {
    if !have_tool("tshark", "--version") || !have_tool("tcpdump", "--version") {
        return;
    }
    let dir = TestDir::new();
    let path = dir.join("two.pcapng");
    let names = ["tun0", "tun1"];
    let sample = sample(2);
    assert_eq!(sample.len(), 16);
    write_sample(&path, &names, LinkType::Raw, &sample);
    tshark_sees(&path, &names, &sample);
    // tcpdump: every packet, or libpcap's known refusal of a second raw interface.
    match tcpdump(&path, None) {
        Ok(lines) => {
            assert_eq!(lines.len(), sample.len(), "{lines:#?}");
            for (line, s) in lines.iter().zip(&sample) {
                assert!(line.starts_with(&format!("{} {}", epoch(s.ts), tcpdump_says(s))));
            }
        }
        Err(stderr) => assert!(stderr.contains(LIBPCAP_RAW_IDB_BUG), "{stderr}"),
    }
}

#[test]
fn tcpdump_and_tshark_read_a_one_interface_raw_capture() {
    if !have_tool("tshark", "--version") || !have_tool("tcpdump", "--version") {
        return;
    }
    let dir = TestDir::new();
    let path = dir.join("one.pcapng");
    let sample = sample(1);
    assert_eq!(sample.len(), 9);
    write_sample(&path, &["tun0"], LinkType::Raw, &sample);
    tshark_sees(&path, &["tun0"], &sample);
    let lines = tcpdump(&path, None).unwrap();
    assert_eq!(lines.len(), sample.len(), "{lines:#?}");
    for (line, s) in lines.iter().zip(&sample) {
        let want = format!("{} {}", epoch(s.ts), tcpdump_says(s));
        assert!(line.starts_with(&want), "{line}\nwant {want}");
    }
}

/// Runs `f` on a thread that has joined `ns`'s network namespace.
fn in_netns<T: Send>(ns: &NetNs, f: impl FnOnce() -> T + Send) -> T {
    let netns = std::fs::File::open(format!("/run/netns/{}", ns.name())).unwrap();
    std::thread::scope(|s| {
        s.spawn(|| {
            nix::sched::setns(&netns, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            f()
        })
        .join()
        .unwrap()
    })
}

#[test]
fn tcpdump_and_tshark_read_a_two_interface_sll2_capture_per_interface_and_direction() {
    require_root!();
    if !have_tool("tshark", "--version") || !have_tool("tcpdump", "--version") {
        return;
    }
    // Real devices, so that the SLL2 interface index names them for tcpdump.
    let ns = NetNs::new();
    for dev in ["tun0", "tun1"] {
        ns.ip(&["tuntap", "add", "dev", dev, "mode", "tun"]);
    }
    let dir = TestDir::new();
    let path = dir.join("sll2.pcapng");
    let names = ["tun0", "tun1"];
    let sample = sample(2);
    in_netns(&ns, || {
        write_sample(&path, &names, LinkType::LinuxSll2, &sample)
    });
    tshark_sees(&path, &names, &sample);

    let lines = tcpdump(&path, Some(&ns)).unwrap();
    assert_eq!(lines.len(), sample.len(), "{lines:#?}");
    let mut counts = BTreeMap::new();
    for (line, s) in lines.iter().zip(&sample) {
        // `1700000000.123456789 tun0  Out IP 10.0.0.1.40000 > …`
        let f: Vec<&str> = line.split_whitespace().collect();
        let name = names[s.iface as usize];
        let dir = if s.dir == Direction::Outbound {
            "Out"
        } else {
            "In"
        };
        assert_eq!(&f[..3], [epoch(s.ts).as_str(), name, dir], "{line}");
        let rest = f[3..].join(" ");
        assert!(rest.starts_with(tcpdump_says(s)), "{line}");
        *counts
            .entry((f[1].to_string(), f[2].to_string()))
            .or_insert(0) += 1;
    }
    let count = |i: &str, d: &str| counts.get(&(i.to_string(), d.to_string())).copied();
    assert_eq!(
        [
            count("tun0", "Out"),
            count("tun0", "In"),
            count("tun1", "Out"),
            count("tun1", "In")
        ],
        [Some(6), Some(3), Some(5), Some(2)]
    );
}

#[test]
fn rotation_keeps_at_most_n_files_each_readable() {
    if !have_tool("tshark", "--version") || !have_tool("tcpdump", "--version") {
        return;
    }
    let dir = TestDir::new();
    let path = dir.join("ring.pcapng");
    let max_bytes = 4096;
    let opts = CaptureOptions {
        rotation: Some(Rotation {
            max_bytes,
            files: 3,
        }),
        ..CaptureOptions::default()
    };
    let cap = Capture::create(&path, &["tun0"], opts).unwrap();
    let pkt = udp(false);
    let total = 200u64;
    for n in 0..total {
        let dir = if n % 2 == 0 {
            Direction::Outbound
        } else {
            Direction::Inbound
        };
        cap.write_at(0, dir, UNIX_EPOCH + Duration::from_nanos(T0 + n), &pkt)
            .unwrap();
    }
    cap.flush().unwrap();
    let st = cap.stats();
    assert_eq!(st.packets, total);
    assert!(st.files > 3, "{st:?}");

    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["ring.pcapng", "ring.pcapng.1", "ring.pcapng.2"]);
    // Oldest first, their packets are the last ones written, in order.
    let mut times = Vec::new();
    for name in ["ring.pcapng.2", "ring.pcapng.1", "ring.pcapng"] {
        let file = dir.join(name);
        assert!(std::fs::metadata(&file).unwrap().len() <= max_bytes);
        let rows = tshark(&file);
        assert!(!rows.is_empty(), "{name}");
        assert_eq!(
            tcpdump(&file, None).unwrap().len(),
            rows.len(),
            "{name}: tcpdump and tshark agree"
        );
        for (i, r) in rows.iter().enumerate() {
            assert_eq!(r.0, "tun0");
            let ns: u64 = r.2.replace('.', "").parse().unwrap();
            // Directions alternate with the packet number.
            assert_eq!(
                r.1,
                if (ns - T0).is_multiple_of(2) { 2 } else { 1 },
                "{name} {i}"
            );
            times.push(ns);
        }
    }
    let want: Vec<u64> = (T0 + total - times.len() as u64..T0 + total).collect();
    assert_eq!(times, want, "the newest packets, in order, none twice");
}

/// Runs `create` on another thread: a capture path must never block (a FIFO opened for
/// writing would, until a reader comes).
fn create_within_seconds(path: &Path) -> Result<Capture, CaptureError> {
    let (tx, rx) = mpsc::channel();
    let path = path.to_path_buf();
    std::thread::spawn(move || {
        let _ = tx.send(Capture::create(&path, &["tun0"], CaptureOptions::default()));
    });
    rx.recv_timeout(Duration::from_secs(10))
        .expect("creating the capture blocked")
}

#[test]
fn a_fifo_a_symlink_or_a_device_at_the_path_is_refused_and_left_alone() {
    let dir = TestDir::new();
    let fifo = dir.join("fifo.pcapng");
    run_ok(Command::new("mkfifo").arg(&fifo));
    let err = create_within_seconds(&fifo).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{}: not a regular file (a FIFO); refusing to write a capture to it",
            fifo.display()
        )
    );
    use std::os::unix::fs::FileTypeExt;
    assert!(
        std::fs::symlink_metadata(&fifo)
            .unwrap()
            .file_type()
            .is_fifo()
    );

    // A link to a file: neither followed nor replaced; the file keeps its contents.
    let victim = dir.write("victim", "precious\n");
    let link = dir.join("link.pcapng");
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    let err = create_within_seconds(&link).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("{}: a symbolic link; refusing to follow it", link.display())
    );
    assert_eq!(dir.read("victim"), "precious\n");
    assert!(std::fs::symlink_metadata(&link).unwrap().is_symlink());

    // A dangling link: its target is not created.
    let dangling = dir.join("dangling.pcapng");
    std::os::unix::fs::symlink(dir.join("created-through-link"), &dangling).unwrap();
    assert!(matches!(
        create_within_seconds(&dangling),
        Err(CaptureError::SymbolicLink { .. })
    ));
    assert!(!dir.join("created-through-link").exists());

    // A device.
    let err = create_within_seconds(Path::new("/dev/full")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "/dev/full: not a regular file (a character device); refusing to write a capture to it"
    );

    // A regular file is replaced by a new one, mode 0640.
    let old = dir.write("old.pcapng", "old contents");
    let cap = create_within_seconds(&old).unwrap();
    drop(cap);
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(&old).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777 & !0o640, 0);
    assert!(!std::fs::read(&old).unwrap().starts_with(b"old"));
}

/// Runs `f` on a thread with a private mount namespace (`unshare(CLONE_NEWNS)` for that
/// thread alone; the commands it starts share it): what it mounts vanishes with it.
fn in_private_mount_ns<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).expect("unshare");
            run_ok(Command::new("mount").args(["--make-rprivate", "/"]));
            f()
        })
        .join()
        .unwrap()
    })
}

#[test]
fn a_full_disk_is_reported_once_and_later_packets_are_counted_as_drops() {
    require_root!();
    if !have_tool("tshark", "--version") || !have_tool("tcpdump", "--version") {
        return;
    }
    let dir = TestDir::new();
    let mnt = dir.join("small");
    std::fs::create_dir(&mnt).unwrap();
    in_private_mount_ns(|| {
        run_ok(
            Command::new("mount")
                .args([
                    "-t",
                    "tmpfs",
                    "-o",
                    "size=64k,mode=0700,nosuid,nodev",
                    "tmpfs",
                ])
                .arg(&mnt),
        );
        let path = mnt.join("cap.pcapng");
        let opts = CaptureOptions {
            snaplen: 1500,
            buffer_size: 4096,
            ..CaptureOptions::default()
        };
        let cap = Capture::create(&path, &["tun0"], opts).unwrap();
        let pkt = tcp_syn(false);
        let mut errors = Vec::new();
        let offered = 5000u64;
        for n in 0..offered {
            let ts = SystemTime::now();
            if let Err(e) = cap.write_at(0, Direction::Outbound, ts, &pkt) {
                errors.push((n, e.to_string()));
            }
        }
        assert!(cap.flush().is_ok(), "the error was already returned");
        assert_eq!(
            errors.len(),
            1,
            "one error, then silence: {:?}",
            errors.get(..3)
        );
        assert_eq!(
            errors[0].1,
            format!(
                "{}: cannot write: No space left on device (os error 28)",
                path.display()
            )
        );
        let st = cap.stats();
        assert!(st.failed);
        assert!(st.packets > 100, "{st:?}");
        assert_eq!(st.packets + st.drops, offered, "{st:?}");
        assert!(st.drops > offered - errors[0].0 - 1, "{st:?}");
        // The file holds exactly the packets counted, complete (no torn block at the end).
        assert_eq!(std::fs::metadata(&path).unwrap().len(), st.bytes);
        assert_eq!(tshark(&path).len() as u64, st.packets);
        assert_eq!(tcpdump(&path, None).unwrap().len() as u64, st.packets);
    });
    assert_eq!(
        std::fs::read_dir(&mnt).unwrap().count(),
        0,
        "the tmpfs went away"
    );
}

#[test]
fn a_writer_dropped_unflushed_flushes() {
    if !have_tool("tshark", "--version") {
        return;
    }
    let dir = TestDir::new();
    let path = dir.join("drop.pcapng");
    let mut w = PcapngWriter::create(&path, &["tun0"], CaptureOptions::default()).unwrap();
    for _ in 0..10 {
        w.write(0, Direction::Inbound, SystemTime::now(), &echo(false))
            .unwrap();
    }
    drop(w);
    assert_eq!(tshark(&path).len(), 10);
}
