//! The relay: copies every packet read from one endpoint to the other, both ways.
//!
//! The packet logic ([`Forwarder`]: log, write, count) and the drain loop ([`drain`]) work on
//! any [`PacketIo`], so they are unit-tested with an in-memory fake; [`Relay`] adds the device
//! I/O: one thread per direction, waiting with `poll(2)` on the source device and a stop pipe.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use crate::device::TunDevice;
use crate::packet;

/// Largest packet a TUN device hands out (max MTU), plus room for a virtio-net header.
pub const MAX_PACKET: usize = 65_535 + 12;

/// Packets handled per wake-up before the loop polls again (keeps the stop check responsive).
const BATCH: usize = 256;

/// A wake-up that finds at least this many wire-sized packets queued means the device is busy
/// with a high packet rate: the fast engine then lets packets accumulate for
/// [`RelayOptions::coalesce`] before waiting again.
const BUSY_THRESHOLD: usize = 4;

/// Packets up to this size (on average, headers included) count as wire-sized for
/// [`Drained::is_busy_with_small_packets`]; GSO super-packets are far larger.
const SMALL_PACKET: usize = 1600;

/// One end of the relay: something packets are read from and written to.
pub trait PacketIo: Send + Sync {
    /// Reads one packet; `WouldBlock` when none is queued.
    fn recv(&self, buf: &mut [u8]) -> io::Result<usize>;
    /// Writes one packet.
    fn send(&self, pkt: &[u8]) -> io::Result<usize>;
    /// A short name for logs (the interface name).
    fn label(&self) -> &str;
    /// The descriptor to wait on and to name in the packet log.
    fn fd(&self) -> BorrowedFd<'_>;
    /// Bytes of per-packet metadata before the IP packet (a `virtio_net_hdr`, or 0).
    fn header_len(&self) -> usize {
        0
    }
}

impl PacketIo for TunDevice {
    fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.read(buf)
    }
    fn send(&self, pkt: &[u8]) -> io::Result<usize> {
        self.write(pkt)
    }
    fn label(&self) -> &str {
        self.name()
    }
    fn fd(&self) -> BorrowedFd<'_> {
        self.as_fd()
    }
    fn header_len(&self) -> usize {
        if self.vnet_hdr() {
            crate::device::VNET_HDR_LEN
        } else {
            0
        }
    }
}

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

/// Counters of one direction, updated by the relay thread and read by anyone.
#[derive(Debug, Default)]
pub struct DirCounters {
    /// Packets written to the other side.
    pub packets: AtomicU64,
    /// Bytes written to the other side.
    pub bytes: AtomicU64,
    /// Packets read but dropped because the write failed.
    pub write_errors: AtomicU64,
    /// Failed reads (other than "nothing queued").
    pub read_errors: AtomicU64,
}

/// A copy of one direction's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DirSnapshot {
    /// Source device.
    pub from: String,
    /// Destination device.
    pub to: String,
    /// Packets relayed.
    pub packets: u64,
    /// Bytes relayed.
    pub bytes: u64,
    /// Packets dropped on a failed write.
    pub write_errors: u64,
    /// Failed reads.
    pub read_errors: u64,
}

/// Counters of a relay: one block per worker (so workers never share a cache line), each with
/// `[A→B, B→A]`; [`RelayStats::snapshot`] sums them.
#[derive(Debug)]
pub struct RelayStats {
    names: [String; 2],
    workers: Vec<[DirCounters; 2]>,
}

impl RelayStats {
    /// Counters for a relay between devices named `a` and `b` with `workers` workers.
    pub fn new(a: &str, b: &str, workers: usize) -> RelayStats {
        RelayStats {
            names: [a.to_string(), b.to_string()],
            workers: (0..workers.max(1)).map(|_| Default::default()).collect(),
        }
    }

    /// The counters of one worker and direction (0: A→B, 1: B→A).
    pub fn counters(&self, worker: usize, dir: usize) -> &DirCounters {
        &self.workers[worker][dir]
    }

    /// The sums over all workers, per direction.
    pub fn snapshot(&self) -> [DirSnapshot; 2] {
        let snap = |i: usize| {
            let sum = |f: fn(&DirCounters) -> &AtomicU64| {
                self.workers
                    .iter()
                    .map(|w| f(&w[i]).load(Ordering::Relaxed))
                    .sum()
            };
            DirSnapshot {
                from: self.names[i].clone(),
                to: self.names[1 - i].clone(),
                packets: sum(|c| &c.packets),
                bytes: sum(|c| &c.bytes),
                write_errors: sum(|c| &c.write_errors),
                read_errors: sum(|c| &c.read_errors),
            }
        };
        [snap(0), snap(1)]
    }
}

/// The per-packet logic of one direction: log, write, count. Keeps going on a failed write.
pub struct Forwarder<'a> {
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
    /// `from`'s per-packet metadata length, read once.
    hdr: usize,
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
            hdr: from.header_len(),
        }
    }

    /// Handles one packet read from `from` (with its metadata header, if the device has one);
    /// returns whether it was written. Logs and counts the IP packet's own length.
    pub fn forward(&self, pkt: &[u8]) -> bool {
        let ip = pkt.get(self.hdr..).unwrap_or(&[]);
        match self.log {
            PacketLog::Off => {}
            PacketLog::Brief => {
                (self.sink)(&format!("read {} from fd {}", ip.len(), self.source_fd()));
            }
            PacketLog::Decoded => {
                let what = match packet::decode(ip) {
                    Ok(summary) => summary.to_string(),
                    Err(e) => format!("{e}, length {}", ip.len()),
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
        match self.to.send(pkt) {
            Ok(_) => {
                self.counters.packets.fetch_add(1, Ordering::Relaxed);
                self.counters
                    .bytes
                    .fetch_add(ip.len() as u64, Ordering::Relaxed);
                true
            }
            Err(e) => {
                let n = self.counters.write_errors.fetch_add(1, Ordering::Relaxed) + 1;
                if n <= 10 || n.is_multiple_of(1000) {
                    log::warn!(
                        "write of {} bytes to {} (fd {}) failed: {e}; packet dropped ({n} so far)",
                        pkt.len(),
                        self.to.label(),
                        self.to.fd().as_raw_fd()
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

/// Why a direction stopped on its own.
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
pub struct Drained {
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
pub fn drain(fwd: &Forwarder<'_>, buf: &mut [u8]) -> Result<Drained, RelayError> {
    let mut got = Drained::default();
    while got.packets < BATCH {
        match fwd.from.recv(buf) {
            Ok(len) => {
                got.packets += 1;
                got.bytes += len;
                fwd.forward(&buf[..len]);
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

/// How the relay moves packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// One thread per direction, `poll(2)`, one packet per read/write; the classic model.
    Simple,
    /// One thread per queue pair waiting with epoll on both devices, draining each in batches
    /// until EAGAIN; meant for devices opened with `IFF_VNET_HDR` and offloads, so 64 KiB
    /// super-packets pass through unchanged.
    #[default]
    Fast,
}

impl Engine {
    /// `simple` or `fast`.
    pub fn name(self) -> &'static str {
        match self {
            Engine::Simple => "simple",
            Engine::Fast => "fast",
        }
    }
}

/// Relay settings.
#[derive(Clone)]
pub struct RelayOptions {
    /// The engine.
    pub engine: Engine,
    /// Packet-log level.
    pub log: PacketLog,
    /// Packet-log destination.
    pub sink: LogSink,
    /// Nice value for the worker threads (e.g. -10), if any; needs CAP_SYS_NICE to lower it.
    pub nice: Option<i32>,
    /// Fast engine only: interrupt moderation. After a wake-up that found the device busy with
    /// small packets (several wire-sized packets queued), sleep this long before waiting again,
    /// so that the next wake-up moves a batch instead of one packet (one sleep and wake-up per
    /// batch rather than per packet, like NAPI or a NIC's interrupt coalescing). Light traffic
    /// (a ping) and GSO super-packets (TCP bulk) never wait. `None` or zero: off.
    pub coalesce: Option<std::time::Duration>,
}

impl std::fmt::Debug for RelayOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayOptions")
            .field("engine", &self.engine)
            .field("log", &self.log)
            .field("nice", &self.nice)
            .field("coalesce", &self.coalesce)
            .finish()
    }
}

/// A running relay: one thread per direction. Stop it with [`Relay::stop`].
pub struct Relay {
    stop_tx: Option<OwnedFd>,
    threads: Vec<JoinHandle<Result<(), RelayError>>>,
    stats: Arc<RelayStats>,
    finished: Arc<AtomicBool>,
}

impl Relay {
    /// Starts relaying between queue pairs `(a_i, b_i)` of two devices.
    pub fn start_queues(
        pairs: Vec<(Arc<dyn PacketIo>, Arc<dyn PacketIo>)>,
        opts: RelayOptions,
    ) -> io::Result<Relay> {
        let (stop_rx, stop_tx) = nix::unistd::pipe().map_err(io::Error::from)?;
        let stop_rx = Arc::new(stop_rx);
        let (a_name, b_name) = match pairs.first() {
            Some((a, b)) => (a.label().to_string(), b.label().to_string()),
            None => return Err(io::Error::other("no queues to relay")),
        };
        let stats = Arc::new(RelayStats::new(&a_name, &b_name, pairs.len()));
        let finished = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for (worker, (a, b)) in pairs.into_iter().enumerate() {
            let ctx = WorkerCtx {
                stop_rx: stop_rx.clone(),
                stats: stats.clone(),
                opts: opts.clone(),
                finished: finished.clone(),
                worker,
            };
            match opts.engine {
                Engine::Simple => {
                    for dir in 0..2 {
                        let (from, to) = if dir == 0 {
                            (a.clone(), b.clone())
                        } else {
                            (b.clone(), a.clone())
                        };
                        let ctx = ctx.clone();
                        threads.push(
                            std::thread::Builder::new()
                                .name(format!("relay-{}-{worker}", from.label()))
                                .spawn(move || {
                                    ctx.set_priority();
                                    let fwd = ctx.forwarder(from.as_ref(), to.as_ref(), dir);
                                    ctx.finish(pump(&fwd, &ctx.stop_rx))
                                })?,
                        );
                    }
                }
                Engine::Fast => {
                    let (a, b) = (a.clone(), b.clone());
                    threads.push(
                        std::thread::Builder::new()
                            .name(format!("relay-q{worker}"))
                            .spawn(move || {
                                ctx.set_priority();
                                let fwd = [
                                    ctx.forwarder(a.as_ref(), b.as_ref(), 0),
                                    ctx.forwarder(b.as_ref(), a.as_ref(), 1),
                                ];
                                let coalesce = ctx.opts.coalesce.filter(|d| !d.is_zero());
                                ctx.finish(epoll_worker(&fwd, &ctx.stop_rx, coalesce))
                            })?,
                    );
                }
            }
        }
        Ok(Relay {
            stop_tx: Some(stop_tx),
            threads,
            stats,
            finished,
        })
    }

    /// The live counters.
    pub fn stats(&self) -> Arc<RelayStats> {
        self.stats.clone()
    }

    /// Whether a direction has stopped on its own (a device failed or vanished).
    pub fn has_failed(&self) -> bool {
        self.finished.load(Ordering::SeqCst)
    }

    /// Stops both directions and waits for them; returns each direction's error, if any.
    pub fn stop(mut self) -> Vec<RelayError> {
        self.stop_tx.take(); // closing the write end wakes every poll with POLLHUP
        let mut errors = Vec::new();
        for t in self.threads.drain(..) {
            match t.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => errors.push(e),
                Err(_) => errors.push(RelayError {
                    device: "relay".into(),
                    source: io::Error::other("relay thread panicked"),
                }),
            }
        }
        errors
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop_tx.take();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// What a worker thread shares with the relay.
#[derive(Clone)]
struct WorkerCtx {
    stop_rx: Arc<OwnedFd>,
    stats: Arc<RelayStats>,
    opts: RelayOptions,
    finished: Arc<AtomicBool>,
    worker: usize,
}

impl WorkerCtx {
    fn forwarder<'a>(
        &'a self,
        from: &'a dyn PacketIo,
        to: &'a dyn PacketIo,
        dir: usize,
    ) -> Forwarder<'a> {
        Forwarder::new(
            from,
            to,
            self.stats.counters(self.worker, dir),
            self.opts.log,
            &self.opts.sink,
        )
    }

    /// Applies the configured nice value to the calling worker thread.
    fn set_priority(&self) {
        if let Some(nice) = self.opts.nice
            && let Err(e) = set_thread_nice(nice)
        {
            log::warn!(
                "cannot set the relay's nice value to {nice}: {e}; running at normal priority"
            );
        }
    }

    fn finish(&self, res: Result<(), RelayError>) -> Result<(), RelayError> {
        self.finished.store(true, Ordering::SeqCst);
        res
    }
}

/// Sets the calling thread's nice value (on Linux, nice is per thread).
pub fn set_thread_nice(nice: i32) -> io::Result<()> {
    // SAFETY: setpriority takes plain integers; `who` = 0 with PRIO_PROCESS means the calling
    // thread on Linux. Nothing is borrowed.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The fast engine's worker: epoll over both devices of a queue pair and the stop pipe; each
/// wake-up drains every ready device in a batch; a busy wake-up is followed by a short
/// `coalesce` pause (see [`RelayOptions::coalesce`]).
fn epoll_worker(
    fwd: &[Forwarder<'_>; 2],
    stop_rx: &OwnedFd,
    coalesce: Option<std::time::Duration>,
) -> Result<(), RelayError> {
    use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
    let fail = |device: &str, e: nix::errno::Errno| RelayError {
        device: device.to_string(),
        source: e.into(),
    };
    let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).map_err(|e| fail("epoll", e))?;
    for (i, f) in fwd.iter().enumerate() {
        epoll
            .add(f.from.fd(), EpollEvent::new(EpollFlags::EPOLLIN, i as u64))
            .map_err(|e| fail(f.from.label(), e))?;
    }
    epoll
        .add(stop_rx, EpollEvent::new(EpollFlags::EPOLLIN, 2))
        .map_err(|e| fail("stop pipe", e))?;
    let mut buf = vec![0u8; MAX_PACKET];
    let mut events = [EpollEvent::empty(); 3];
    let mut busy = false;
    loop {
        if let Some(pause) = coalesce
            && busy
        {
            std::thread::sleep(pause);
        }
        busy = false;
        let n = match epoll.wait(&mut events, EpollTimeout::from(1000u16)) {
            Ok(n) => n,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(fail("epoll", e)),
        };
        for ev in &events[..n] {
            let which = ev.data() as usize;
            if which >= 2 {
                return Ok(());
            }
            let flags = ev.events();
            if flags.contains(EpollFlags::EPOLLIN) {
                busy |= drain(&fwd[which], &mut buf)?.is_busy_with_small_packets();
            } else if flags.intersects(EpollFlags::EPOLLERR | EpollFlags::EPOLLHUP) {
                return Err(RelayError {
                    device: fwd[which].from.label().to_string(),
                    source: io::Error::other(format!(
                        "the device reported {flags:?} (was it deleted?)"
                    )),
                });
            }
        }
    }
}

fn pump(fwd: &Forwarder<'_>, stop_rx: &OwnedFd) -> Result<(), RelayError> {
    let mut buf = vec![0u8; MAX_PACKET];
    loop {
        let (dev_events, stop_events) = {
            let mut fds = [
                PollFd::new(fwd.from.fd(), PollFlags::POLLIN),
                PollFd::new(stop_rx.as_fd(), PollFlags::POLLIN),
            ];
            match poll(&mut fds, PollTimeout::from(1000u16)) {
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    return Err(RelayError {
                        device: fwd.from.label().to_string(),
                        source: e.into(),
                    });
                }
            }
            (
                fds[0].revents().unwrap_or(PollFlags::empty()),
                fds[1].revents().unwrap_or(PollFlags::empty()),
            )
        };
        if !stop_events.is_empty() {
            return Ok(());
        }
        if dev_events.intersects(PollFlags::POLLIN) {
            drain(fwd, &mut buf)?;
        } else if dev_events
            .intersects(PollFlags::POLLERR | PollFlags::POLLHUP | PollFlags::POLLNVAL)
        {
            return Err(RelayError {
                device: fwd.from.label().to_string(),
                source: io::Error::other(format!(
                    "the device reported {dev_events:?} (was it deleted?)"
                )),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::sync::Mutex;

    /// An in-memory endpoint: `inbox` is what recv returns, `sent` what send received.
    struct MemIo {
        name: String,
        inbox: Mutex<VecDeque<io::Result<Vec<u8>>>>,
        sent: Mutex<Vec<Vec<u8>>>,
        fail_sends: Mutex<Vec<bool>>,
        fd: OwnedFd,
        _keep_open: OwnedFd,
    }

    impl MemIo {
        fn new(name: &str) -> MemIo {
            let (r, w) = nix::unistd::pipe().unwrap();
            MemIo {
                name: name.into(),
                inbox: Mutex::new(VecDeque::new()),
                sent: Mutex::new(Vec::new()),
                fail_sends: Mutex::new(Vec::new()),
                fd: r,
                _keep_open: w,
            }
        }
    }

    impl PacketIo for MemIo {
        fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
            match self.inbox.lock().unwrap().pop_front() {
                None => Err(io::ErrorKind::WouldBlock.into()),
                Some(Err(e)) => Err(e),
                Some(Ok(p)) => {
                    buf[..p.len()].copy_from_slice(&p);
                    Ok(p.len())
                }
            }
        }
        fn send(&self, pkt: &[u8]) -> io::Result<usize> {
            let mut fails = self.fail_sends.lock().unwrap();
            if !fails.is_empty() && fails.remove(0) {
                return Err(io::Error::from_raw_os_error(libc::EINVAL));
            }
            self.sent.lock().unwrap().push(pkt.to_vec());
            Ok(pkt.len())
        }
        fn label(&self) -> &str {
            &self.name
        }
        fn fd(&self) -> BorrowedFd<'_> {
            self.fd.as_fd()
        }
    }

    fn echo_request() -> Vec<u8> {
        let mut p = vec![0u8; 84];
        p[0] = 0x45;
        p[9] = 1;
        p[12..16].copy_from_slice(&[10, 0, 0, 1]);
        p[16..20].copy_from_slice(&[10, 0, 0, 2]);
        p[20] = 8;
        p
    }

    fn collecting_sink() -> (LogSink, Arc<Mutex<Vec<String>>>) {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let l = lines.clone();
        (
            Arc::new(move |s: &str| l.lock().unwrap().push(s.to_string())),
            lines,
        )
    }

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
            drain(&fwd, &mut buf).unwrap(),
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
            assert!(fwd.forward(&echo_request()));
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
        assert_eq!(drain(&fwd, &mut buf).unwrap().packets, 3);
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
        let err = drain(&fwd, &mut [0u8; 64]).unwrap_err();
        assert_eq!(err.device, "tun0");
        assert_eq!(counters.read_errors.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn relay_threads_stop_promptly_with_both_engines() {
        for engine in [Engine::Simple, Engine::Fast] {
            let pairs: Vec<(Arc<dyn PacketIo>, Arc<dyn PacketIo>)> = (0..2)
                .map(|_| {
                    (
                        Arc::new(MemIo::new("a")) as Arc<dyn PacketIo>,
                        Arc::new(MemIo::new("b")) as Arc<dyn PacketIo>,
                    )
                })
                .collect();
            let (sink, _) = collecting_sink();
            let relay = Relay::start_queues(
                pairs,
                RelayOptions {
                    engine,
                    log: PacketLog::Off,
                    sink,
                    nice: None,
                    coalesce: Some(std::time::Duration::from_micros(50)),
                },
            )
            .unwrap();
            let started = std::time::Instant::now();
            assert!(relay.stop().is_empty(), "{engine:?}");
            assert!(started.elapsed() < std::time::Duration::from_secs(2));
        }
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
        assert!(fwd.forward(&pkt));
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

    #[test]
    fn snapshot_sums_the_workers() {
        let stats = RelayStats::new("a", "b", 3);
        for w in 0..3 {
            stats
                .counters(w, 1)
                .packets
                .fetch_add(w as u64 + 1, Ordering::Relaxed);
        }
        let snap = stats.snapshot();
        assert_eq!(snap[1].packets, 6);
        assert_eq!((snap[1].from.as_str(), snap[1].to.as_str()), ("b", "a"));
        assert_eq!(snap[0].packets, 0);
    }
}
