//! The relay: copies every packet read from one device to the other, both ways.
//!
//! * [`forward`]: the per-packet logic ([`Forwarder`]: log, write, count) and the drain loop
//!   ([`forward::drain`]), apart from any device I/O: they work on any [`PacketIo`] ([`endpoint`]), so they
//!   are unit-tested with an in-memory fake;
//! * [`stats`]: the counters, per worker and direction;
//! * the engines: [`Engine::Simple`] (one thread per direction, `poll(2)`, one packet per read
//!   and write) and [`Engine::Fast`] (one thread per queue pair, epoll, batches, interrupt
//!   moderation); [`Relay`] starts and stops their threads.

mod endpoint;
mod fast;
mod forward;
mod simple;
mod stats;
#[cfg(test)]
mod testing;
mod timer;

use std::io;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use crate::pipeline::{Direction, Pipeline};

pub use endpoint::PacketIo;
pub(crate) use forward::Forwarder;
pub use forward::{LogSink, PacketLog, RelayError};
pub use stats::{DirSnapshot, RelayStats};

/// Largest packet a TUN device hands out (max MTU), plus room for a virtio-net header.
pub(crate) const MAX_PACKET: usize = 65_535 + 12;

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
    /// The stages every packet crosses (capture, impairment, your own code); `None`: none,
    /// and the relay never looks at its packets beyond the packet log.
    pub pipeline: Option<Arc<Pipeline>>,
}

impl std::fmt::Debug for RelayOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayOptions")
            .field("engine", &self.engine)
            .field("log", &self.log)
            .field("nice", &self.nice)
            .field("coalesce", &self.coalesce)
            .field("pipeline", &self.pipeline)
            .finish()
    }
}

/// A running relay: its worker threads (see [`Engine`]). Stop it with [`Relay::stop`].
pub struct Relay {
    stop_tx: Option<OwnedFd>,
    threads: Vec<JoinHandle<Result<(), RelayError>>>,
    stats: Arc<RelayStats>,
    finished: Arc<AtomicBool>,
    pipeline: Option<Arc<Pipeline>>,
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
        if let Some((a, b)) = pairs.first()
            && let Some(p) = &opts.pipeline
            && (p.link() != a.link() || p.link() != b.link())
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "the pipeline is built for {} packets, {a_name} carries {} and {b_name} {}",
                    p.link().name(),
                    a.link().name(),
                    b.link().name()
                ),
            ));
        }
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
                                    ctx.finish(simple::pump(&fwd, &ctx.stop_rx))
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
                                ctx.finish(fast::epoll_worker(&fwd, &ctx.stop_rx, coalesce))
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
            pipeline: opts.pipeline.clone(),
        })
    }

    /// The live counters.
    pub fn stats(&self) -> Arc<RelayStats> {
        self.stats.clone()
    }

    /// The stages, if any (their counters: [`Pipeline::snapshot`]).
    pub fn pipeline(&self) -> Option<&Arc<Pipeline>> {
        self.pipeline.as_ref()
    }

    /// Whether a worker has stopped on its own (a device failed or vanished).
    pub fn has_failed(&self) -> bool {
        self.finished.load(Ordering::SeqCst)
    }

    /// Stops every worker and waits for them; returns each worker's error, if any.
    pub fn stop(mut self) -> Vec<RelayError> {
        self.stop_tx.take(); // closing the write end wakes every worker's poll or epoll
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
        if let Some(p) = &self.pipeline {
            p.finish();
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
        let fwd = Forwarder::new(
            from,
            to,
            self.stats.counters(self.worker, dir),
            self.opts.log,
            &self.opts.sink,
        )
        .on_worker(self.worker);
        match &self.opts.pipeline {
            Some(p) => fwd.with_pipeline(p, Direction::from_index(dir)),
            None => fwd,
        }
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

/// What a device's hang-up or error event means, in words.
fn hangup_message(hangup: bool, error: bool) -> String {
    let what = match (hangup, error) {
        (true, true) => "hung up with an error",
        (true, false) => "hung up",
        (false, true) => "reported an error",
        (false, false) => "is no longer usable",
    };
    format!("the device {what}: was it deleted or detached?")
}

/// Sets the calling thread's nice value (on Linux, nice is per thread).
fn set_thread_nice(nice: i32) -> io::Result<()> {
    // SAFETY: setpriority takes plain integers; `who` = 0 with PRIO_PROCESS means the calling
    // thread on Linux. Nothing is borrowed.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relay::testing::{MemIo, collecting_sink};

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
                    pipeline: None,
                },
            )
            .unwrap();
            let started = std::time::Instant::now();
            assert!(relay.stop().is_empty(), "{engine:?}");
            assert!(started.elapsed() < std::time::Duration::from_secs(2));
        }
    }

    /// Holds every packet until the test decides it, from another thread.
    struct Later {
        seen: Arc<std::sync::Mutex<Vec<u64>>>,
        decided: Arc<std::sync::Mutex<Vec<u64>>>,
        waker: crate::pipeline::Waker,
    }
    impl crate::pipeline::Processor for Later {
        fn name(&self) -> &str {
            "later"
        }
        fn process(
            &mut self,
            _: &mut crate::pipeline::Packet<'_>,
            _: &mut crate::pipeline::Ctx<'_>,
        ) -> crate::pipeline::Verdict {
            let mut seen = self.seen.lock().unwrap();
            let key = seen.len() as u64;
            seen.push(key);
            crate::pipeline::Verdict::Hold(key)
        }
        fn waker(&self) -> Option<crate::pipeline::Waker> {
            Some(self.waker.clone())
        }
        fn ready(&mut self, direction: Direction, keys: &mut Vec<u64>) {
            if direction == Direction::Forward {
                keys.append(&mut self.decided.lock().unwrap());
            }
        }
    }

    #[test]
    fn workers_of_both_engines_wake_for_packets_a_stage_decides_later() {
        use crate::relay::testing::echo_request;
        use std::time::{Duration, Instant};
        for engine in [Engine::Simple, Engine::Fast] {
            let (a, b) = (Arc::new(MemIo::new("a")), Arc::new(MemIo::new("b")));
            let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
            let decided = Arc::new(std::sync::Mutex::new(Vec::new()));
            let waker = crate::pipeline::Waker::new().unwrap();
            let pipeline = Pipeline::builder()
                .stage(Later {
                    seen: seen.clone(),
                    decided: decided.clone(),
                    waker: waker.clone(),
                })
                .build();
            let (sink, _) = collecting_sink();
            let relay = Relay::start_queues(
                vec![(
                    a.clone() as Arc<dyn PacketIo>,
                    b.clone() as Arc<dyn PacketIo>,
                )],
                RelayOptions {
                    engine,
                    log: PacketLog::Off,
                    sink,
                    nice: None,
                    coalesce: None,
                    pipeline: Some(Arc::new(pipeline)),
                },
            )
            .unwrap();
            a.inbox.lock().unwrap().push_back(Ok(echo_request()));
            a.set_readable(true);
            let start = Instant::now();
            while seen.lock().unwrap().is_empty() {
                assert!(
                    start.elapsed() < Duration::from_secs(5),
                    "{engine:?}: not read"
                );
                std::thread::sleep(Duration::from_millis(1));
            }
            a.set_readable(false);
            std::thread::sleep(Duration::from_millis(50));
            assert!(b.sent.lock().unwrap().is_empty(), "{engine:?}: held");
            // Decided from this thread: the worker, asleep in its wait (1 s timeout), must wake
            // at once.
            let decided_at = Instant::now();
            decided.lock().unwrap().push(0);
            waker.wake(Direction::Forward);
            while b.sent.lock().unwrap().is_empty() {
                assert!(
                    decided_at.elapsed() < Duration::from_millis(500),
                    "{engine:?}: the worker did not wake for the decision"
                );
                std::thread::sleep(Duration::from_millis(1));
            }
            assert_eq!(*b.sent.lock().unwrap(), vec![echo_request()]);
            assert!(relay.stop().is_empty());
        }
    }
}
