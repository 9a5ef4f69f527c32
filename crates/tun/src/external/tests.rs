//! The stage against a fake program on the other end of a socket pair.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use super::*;
use crate::gso::VnetHdr;
use crate::pipeline::{Out, Pipeline};

/// The program's end of the socket.
struct Fake {
    s: UnixStream,
    frames: proto::Reader,
}

/// A packet as the program sees it.
#[derive(Debug, PartialEq, Eq)]
struct Got {
    id: u64,
    dir: u8,
    ts: u64,
    data: Vec<u8>,
}

impl Fake {
    /// A socket pair with the program's hello already written (batch, window).
    fn new(batch: u32, window: u32) -> (Fake, UnixStream) {
        let (relay, mut prog) = UnixStream::pair().unwrap();
        let mut body = proto::MAGIC.to_vec();
        body.extend(proto::VERSION.to_be_bytes());
        body.extend(batch.to_be_bytes());
        body.extend(window.to_be_bytes());
        body.extend(b"fake");
        prog.write_all(&proto::message(proto::HELLO, &body))
            .unwrap();
        prog.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        (
            Fake {
                s: prog,
                frames: proto::Reader::default(),
            },
            relay,
        )
    }

    /// The next message (bounded wait); `None` on EOF.
    fn message(&mut self) -> Option<(u8, Vec<u8>)> {
        loop {
            if let Some(m) = self.frames.next_message().unwrap() {
                return Some(m);
            }
            let mut buf = [0u8; 65536];
            match self.s.read(&mut buf) {
                Ok(0) => return None,
                Ok(n) => self.frames.push(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
                Err(e) => panic!("fake program: {e}"),
            }
        }
    }

    /// The relay's hello text.
    fn hello(&mut self) -> String {
        let (kind, body) = self.message().expect("hello");
        assert_eq!(kind, proto::HELLO);
        assert_eq!(&body[..6], b"HKPR\0\x01");
        String::from_utf8(body[6..].to_vec()).unwrap()
    }

    /// The packets of one `PACKETS` message.
    fn packets(&mut self) -> Vec<Got> {
        let (kind, body) = self.message().expect("packets");
        assert_eq!(kind, proto::PACKETS);
        let count = u32::from_be_bytes(body[..4].try_into().unwrap());
        let mut at = 4;
        let mut out = Vec::new();
        for _ in 0..count {
            let h = &body[at..at + proto::PACKET_HEADER];
            let len = u32::from_be_bytes(h[20..24].try_into().unwrap()) as usize;
            out.push(Got {
                id: u64::from_be_bytes(h[..8].try_into().unwrap()),
                dir: h[8],
                ts: u64::from_be_bytes(h[12..20].try_into().unwrap()),
                data: body[at + proto::PACKET_HEADER..at + proto::PACKET_HEADER + len].to_vec(),
            });
            at += proto::PACKET_HEADER + len;
        }
        assert_eq!(at, body.len());
        out
    }

    /// Sends verdicts: (id, action, direction, bytes).
    fn answer(&mut self, verdicts: &[(u64, u8, u8, &[u8])]) {
        let mut body = (verdicts.len() as u32).to_be_bytes().to_vec();
        for (id, action, dir, bytes) in verdicts {
            body.extend(id.to_be_bytes());
            body.extend([*action, *dir, 0, 0]);
            body.extend((bytes.len() as u32).to_be_bytes());
            body.extend(*bytes);
        }
        self.s
            .write_all(&proto::message(proto::VERDICTS, &body))
            .unwrap();
    }
}

fn opts(timeout_ms: u64, fail: FailMode) -> ExternalOptions {
    ExternalOptions {
        what: "exec 'fake'".into(),
        timeout: Duration::from_millis(timeout_ms),
        hello_timeout: Duration::from_secs(2),
        fail,
        devs: ["tun0".into(), "tun1".into()],
        filter: Some("icmp".into()),
    }
}

/// The stage in a pipeline, and a handle on its shared state.
fn pipeline(stage: ExternalStage) -> (Pipeline, Arc<Shared>) {
    let shared = stage.shared.clone();
    (Pipeline::builder().stage(stage).build(), shared)
}

fn send(p: &Pipeline, dir: Direction, data: &[u8]) {
    let mut out = Vec::new();
    let mut data = data.to_vec();
    let fate = p.process(dir, VnetHdr::NONE, &mut data, Instant::now(), &mut out);
    assert_eq!(
        fate,
        crate::pipeline::Fate::Taken,
        "held or dropped, never in place"
    );
    assert!(out.is_empty());
}

/// Waits (bounded) for the stage's wake-up in `dir`, then takes what it decided.
fn decided(p: &Pipeline, dir: Direction) -> Vec<Out> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let waker = p.wakers().next().unwrap().clone();
    let mut fds = [PollFd::new(waker.fd(dir), PollFlags::POLLIN)];
    assert_eq!(
        poll(&mut fds, PollTimeout::from(5000u16)).unwrap(),
        1,
        "no wake-up for {dir:?}"
    );
    let mut out = Vec::new();
    p.resume_ready(dir, Instant::now(), &mut out);
    out
}

fn extra(p: &Pipeline, dir: usize, name: &str) -> u64 {
    p.snapshot()[0].directions[dir].extra[name]
}

#[test]
fn packets_go_in_batches_and_verdicts_of_every_kind_come_back() {
    // A deadline far beyond the test's run, on a loaded machine too: packet 5 stays undecided.
    let (mut fake, sock) = Fake::new(4, 8);
    let stage = ExternalStage::start(sock, None, opts(20_000, FailMode::Closed)).unwrap();
    assert_eq!(
        stage.describe(),
        "exec 'fake' (fake), protocol 1, batch 4, window 8, timeout 20000 ms, fail closed"
    );
    let hello = fake.hello();
    for line in [
        "dev0=tun0\n",
        "dev1=tun1\n",
        "timeout_ms=20000\n",
        "fail=closed\n",
        "filter=icmp\n",
    ] {
        assert!(hello.contains(line), "{hello:?} lacks {line:?}");
    }
    let (p, _) = pipeline(stage);
    let before = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    for i in 1..=5u8 {
        send(&p, Direction::Forward, &[0x45, i]);
    }
    send(&p, Direction::Backward, &[0x45, 6]);
    let mut got = Vec::new();
    while got.len() < 6 {
        let batch = fake.packets();
        assert!((1..=4).contains(&batch.len()), "at most the batch");
        got.extend(batch);
    }
    let ids: Vec<(u64, u8, Vec<u8>)> = got.iter().map(|g| (g.id, g.dir, g.data.clone())).collect();
    assert_eq!(
        ids,
        (1..=6u8)
            .map(|i| (u64::from(i), u8::from(i == 6), vec![0x45, i]))
            .collect::<Vec<_>>()
    );
    assert!(
        got.iter()
            .all(|g| g.ts >= before - 1_000_000_000 && g.ts < before + 60_000_000_000)
    );
    fake.answer(&[
        (2, 1, 0, b""),
        (1, 0, 0, b""),
        (3, 3, 1, b"answer"),
        (3, 2, 0, b"\x45new"),
        (6, 0, 0, b""),
        (4, 0, 0, b""),
    ]);
    let fwd: Vec<(Direction, Vec<u8>)> = decided(&p, Direction::Forward)
        .into_iter()
        .map(|o| (o.direction, o.data))
        .collect();
    assert_eq!(
        fwd,
        vec![
            (Direction::Forward, vec![0x45, 1]),
            (Direction::Backward, b"answer".to_vec()),
            (Direction::Forward, b"\x45new".to_vec()),
            (Direction::Forward, vec![0x45, 4]),
        ],
        "in the order decided; 2 dropped; 5 undecided"
    );
    let back = decided(&p, Direction::Backward);
    assert_eq!(back.len(), 1);
    assert_eq!(back[0].data, vec![0x45, 6]);
    let s = p.snapshot();
    let d = &s[0].directions;
    assert_eq!(
        (d[0].packets, d[0].dropped, d[0].held, d[1].injected),
        (5, 1, 1, 1)
    );
    assert_eq!(extra(&p, 0, "to_processor"), 5);
    assert_eq!(extra(&p, 0, "answered"), 4);
    assert_eq!(extra(&p, 0, "replaced"), 1);
    assert_eq!(extra(&p, 1, "answered"), 1);
    // Stopping closes the socket: the program reads EOF.
    p.finish();
    assert_eq!(fake.message(), None);
    assert_eq!(p.snapshot()[0].directions[0].dropped, 2, "5 was still held");
}

#[test]
fn one_packet_at_a_time_waits_for_each_verdict() {
    let (mut fake, sock) = Fake::new(1, 1);
    let stage = ExternalStage::start(sock, None, opts(2000, FailMode::Closed)).unwrap();
    assert!(stage.describe().contains("one packet at a time"));
    fake.hello();
    let (p, _) = pipeline(stage);
    for i in 1..=3u8 {
        send(&p, Direction::Forward, &[0x45, i]);
    }
    for i in 1..=3u64 {
        let got = fake.packets();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].id, i);
        // Nothing more comes before this one is answered.
        fake.s
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let mut b = [0u8; 1];
        let e = fake.s.read(&mut b).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock, "lockstep");
        fake.s
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        fake.answer(&[(i, 0, 0, b"")]);
        assert_eq!(decided(&p, Direction::Forward).len(), 1);
    }
}

#[test]
fn garbage_is_reported_and_fail_closed_drops_every_packet_from_then_on() {
    let (mut fake, sock) = Fake::new(8, 8);
    let stage = ExternalStage::start(sock, None, opts(2000, FailMode::Closed)).unwrap();
    fake.hello();
    let (p, shared) = pipeline(stage);
    send(&p, Direction::Forward, &[0x45, 1]);
    send(&p, Direction::Forward, &[0x45, 2]);
    let mut n = 0;
    while n < 2 {
        n += fake.packets().len();
    }
    fake.answer(&[(1, 0, 0, b""), (99, 0, 0, b"")]);
    // Packet 1 was answered before the garbage: it goes on; packet 2 is dropped.
    let out = decided(&p, Direction::Forward);
    let mut out: Vec<Vec<u8>> = out.into_iter().map(|o| o.data).collect();
    if out.is_empty() {
        out = decided(&p, Direction::Forward)
            .into_iter()
            .map(|o| o.data)
            .collect();
    }
    assert_eq!(out, vec![vec![0x45, 1]]);
    let failure = shared.lock().failure.clone().unwrap();
    assert!(
        failure.contains("answered garbage: a verdict for packet 99, which awaits none"),
        "{failure}"
    );
    send(&p, Direction::Backward, &[0x45, 3]);
    let d = &p.snapshot()[0].directions;
    assert_eq!((d[0].dropped, d[1].dropped), (1, 1));
    assert_eq!(
        (extra(&p, 0, "fail_closed"), extra(&p, 1, "fail_closed")),
        (1, 1)
    );
    assert_eq!(fake.message(), None, "the relay hung up");
}

#[test]
fn a_silent_program_fails_at_the_deadline_and_fail_open_forwards() {
    let (mut fake, sock) = Fake::new(8, 8);
    let stage = ExternalStage::start(sock, None, opts(100, FailMode::Open)).unwrap();
    fake.hello();
    let (p, shared) = pipeline(stage);
    let start = Instant::now();
    send(&p, Direction::Forward, &[0x45, 1]);
    assert_eq!(fake.packets().len(), 1);
    let out = decided(&p, Direction::Forward);
    let waited = start.elapsed();
    assert_eq!(out.len(), 1, "forwarded unprocessed");
    assert!(
        waited >= Duration::from_millis(100) && waited < Duration::from_millis(1500),
        "{waited:?}"
    );
    let failure = shared.lock().failure.clone().unwrap();
    assert_eq!(failure, "gave no verdict for packet 1 within 100 ms");
    // From now on: forwarded in place, at once.
    let mut data = vec![0x45, 2];
    let fate = p.process(
        Direction::Forward,
        VnetHdr::NONE,
        &mut data,
        Instant::now(),
        &mut Vec::new(),
    );
    assert_eq!(fate, crate::pipeline::Fate::Write);
    assert_eq!(extra(&p, 0, "fail_open"), 2);
}

#[test]
fn a_program_that_hangs_up_fails() {
    let (mut fake, sock) = Fake::new(8, 8);
    let stage = ExternalStage::start(sock, None, opts(5000, FailMode::Closed)).unwrap();
    fake.hello();
    let (p, shared) = pipeline(stage);
    send(&p, Direction::Forward, &[0x45, 1]);
    drop(fake);
    assert!(decided(&p, Direction::Forward).is_empty(), "dropped");
    let failure = shared.lock().failure.clone().unwrap();
    assert!(failure.contains("closed the connection"), "{failure}");
    assert_eq!(extra(&p, 0, "fail_closed"), 1);
}

#[test]
fn a_full_queue_drops_and_counts() {
    let (mut fake, sock) = Fake::new(1, 1);
    let stage = ExternalStage::start(sock, None, opts(10_000, FailMode::Closed)).unwrap();
    fake.hello();
    let (p, _) = pipeline(stage);
    send(&p, Direction::Forward, &[0x45, 0]);
    assert_eq!(fake.packets().len(), 1, "in flight; the rest queue");
    for _ in 0..MAX_QUEUED + 10 {
        send(&p, Direction::Forward, &[0x45, 1]);
    }
    assert_eq!(extra(&p, 0, "overflow"), 10);
    assert_eq!(p.snapshot()[0].directions[0].dropped, 10);
}

#[test]
fn bad_hellos_are_refused_in_words() {
    let hello_with = |version: u16, batch: u32| {
        let (relay, mut prog) = UnixStream::pair().unwrap();
        let mut body = proto::MAGIC.to_vec();
        body.extend(version.to_be_bytes());
        body.extend(batch.to_be_bytes());
        body.extend(8u32.to_be_bytes());
        prog.write_all(&proto::message(proto::HELLO, &body))
            .unwrap();
        (relay, prog)
    };
    let mut o = opts(100, FailMode::Closed);
    o.hello_timeout = Duration::from_millis(200);
    let cases: Vec<(UnixStream, Option<UnixStream>, &str)> = vec![
        {
            let (r, p) = hello_with(2, 1);
            (r, Some(p), "version 2; this relay speaks version 1")
        },
        {
            let (r, p) = hello_with(1, 0);
            (r, Some(p), "batch 0 is out of range")
        },
        {
            let (r, p) = UnixStream::pair().unwrap();
            (r, Some(p), "no hello within 0.2 s")
        },
        {
            let (r, p) = UnixStream::pair().unwrap();
            drop(p);
            (r, None, "closed the connection before its hello")
        },
        {
            let (r, mut p) = UnixStream::pair().unwrap();
            p.write_all(b"\xff\xff\xff\xffgarbage").unwrap();
            (r, Some(p), "a message length of 4294967295")
        },
    ];
    for (relay, _keep, needle) in cases {
        let start = Instant::now();
        let err = ExternalStage::start(relay, None, o.clone()).err().unwrap();
        assert!(start.elapsed() < Duration::from_secs(2));
        let text = err.to_string();
        assert!(text.starts_with("processor exec 'fake': "), "{text}");
        assert!(text.contains(needle), "{text:?} lacks {needle:?}");
    }
}

#[test]
fn stopping_is_bounded_even_when_the_program_ignores_the_closed_socket() {
    let (mut fake, sock) = Fake::new(1, 1);
    let child = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    let pid = child.id();
    let stage = ExternalStage::start(sock, Some(child), opts(1000, FailMode::Closed)).unwrap();
    fake.hello();
    let (p, _) = pipeline(stage);
    let start = Instant::now();
    p.finish();
    let took = start.elapsed();
    assert!(took < Duration::from_secs(3), "{took:?}");
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "killed and reaped"
    );
}
