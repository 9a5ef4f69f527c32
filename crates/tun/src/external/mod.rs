//! A stage run by another program, in any language (`tun up --processor-exec`,
//! `--processor-socket`): each packet goes to it over a Unix stream socket, in batches, and
//! waits in the pipeline ([`Verdict::Hold`]) until its verdict comes back. The protocol is in
//! [`proto`] and `docs/processors.md`.
//!
//! Two threads per stage do the socket's I/O, so the relay's workers never wait for the
//! program: a writer sends queued packets (up to the program's `batch` per message, at most
//! `window` awaiting verdicts), a reader takes verdicts, hands them to the pipeline (waking the
//! workers through the stage's [`Waker`]) and watches the deadline. A program that dies, keeps
//! a packet past the deadline or answers garbage is reported once; from then on the stage
//! forwards (fail open) or drops (fail closed) every packet, held ones included.

pub mod proto;

use std::collections::{HashMap, VecDeque};
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::process::Child;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use crate::pipeline::{Ctx, Direction, Packet, Processor, Verdict, Waker};

/// Most packets waiting to be sent to the program (beyond those awaiting its verdicts); a
/// packet that finds the queue full is dropped and counted (`overflow`), as a full router queue
/// would.
pub const MAX_QUEUED: usize = 4096;

/// Longest wait for the program's hello.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest a relay message grows before it is sent, even below the program's batch.
const MAX_FRAME_BYTES: usize = 1 << 20;

/// What happens to packets once the program has failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailMode {
    /// Forward them, unprocessed.
    Open,
    /// Drop them.
    Closed,
}

impl FailMode {
    /// `open` or `closed`.
    pub fn name(self) -> &'static str {
        match self {
            FailMode::Open => "open",
            FailMode::Closed => "closed",
        }
    }
}

/// How the stage talks to its program.
#[derive(Debug, Clone)]
pub struct ExternalOptions {
    /// The program, as the user named it (`exec 'python3 x.py'`, `socket /run/p.sock`).
    pub what: String,
    /// Longest wait for a verdict (and for the program to take a message).
    pub timeout: Duration,
    /// Longest wait for the program's hello.
    pub hello_timeout: Duration,
    /// Fail open or closed.
    pub fail: FailMode,
    /// The relay's two devices (told to the program in the hello).
    pub devs: [String; 2],
    /// The stage's filter, if any (told to the program in the hello).
    pub filter: Option<String>,
}

/// The program could not be started as a stage (its hello).
#[derive(Debug, thiserror::Error)]
#[error("processor {what}: {reason}")]
pub struct ExternalError {
    /// The program.
    pub what: String,
    /// What went wrong.
    pub reason: String,
}

/// Counters of one direction.
#[derive(Debug, Default)]
struct DirCounters {
    to_processor: AtomicU64,
    answered: AtomicU64,
    replaced: AtomicU64,
    overflow: AtomicU64,
    fail_open: AtomicU64,
    fail_closed: AtomicU64,
}

/// A packet waiting to be sent.
struct Request {
    id: u64,
    dir: Direction,
    timestamp_ns: u64,
    data: Vec<u8>,
}

/// Packets to inject, with where to.
type Injections = Vec<(Direction, Vec<u8>)>;

/// A packet sent, awaiting its verdict.
struct InFlight {
    dir: Direction,
    injections: Injections,
}

/// The verdict of a packet, for [`Processor::resume`].
enum Decision {
    Forward,
    Drop,
    Replace(Vec<u8>),
    /// The program failed before deciding it: the fail mode decides.
    Failed,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Request>,
    in_flight: HashMap<u64, InFlight>,
    /// Sent packets in the order they were sent, with the time (for the deadline); entries
    /// whose packet is no longer in flight are skipped.
    sent: VecDeque<(u64, Instant)>,
    decided: [Vec<u64>; 2],
    decisions: HashMap<u64, (Decision, Injections)>,
    failure: Option<String>,
}

struct Shared {
    state: Mutex<State>,
    /// The writer waits on it for packets (and for room in the window).
    work: Condvar,
    failed: AtomicBool,
    stopping: AtomicBool,
    waker: Waker,
    stream: UnixStream,
    child: Mutex<Option<Child>>,
    what: String,
    fail: FailMode,
    timeout: Duration,
    batch: usize,
    window: usize,
    counters: [DirCounters; 2],
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The program failed: report once, decide every packet it had by the fail mode, stop
    /// talking to it (and kill it, if we started it).
    fn fail(&self, reason: String) {
        {
            let mut st = self.lock();
            if st.failure.is_some() || self.stopping.load(Ordering::SeqCst) {
                return;
            }
            let queued: Vec<(u64, Direction)> = st.queue.drain(..).map(|r| (r.id, r.dir)).collect();
            let flying: Vec<(u64, Direction)> =
                st.in_flight.drain().map(|(id, f)| (id, f.dir)).collect();
            st.sent.clear();
            for (id, dir) in queued.into_iter().chain(flying) {
                st.decided[dir.index()].push(id);
                st.decisions.insert(id, (Decision::Failed, Vec::new()));
            }
            st.failure = Some(reason.clone());
            self.failed.store(true, Ordering::SeqCst);
        }
        log::warn!(
            "processor {}: {reason}; failing {}: from now on every packet it would see is {} (--processor-fail {})",
            self.what,
            self.fail.name(),
            match self.fail {
                FailMode::Open => "forwarded unprocessed",
                FailMode::Closed => "dropped",
            },
            self.fail.name()
        );
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
        if let Some(child) = self
            .child
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
        {
            let _ = child.kill();
        }
        self.work.notify_all();
        for d in Direction::BOTH {
            self.waker.wake(d);
        }
    }

    /// Why the connection ended: the program's exit status when we started it.
    fn ended(&self) -> String {
        let mut guard = self.child.lock().unwrap_or_else(|e| e.into_inner());
        let Some(child) = guard.as_mut() else {
            return "closed the connection".into();
        };
        // It closed its end: it is exiting, or about to (bounded wait).
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(200) {
            if let Ok(Some(status)) = child.try_wait() {
                return format!("exited ({status})");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        "closed the connection (it still runs)".into()
    }
}

/// The writer: sends queued packets, `batch` at a time, while fewer than `window` await
/// verdicts.
fn writer(shared: Arc<Shared>, mut stream: UnixStream) {
    let mut buf = Vec::new();
    loop {
        let batch: Vec<Request> = {
            let mut st = shared.lock();
            loop {
                if shared.stopping.load(Ordering::SeqCst) || st.failure.is_some() {
                    return;
                }
                if !st.queue.is_empty() && st.in_flight.len() < shared.window {
                    break;
                }
                st = shared
                    .work
                    .wait_timeout(st, Duration::from_millis(200))
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
            let room = (shared.window - st.in_flight.len()).min(shared.batch);
            let mut bytes = 0;
            let mut batch = Vec::new();
            while batch.len() < room && (batch.is_empty() || bytes < MAX_FRAME_BYTES) {
                let Some(r) = st.queue.pop_front() else { break };
                bytes += r.data.len() + proto::PACKET_HEADER;
                batch.push(r);
            }
            let now = Instant::now();
            for r in &batch {
                st.in_flight.insert(
                    r.id,
                    InFlight {
                        dir: r.dir,
                        injections: Vec::new(),
                    },
                );
                st.sent.push_back((r.id, now));
            }
            batch
        };
        buf.clear();
        proto::encode_packets(
            &mut buf,
            batch.iter().map(|r| proto::Outgoing {
                id: r.id,
                direction: r.dir,
                timestamp_ns: r.timestamp_ns,
                data: &r.data,
            }),
        );
        match stream.write_all(&buf) {
            Ok(()) => {
                for r in &batch {
                    shared.counters[r.dir.index()]
                        .to_processor
                        .fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                shared.fail(format!(
                    "did not read its socket for {} ms",
                    shared.timeout.as_millis()
                ));
                return;
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
                ) =>
            {
                let why = shared.ended();
                shared.fail(why);
                return;
            }
            Err(e) => {
                shared.fail(format!("cannot write to its socket: {e}"));
                return;
            }
        }
    }
}

/// The reader: takes verdicts, hands them to the pipeline, watches the deadline.
fn reader(shared: Arc<Shared>, mut stream: UnixStream) {
    let mut frames = proto::Reader::default();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        if shared.stopping.load(Ordering::SeqCst) || shared.failed.load(Ordering::SeqCst) {
            return;
        }
        // The oldest packet awaiting a verdict sets the deadline.
        let deadline = {
            let mut st = shared.lock();
            loop {
                match st.sent.front() {
                    Some((id, _)) if !st.in_flight.contains_key(id) => {
                        st.sent.pop_front();
                    }
                    Some(&(id, at)) => break Some((id, at + shared.timeout)),
                    None => break None,
                }
            }
        };
        let now = Instant::now();
        if let Some((id, at)) = deadline
            && now >= at
        {
            shared.fail(format!(
                "gave no verdict for packet {id} within {} ms",
                shared.timeout.as_millis()
            ));
            return;
        }
        // Idle, at most the timeout: a packet sent meanwhile is due no later than that.
        let wait = deadline
            .map(|(_, at)| at - now)
            .unwrap_or(shared.timeout)
            .min(Duration::from_millis(200));
        let ready = {
            let mut fds = [PollFd::new(stream.as_fd(), PollFlags::POLLIN)];
            let timeout = PollTimeout::try_from(wait.as_millis().max(1) as u64)
                .unwrap_or(PollTimeout::from(200u16));
            match poll(&mut fds, timeout) {
                Ok(n) => n > 0,
                Err(nix::errno::Errno::EINTR) => false,
                Err(e) => {
                    shared.fail(format!("cannot wait for its socket: {e}"));
                    return;
                }
            }
        };
        if !ready {
            continue;
        }
        let got = stream.read(&mut buf);
        // End of file, or a reset (it closed without reading everything we sent).
        let closed = match &got {
            Ok(0) => true,
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
            Ok(_) => false,
        };
        if closed {
            if shared.stopping.load(Ordering::SeqCst) {
                return;
            }
            let why = shared.ended();
            shared.fail(if frames.is_partial() {
                format!("{why} in the middle of a message")
            } else {
                why
            });
            return;
        }
        let n = match got {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::Interrupted | std::io::ErrorKind::WouldBlock
                ) =>
            {
                continue;
            }
            Err(e) => {
                if !shared.stopping.load(Ordering::SeqCst) {
                    shared.fail(format!("cannot read its socket: {e}"));
                }
                return;
            }
        };
        frames.push(&buf[..n]);
        let mut woke = [false; 2];
        loop {
            let msg = match frames.next_message() {
                Ok(Some(m)) => m,
                Ok(None) => break,
                Err(e) => {
                    shared.fail(format!("answered garbage: {e}"));
                    return;
                }
            };
            if let Err(e) = apply(&shared, msg, &mut woke) {
                shared.fail(format!("answered garbage: {e}"));
                return;
            }
        }
        for d in Direction::BOTH {
            if woke[d.index()] {
                shared.waker.wake(d);
            }
        }
        shared.work.notify_one();
    }
}

/// Applies one message from the program.
fn apply(shared: &Shared, (kind, body): (u8, Vec<u8>), woke: &mut [bool; 2]) -> Result<(), String> {
    if kind != proto::VERDICTS {
        return Err(format!("a message of type {kind} (verdicts are type 3)"));
    }
    let verdicts = proto::parse_verdicts(&body)?;
    let mut st = shared.lock();
    for v in verdicts {
        let Some(f) = st.in_flight.get_mut(&v.id) else {
            return Err(format!(
                "a verdict for packet {}, which awaits none (never sent, or already decided)",
                v.id
            ));
        };
        let decision = match v.action {
            proto::Action::Inject(dir, bytes) => {
                f.injections.push((dir, bytes));
                continue;
            }
            proto::Action::Forward => Decision::Forward,
            proto::Action::Drop => Decision::Drop,
            proto::Action::Replace(bytes) => Decision::Replace(bytes),
        };
        let f = st.in_flight.remove(&v.id).expect("just seen");
        let d = f.dir.index();
        shared.counters[d].answered.fetch_add(1, Ordering::Relaxed);
        st.decided[d].push(v.id);
        st.decisions.insert(v.id, (decision, f.injections));
        woke[d] = true;
    }
    Ok(())
}

/// The stage (see the module documentation).
pub struct ExternalStage {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    name: String,
    describe: String,
    next_id: u64,
    clock: (SystemTime, Instant),
}

impl ExternalStage {
    /// Greets the program on `stream` (bounded by `opts.hello_timeout`) and starts talking to
    /// it; `child` is the program when the relay started it (killed on failure, waited for at
    /// the end).
    pub fn start(
        stream: UnixStream,
        child: Option<Child>,
        opts: ExternalOptions,
    ) -> Result<ExternalStage, ExternalError> {
        let mut child = child;
        let err = |reason: String, child: &mut Option<Child>| {
            let mut reason = reason;
            if let Some(c) = child.as_mut() {
                // What became of it says more than a closed socket.
                let start = Instant::now();
                let status = loop {
                    match c.try_wait() {
                        Ok(Some(s)) => break Some(s),
                        _ if start.elapsed() > Duration::from_millis(200) => break None,
                        _ => std::thread::sleep(Duration::from_millis(5)),
                    }
                };
                match status {
                    Some(s) => reason.push_str(&format!(" ({s})")),
                    None => {
                        let _ = c.kill();
                        let _ = c.wait();
                    }
                }
            }
            ExternalError {
                what: opts.what.clone(),
                reason,
            }
        };
        let reply = match hello(&stream, &opts) {
            Ok(r) => r,
            Err(reason) => return Err(err(reason, &mut child)),
        };
        let io = |e: std::io::Error| e.to_string();
        let setup = (|| {
            stream.set_write_timeout(Some(opts.timeout)).map_err(io)?;
            stream.set_read_timeout(None).map_err(io)?;
            let w = stream.try_clone().map_err(io)?;
            let r = stream.try_clone().map_err(io)?;
            let waker = Waker::new().map_err(io)?;
            Ok::<_, String>((w, r, waker))
        })();
        let (w, r, waker) = match setup {
            Ok(x) => x,
            Err(reason) => return Err(err(reason, &mut child)),
        };
        let name = if reply.name.is_empty() {
            String::new()
        } else {
            format!(" ({})", reply.name)
        };
        let describe = format!(
            "{}{name}, protocol {}, {}, timeout {} ms, fail {}",
            opts.what,
            reply.version,
            if reply.batch == 1 && reply.window == 1 {
                "one packet at a time".to_string()
            } else {
                format!("batch {}, window {}", reply.batch, reply.window)
            },
            opts.timeout.as_millis(),
            opts.fail.name()
        );
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            work: Condvar::new(),
            failed: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            waker,
            stream,
            child: Mutex::new(child),
            what: opts.what.clone(),
            fail: opts.fail,
            timeout: opts.timeout,
            batch: reply.batch as usize,
            window: reply.window as usize,
            counters: Default::default(),
        });
        let clock = (SystemTime::now(), Instant::now());
        let mut stage = ExternalStage {
            shared,
            threads: Vec::new(),
            name: "processor".into(),
            describe,
            next_id: 1,
            clock,
        };
        let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new().name(name.into()).spawn(f)
        };
        let (sw, sr) = (stage.shared.clone(), stage.shared.clone());
        for spawned in [
            spawn("processor-out", Box::new(move || writer(sw, w))),
            spawn("processor-in", Box::new(move || reader(sr, r))),
        ] {
            match spawned {
                Ok(t) => stage.threads.push(t),
                Err(e) => {
                    stage.stop();
                    return Err(ExternalError {
                        what: opts.what,
                        reason: format!("cannot start a thread: {e}"),
                    });
                }
            }
        }
        Ok(stage)
    }

    /// What happens to a packet once the program has failed.
    fn fail_verdict(&self, d: Direction) -> Verdict {
        let c = &self.shared.counters[d.index()];
        match self.shared.fail {
            FailMode::Open => {
                c.fail_open.fetch_add(1, Ordering::Relaxed);
                Verdict::Forward
            }
            FailMode::Closed => {
                c.fail_closed.fetch_add(1, Ordering::Relaxed);
                Verdict::Drop
            }
        }
    }

    fn timestamp_ns(&self, at: Instant) -> u64 {
        let (wall, epoch) = self.clock;
        let t = match at.checked_duration_since(epoch) {
            Some(since) => wall + since,
            None => wall - epoch.duration_since(at),
        };
        t.duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
    }

    /// Why it failed, if it did.
    pub fn failure(&self) -> Option<String> {
        self.shared.lock().failure.clone()
    }

    /// Stops the threads and the program (bounded: the program gets a second to exit on
    /// the closed socket, then is killed).
    fn stop(&mut self) {
        if self.shared.stopping.swap(true, Ordering::SeqCst) {
            return;
        }
        let _ = self.shared.stream.shutdown(std::net::Shutdown::Both);
        self.shared.work.notify_all();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        let mut guard = self.shared.child.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(mut child) = guard.take() {
            let start = Instant::now();
            loop {
                match child.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if start.elapsed() > Duration::from_secs(1) => {
                        log::warn!(
                            "processor {}: still running a second after the relay closed its socket; killed",
                            self.shared.what
                        );
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        }
    }
}

/// Sends the hello and reads the program's.
fn hello(stream: &UnixStream, opts: &ExternalOptions) -> Result<proto::HelloReply, String> {
    let deadline = Instant::now() + opts.hello_timeout;
    let mut options = vec![
        ("dev0", opts.devs[0].clone()),
        ("dev1", opts.devs[1].clone()),
        ("timeout_ms", opts.timeout.as_millis().to_string()),
        ("fail", opts.fail.name().to_string()),
        ("max_batch", proto::MAX_BATCH.to_string()),
        ("max_window", proto::MAX_WINDOW.to_string()),
        ("wire_sized", "1".to_string()),
    ];
    if let Some(f) = &opts.filter {
        options.push(("filter", f.replace('\n', " ")));
    }
    let mut s = stream;
    s.set_write_timeout(Some(opts.hello_timeout))
        .map_err(|e| e.to_string())?;
    match s.write_all(&proto::encode_hello(&options)) {
        Ok(()) => {}
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
            ) =>
        {
            return Err("closed the connection before its hello".into());
        }
        Err(e) => return Err(format!("cannot send the hello: {e}")),
    }
    let mut frames = proto::Reader::default();
    let mut buf = [0u8; 4096];
    loop {
        if let Some((kind, body)) = frames.next_message()? {
            return proto::parse_hello_reply(kind, &body);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!(
                "no hello within {} s",
                opts.hello_timeout.as_secs_f64()
            ));
        }
        let mut fds = [PollFd::new(stream.as_fd(), PollFlags::POLLIN)];
        let timeout = PollTimeout::try_from(left.as_millis().max(1) as u64)
            .unwrap_or(PollTimeout::from(1000u16));
        match poll(&mut fds, timeout) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
            Ok(_) => {}
            Err(e) => return Err(e.to_string()),
        }
        match s.read(&mut buf) {
            // A reset: it closed without reading what we sent (our hello).
            Ok(0) => return Err("closed the connection before its hello".into()),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return Err("closed the connection before its hello".into());
            }
            Ok(n) => frames.push(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("cannot read its hello: {e}")),
        }
    }
}

impl Processor for ExternalStage {
    fn name(&self) -> &str {
        &self.name
    }

    fn describe(&self) -> String {
        self.describe.clone()
    }

    fn wire_sized(&self) -> bool {
        true
    }

    fn process(&mut self, packet: &mut Packet<'_>, _ctx: &mut Ctx<'_>) -> Verdict {
        let d = packet.direction();
        if self.shared.failed.load(Ordering::Relaxed) {
            return self.fail_verdict(d);
        }
        let timestamp_ns = self.timestamp_ns(packet.arrival());
        let mut st = self.shared.lock();
        if st.failure.is_some() {
            drop(st);
            return self.fail_verdict(d);
        }
        if st.queue.len() >= MAX_QUEUED {
            self.shared.counters[d.index()]
                .overflow
                .fetch_add(1, Ordering::Relaxed);
            return Verdict::Drop;
        }
        let id = self.next_id;
        self.next_id += 1;
        st.queue.push_back(Request {
            id,
            dir: d,
            timestamp_ns,
            data: packet.data().to_vec(),
        });
        drop(st);
        self.shared.work.notify_one();
        Verdict::Hold(id)
    }

    fn waker(&self) -> Option<Waker> {
        Some(self.shared.waker.clone())
    }

    fn ready(&mut self, direction: Direction, keys: &mut Vec<u64>) {
        keys.append(&mut self.shared.lock().decided[direction.index()]);
    }

    fn resume(&mut self, key: u64, packet: &mut Packet<'_>, ctx: &mut Ctx<'_>) -> Verdict {
        let d = packet.direction();
        let taken = self.shared.lock().decisions.remove(&key);
        let Some((decision, injections)) = taken else {
            return self.fail_verdict(d);
        };
        for (to, bytes) in injections {
            ctx.inject(to, &bytes);
        }
        match decision {
            Decision::Forward => Verdict::Forward,
            Decision::Drop => Verdict::Drop,
            Decision::Replace(bytes) => {
                self.shared.counters[d.index()]
                    .replaced
                    .fetch_add(1, Ordering::Relaxed);
                packet.replace(bytes);
                Verdict::Forward
            }
            Decision::Failed => self.fail_verdict(d),
        }
    }

    fn counters(&self) -> [Vec<(&'static str, u64)>; 2] {
        Direction::BOTH.map(|d| {
            let c = &self.shared.counters[d.index()];
            let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
            vec![
                ("to_processor", get(&c.to_processor)),
                ("answered", get(&c.answered)),
                ("replaced", get(&c.replaced)),
                ("overflow", get(&c.overflow)),
                ("fail_open", get(&c.fail_open)),
                ("fail_closed", get(&c.fail_closed)),
            ]
        })
    }

    fn finish(&mut self) {
        self.stop();
    }
}

impl Drop for ExternalStage {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests;
