//! The per-packet logic, apart from any device I/O: log, write, count ([`Forwarder`]), and the
//! drain loop ([`drain`]) that both engines run on a readable device. It works on any
//! [`PacketIo`], so it is unit-tested with an in-memory fake.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::endpoint::PacketIo;
use super::stats::DirCounters;
use crate::gso::VnetHdr;
use crate::packet::{self, LinkLayer};
use crate::pipeline::{Direction, Fate, Out, Pipeline};

/// Packets handled per wake-up before the loop polls again (keeps the stop check responsive).
const BATCH: usize = 256;

/// A wake-up that finds at least this many wire-sized packets queued means the device is busy
/// with a high packet rate: the fast engine then lets packets accumulate for
/// [`super::RelayOptions::coalesce`] before waiting again.
const BUSY_THRESHOLD: usize = 4;

/// Packets up to this size (on average, headers included) count as wire-sized for
/// [`Drained::is_busy_with_small_packets`]; GSO super-packets are far larger.
const SMALL_PACKET: usize = 1600;

/// How much of each packet to log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PacketLog {
    /// Nothing.
    #[default]
    Off,
    /// `read 84 from fd 3`, the classic form.
    Brief,
    /// The classic line plus direction, protocol, addresses, ports or ICMP type, length.
    Decoded,
}

/// Where packet-log lines go (stderr in the CLI, a buffer in the demo and tests).
pub type LogSink = Arc<dyn Fn(&str) + Send + Sync>;

/// The per-packet logic of one direction: log, write, count. Keeps going on a failed write.
pub(crate) struct Forwarder<'a> {
    /// Where packets come from.
    pub from: &'a dyn PacketIo,
    /// Where packets go.
    pub to: &'a dyn PacketIo,
    /// This direction's counters.
    pub counters: &'a DirCounters,
    /// Packet-log level.
    pub log: PacketLog,
    /// Packet-log destination.
    pub sink: &'a LogSink,
    /// The stages packets cross, if any, and this forwarder's direction through them.
    pub pipeline: Option<(&'a Pipeline, Direction)>,
    /// The relay's worker (queue pair) this forwarder belongs to: the packets the pipeline
    /// holds for it are written by it, through its queues, in order.
    pub worker: usize,
    /// `from`'s per-packet metadata length, read once.
    hdr: usize,
    /// What `from`'s packets start with, read once.
    link: LinkLayer,
}

impl<'a> Forwarder<'a> {
    /// A forwarder from `from` to `to`.
    pub fn new(
        from: &'a dyn PacketIo,
        to: &'a dyn PacketIo,
        counters: &'a DirCounters,
        log: PacketLog,
        sink: &'a LogSink,
    ) -> Forwarder<'a> {
        Forwarder {
            from,
            to,
            counters,
            log,
            sink,
            pipeline: None,
            worker: 0,
            hdr: from.header_len(),
            link: from.link(),
        }
    }

    /// The same forwarder, sending packets through `pipeline` as `direction`.
    pub fn with_pipeline(mut self, pipeline: &'a Pipeline, direction: Direction) -> Forwarder<'a> {
        self.pipeline = Some((pipeline, direction));
        self
    }

    /// The same forwarder, for the relay's worker `worker`.
    pub fn on_worker(mut self, worker: usize) -> Forwarder<'a> {
        self.worker = worker;
        self
    }

    /// Handles one packet read from `from` (with its metadata header, if the device has one);
    /// returns whether it was written. Logs and counts the packet's own length (the IP
    /// packet's, or the Ethernet frame's between TAP devices). With a
    /// pipeline, the packet crosses its stages first (`out` collects what they put out).
    pub fn forward(&self, pkt: &mut [u8], out: &mut Vec<Out>) -> bool {
        let ip = pkt.get(self.hdr..).unwrap_or(&[]);
        self.log_packet(ip);
        // An empty pipeline (every relay has one, for `tun set`) costs one atomic load here:
        // no clock read, no header parse.
        if let Some((pipeline, dir)) = self.pipeline
            && pipeline.has_stages()
        {
            let hdr = match self.hdr {
                0 => VnetHdr::NONE,
                _ => match VnetHdr::split(pkt) {
                    Ok((h, _)) => h,
                    Err(_) => VnetHdr::NONE,
                },
            };
            let start = self.hdr.min(pkt.len());
            let fate = pipeline.process_on(
                self.worker,
                dir,
                hdr,
                &mut pkt[start..],
                std::time::Instant::now(),
                out,
            );
            let written = fate == Fate::Write && self.send(self.to, pkt, true);
            self.flush(out);
            return written;
        }
        self.send(self.to, pkt, true)
    }

    /// Writes what a pipeline put out: into `to` for this direction, into `from` for the other.
    pub fn flush(&self, out: &mut Vec<Out>) {
        let Some((_, dir)) = self.pipeline else {
            out.clear();
            return;
        };
        for o in out.drain(..) {
            // This direction's counters count what reaches `to`; a packet a stage injects the
            // other way is counted by the stage.
            let (dev, count) = if o.direction == dir {
                (self.to, true)
            } else {
                (self.from, false)
            };
            if dev.header_len() == 0 {
                self.send(dev, &o.data, count);
            } else {
                let mut framed = Vec::with_capacity(VnetHdr::LEN + o.data.len());
                framed.extend_from_slice(&o.hdr.to_bytes());
                framed.extend_from_slice(&o.data);
                self.send(dev, &framed, count);
            }
        }
    }

    fn log_packet(&self, ip: &[u8]) {
        match self.log {
            PacketLog::Off => {}
            PacketLog::Brief => {
                (self.sink)(&format!("read {} from fd {}", ip.len(), self.source_fd()));
            }
            PacketLog::Decoded => {
                let what = match self.link {
                    LinkLayer::Ip => match packet::decode(ip) {
                        Ok(summary) => summary.to_string(),
                        Err(e) => format!("{e}, length {}", ip.len()),
                    },
                    LinkLayer::Ethernet => match packet::decode_frame(ip) {
                        Ok(summary) => summary.to_string(),
                        Err(e) => e.to_string(),
                    },
                };
                (self.sink)(&format!(
                    "read {} from fd {}: {} -> {} {what}",
                    ip.len(),
                    self.source_fd(),
                    self.from.label(),
                    self.to.label()
                ));
            }
        }
    }

    /// Writes one packet (with its metadata header, if the device has one); counts it in this
    /// direction's counters when `count`.
    fn send(&self, dev: &dyn PacketIo, pkt: &[u8], count: bool) -> bool {
        let ip_len = pkt.len().saturating_sub(dev.header_len());
        match dev.send(pkt) {
            Ok(_) => {
                if count {
                    self.counters.packets.fetch_add(1, Ordering::Relaxed);
                    self.counters
                        .bytes
                        .fetch_add(ip_len as u64, Ordering::Relaxed);
                }
                true
            }
            Err(e) => {
                let n = self.counters.write_errors.fetch_add(1, Ordering::Relaxed) + 1;
                if n <= 10 || n.is_multiple_of(1000) {
                    log::warn!(
                        "write of {} bytes to {} (fd {}) failed: {e}; packet dropped ({n} so far)",
                        pkt.len(),
                        dev.label(),
                        dev.fd().as_raw_fd()
                    );
                }
                false
            }
        }
    }

    fn source_fd(&self) -> RawFd {
        self.from.fd().as_raw_fd()
    }
}

/// Why a worker stopped on its own (a device it reads from failed or vanished).
#[derive(Debug, thiserror::Error)]
#[error("reading from {device} failed")]
pub struct RelayError {
    /// The device that failed.
    pub device: String,
    /// The error.
    #[source]
    pub source: io::Error,
}

/// What one [`drain`] moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Drained {
    /// Packets read.
    pub packets: usize,
    /// Bytes read (headers included).
    pub bytes: usize,
}

impl Drained {
    /// Many wire-sized packets queued at once: a high packet rate, where one wake-up per
    /// packet would cost more than the packets themselves (super-packets never count).
    pub fn is_busy_with_small_packets(&self) -> bool {
        self.packets >= BUSY_THRESHOLD && self.bytes <= self.packets * SMALL_PACKET
    }
}

/// Reads and forwards queued packets until none is left (or a batch is done).
/// Returns what was read; a read error other than "nothing queued" is fatal.
pub(crate) fn drain(
    fwd: &Forwarder<'_>,
    buf: &mut [u8],
    out: &mut Vec<Out>,
) -> Result<Drained, RelayError> {
    let mut got = Drained::default();
    while got.packets < BATCH {
        match fwd.from.recv(buf) {
            Ok(len) => {
                got.packets += 1;
                got.bytes += len;
                fwd.forward(&mut buf[..len], out);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                fwd.counters.read_errors.fetch_add(1, Ordering::Relaxed);
                return Err(RelayError {
                    device: fwd.from.label().to_string(),
                    source: e,
                });
            }
        }
    }
    Ok(got)
}

/// Sends on the packets the pipeline holds that are due now, and those their stages have
/// decided ([`Pipeline::resume_ready`]), for each forwarder's direction; returns how long until
/// the next one is due (`None`: nothing held, or no pipeline).
pub(crate) fn release_due(
    fwds: &[&Forwarder<'_>],
    out: &mut Vec<Out>,
) -> Option<std::time::Duration> {
    let now = std::time::Instant::now();
    let mut next: Option<std::time::Instant> = None;
    for fwd in fwds {
        let Some((pipeline, dir)) = fwd.pipeline else {
            continue;
        };
        pipeline.resume_ready_on(fwd.worker, dir, now, out);
        // Each worker writes what it held: through its own queues, in order.
        pipeline.release_on(fwd.worker, dir, now, out);
        fwd.flush(out);
        if let Some(due) = pipeline.next_due_on(fwd.worker, dir) {
            next = Some(next.map_or(due, |n| n.min(due)));
        }
    }
    next.map(|t| t.saturating_duration_since(std::time::Instant::now()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::{Direction, Pipeline};
    use crate::relay::MAX_PACKET;
    use crate::relay::testing::{MemIo, collecting_sink, echo_request};
    use std::os::fd::BorrowedFd;

    #[test]
    fn forwards_payload_unchanged_and_counts() {
        let (a, b) = (MemIo::new("tun0"), MemIo::new("tun1"));
        let pkts: Vec<Vec<u8>> = (0..5u8).map(|i| vec![0x45, i, 1, 2, 3]).collect();
        for p in &pkts {
            a.inbox.lock().unwrap().push_back(Ok(p.clone()));
        }
        let counters = DirCounters::default();
        let (sink, lines) = collecting_sink();
        let fwd = Forwarder::new(&a, &b, &counters, PacketLog::Off, &sink);
        let mut buf = vec![0u8; MAX_PACKET];
        assert_eq!(
            drain(&fwd, &mut buf, &mut Vec::new()).unwrap(),
            Drained {
                packets: 5,
                bytes: 25
            }
        );
        assert_eq!(*b.sent.lock().unwrap(), pkts);
        assert_eq!(counters.packets.load(Ordering::Relaxed), 5);
        assert_eq!(counters.bytes.load(Ordering::Relaxed), 25);
        assert!(lines.lock().unwrap().is_empty());
    }

    #[test]
    fn logs_in_the_classic_and_decoded_forms() {
        let (a, b) = (MemIo::new("tun0"), MemIo::new("tun1"));
        let fd = a.fd.as_raw_fd();
        let counters = DirCounters::default();
        let (sink, lines) = collecting_sink();
        for log in [PacketLog::Brief, PacketLog::Decoded] {
            let fwd = Forwarder::new(&a, &b, &counters, log, &sink);
            assert!(fwd.forward(&mut echo_request(), &mut Vec::new()));
        }
        let lines = lines.lock().unwrap();
        assert_eq!(lines[0], format!("read 84 from fd {fd}"));
        assert_eq!(
            lines[1],
            format!(
                "read 84 from fd {fd}: tun0 -> tun1 ICMP 10.0.0.1 > 10.0.0.2 echo-request, length 84"
            )
        );
    }

    #[test]
    fn a_failed_write_is_counted_and_the_relay_keeps_going() {
        let (a, b) = (MemIo::new("tun0"), MemIo::new("tun1"));
        *b.fail_sends.lock().unwrap() = vec![false, true, false];
        for i in 0..3u8 {
            a.inbox.lock().unwrap().push_back(Ok(vec![0x45, i]));
        }
        let counters = DirCounters::default();
        let (sink, _) = collecting_sink();
        let fwd = Forwarder::new(&a, &b, &counters, PacketLog::Off, &sink);
        let mut buf = vec![0u8; 64];
        assert_eq!(drain(&fwd, &mut buf, &mut Vec::new()).unwrap().packets, 3);
        assert_eq!(*b.sent.lock().unwrap(), vec![vec![0x45, 0], vec![0x45, 2]]);
        assert_eq!(counters.packets.load(Ordering::Relaxed), 2);
        assert_eq!(counters.write_errors.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_read_error_stops_the_direction_with_the_device_named() {
        let (a, b) = (MemIo::new("tun0"), MemIo::new("tun1"));
        a.inbox
            .lock()
            .unwrap()
            .push_back(Err(io::Error::from_raw_os_error(libc::EBADFD)));
        let counters = DirCounters::default();
        let (sink, _) = collecting_sink();
        let fwd = Forwarder::new(&a, &b, &counters, PacketLog::Off, &sink);
        let err = drain(&fwd, &mut [0u8; 64], &mut Vec::new()).unwrap_err();
        assert_eq!(err.device, "tun0");
        assert_eq!(counters.read_errors.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn vnet_headers_are_passed_through_but_not_logged_or_counted() {
        struct VnetIo(MemIo);
        impl PacketIo for VnetIo {
            fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
                self.0.recv(buf)
            }
            fn send(&self, pkt: &[u8]) -> io::Result<usize> {
                self.0.send(pkt)
            }
            fn label(&self) -> &str {
                self.0.label()
            }
            fn fd(&self) -> BorrowedFd<'_> {
                self.0.fd()
            }
            fn header_len(&self) -> usize {
                crate::device::VNET_HDR_LEN
            }
        }
        let (a, b) = (VnetIo(MemIo::new("tun0")), VnetIo(MemIo::new("tun1")));
        let mut pkt = vec![1u8; crate::device::VNET_HDR_LEN];
        pkt.extend(echo_request());
        let counters = DirCounters::default();
        let (sink, lines) = collecting_sink();
        let fwd = Forwarder::new(&a, &b, &counters, PacketLog::Decoded, &sink);
        assert!(fwd.forward(&mut pkt.clone(), &mut Vec::new()));
        assert_eq!(
            b.0.sent.lock().unwrap()[0],
            pkt,
            "header and packet unchanged"
        );
        assert_eq!(counters.bytes.load(Ordering::Relaxed), 84);
        assert!(
            lines.lock().unwrap()[0].ends_with("echo-request, length 84"),
            "{:?}",
            lines.lock().unwrap()
        );
    }

    #[test]
    fn frames_of_tap_devices_are_logged_with_their_mac_addresses() {
        struct TapIo(MemIo);
        impl PacketIo for TapIo {
            fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
                self.0.recv(buf)
            }
            fn send(&self, pkt: &[u8]) -> io::Result<usize> {
                self.0.send(pkt)
            }
            fn label(&self) -> &str {
                self.0.label()
            }
            fn fd(&self) -> BorrowedFd<'_> {
                self.0.fd()
            }
            fn link(&self) -> LinkLayer {
                LinkLayer::Ethernet
            }
        }
        let (a, b) = (TapIo(MemIo::new("tap0")), TapIo(MemIo::new("tap1")));
        let mut frame = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 8, 0];
        frame.extend(echo_request());
        let counters = DirCounters::default();
        let (sink, lines) = collecting_sink();
        let fwd = Forwarder::new(&a, &b, &counters, PacketLog::Decoded, &sink);
        assert!(fwd.forward(&mut frame.clone(), &mut Vec::new()));
        assert_eq!(b.0.sent.lock().unwrap()[0], frame, "the frame unchanged");
        assert_eq!(
            counters.bytes.load(Ordering::Relaxed),
            98,
            "the frame's length"
        );
        let fd = a.0.fd.as_raw_fd();
        assert_eq!(
            lines.lock().unwrap()[0],
            format!(
                "read 98 from fd {fd}: tap0 -> tap1 02:00:00:00:00:01 > 02:00:00:00:00:02, ICMP 10.0.0.1 > 10.0.0.2 echo-request, length 84"
            )
        );
    }

    #[test]
    fn only_many_small_packets_count_as_busy() {
        let d = |packets, bytes| Drained { packets, bytes };
        assert!(d(4, 4 * 84).is_busy_with_small_packets());
        assert!(d(200, 200 * 1500).is_busy_with_small_packets());
        assert!(!d(3, 3 * 84).is_busy_with_small_packets(), "a ping or two");
        assert!(
            !d(8, 8 * 65_000).is_busy_with_small_packets(),
            "TCP super-packets"
        );
    }

    /// Holds every packet 20 ms; answers a packet to 10.0.0.9 the other way.
    struct HoldAndAnswer;
    impl crate::pipeline::Processor for HoldAndAnswer {
        fn name(&self) -> &str {
            "hold"
        }
        fn process(
            &mut self,
            pkt: &mut crate::pipeline::Packet<'_>,
            ctx: &mut crate::pipeline::Ctx<'_>,
        ) -> crate::pipeline::Verdict {
            if pkt.data()[16..20] == [10, 0, 0, 9] {
                ctx.inject(pkt.direction().reverse(), b"answer");
                return crate::pipeline::Verdict::Drop;
            }
            crate::pipeline::Verdict::Delay(ctx.now() + std::time::Duration::from_millis(20))
        }
    }

    #[test]
    fn with_a_pipeline_held_packets_leave_when_due_and_answers_go_back() {
        let (a, b) = (MemIo::new("tun0"), MemIo::new("tun1"));
        let pipeline = Pipeline::builder().stage(HoldAndAnswer).build();
        let counters = DirCounters::default();
        let (sink, _) = collecting_sink();
        let fwd = Forwarder::new(&a, &b, &counters, PacketLog::Off, &sink)
            .with_pipeline(&pipeline, Direction::Forward);
        let mut to_peer = echo_request();
        let mut to_nine = echo_request();
        to_nine[19] = 9;
        a.inbox.lock().unwrap().push_back(Ok(to_peer.clone()));
        a.inbox.lock().unwrap().push_back(Ok(to_nine));
        let mut buf = vec![0u8; MAX_PACKET];
        let mut out = Vec::new();
        assert_eq!(drain(&fwd, &mut buf, &mut out).unwrap().packets, 2);
        assert!(b.sent.lock().unwrap().is_empty(), "held");
        assert_eq!(
            *a.sent.lock().unwrap(),
            vec![b"answer".to_vec()],
            "answered the other way"
        );
        let wait = release_due(&[&fwd], &mut out).expect("something held");
        assert!(wait <= std::time::Duration::from_millis(20));
        std::thread::sleep(wait + std::time::Duration::from_millis(1));
        assert_eq!(
            release_due(&[&fwd], &mut out),
            None,
            "nothing held any more"
        );
        assert_eq!(*b.sent.lock().unwrap(), vec![std::mem::take(&mut to_peer)]);
        assert_eq!(
            counters.packets.load(Ordering::Relaxed),
            1,
            "the answer is the stage's"
        );
    }
}
