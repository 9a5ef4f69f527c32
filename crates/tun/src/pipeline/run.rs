//! Running packets through the stages: filters, segmentation for stages that want wire-sized
//! packets, verdicts, held (delayed) packets, packets held until their stage decides them,
//! injections and the counters.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use super::{Ctx, Direction, Packet, Processor, Verdict, Waker};
use crate::filter::Filter;
use crate::gso::{Segmenter, VnetHdr};
use crate::packet::LinkLayer;

/// A packet the pipeline puts out: written into the device at the end of `direction`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Out {
    /// Which way it goes (it is written into that direction's destination device).
    pub direction: Direction,
    /// Its offload metadata (for a device with virtio-net headers).
    pub hdr: VnetHdr,
    /// The packet (an IP packet, or an Ethernet frame between TAP devices).
    pub data: Vec<u8>,
}

/// What became of a packet given to [`Pipeline::process`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// It went through every stage as it was read, in place: write the caller's buffer.
    Write,
    /// The pipeline took it (dropped, held, segmented or replaced: what is to be written now
    /// is in the output list).
    Taken,
}

/// Counters of one stage in one direction.
#[derive(Debug, Default)]
pub struct StageCounters {
    /// Packets the stage handled (wire-sized ones when it asks for them).
    pub packets: AtomicU64,
    /// Their bytes.
    pub bytes: AtomicU64,
    /// Packets it dropped.
    pub dropped: AtomicU64,
    /// Packets it delayed, in all.
    pub delayed: AtomicU64,
    /// Packets it holds now.
    pub held: AtomicU64,
    /// Packets it injected (into this direction's destination).
    pub injected: AtomicU64,
    /// Packets its filter let pass by without it.
    pub bypassed: AtomicU64,
}

/// A copy of one stage's counters in one direction.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DirStageSnapshot {
    /// Packets handled.
    pub packets: u64,
    /// Bytes handled.
    pub bytes: u64,
    /// Dropped.
    pub dropped: u64,
    /// Delayed in all.
    pub delayed: u64,
    /// Held now.
    pub held: u64,
    /// Injected.
    pub injected: u64,
    /// Passed by the filter.
    pub bypassed: u64,
    /// The stage's own counters (e.g. `duplicated`, `corrupted`, `capture_drops`).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub extra: std::collections::BTreeMap<String, u64>,
}

/// A copy of one stage's counters, per direction (`[Forward, Backward]`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StageSnapshot {
    /// The stage's name.
    pub name: String,
    /// What it does.
    pub description: String,
    /// Its filter, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    /// Whether it sees wire-sized packets.
    pub wire_sized: bool,
    /// Counters per direction.
    pub directions: [DirStageSnapshot; 2],
}

struct Stage {
    /// `None`: an empty slot, passed by (see [`PipelineBuilder::slot`]).
    processor: Option<Box<dyn Processor>>,
    filter: Option<Filter>,
    wire_sized: bool,
    /// The slot's name, when it can be filled or emptied while the relay runs.
    slot: Option<String>,
    counters: [StageCounters; 2],
}

impl Stage {
    fn new(processor: Box<dyn Processor>, filter: Option<Filter>, slot: Option<String>) -> Stage {
        Stage {
            wire_sized: processor.wire_sized(),
            processor: Some(processor),
            filter,
            slot,
            counters: Default::default(),
        }
    }
}

/// A packet held until `at`, then sent on from stage `next`.
struct Held {
    at: Instant,
    seq: u64,
    next: usize,
    by: usize,
    hdr: VnetHdr,
    data: Vec<u8>,
}

impl PartialEq for Held {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Held {}
impl PartialOrd for Held {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Held {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// A packet a stage holds until it decides it ([`Verdict::Hold`]).
struct Parked {
    dir: Direction,
    hdr: VnetHdr,
    arrival: Instant,
    data: Vec<u8>,
}

/// A packet's trip through the stages: which way, its offload metadata, when it was read (or
/// released), and the time the pipeline works at.
#[derive(Debug, Clone, Copy)]
struct Trip {
    dir: Direction,
    hdr: VnetHdr,
    arrival: Instant,
    now: Instant,
}

impl Trip {
    /// The same trip for a packet of other offload metadata (a segment, an emitted packet).
    fn with_hdr(self, hdr: VnetHdr) -> Trip {
        Trip { hdr, ..self }
    }
}

struct Inner {
    stages: Vec<Stage>,
    /// Packets held by stage and key until the stage decides them.
    parked: HashMap<(usize, u64), Parked>,
    /// Reused for the keys a stage names as ready.
    ready: Vec<u64>,
    /// Held packets per worker (the relay's thread that read them, which also writes them
    /// when due) and direction.
    held: Vec<[BinaryHeap<Reverse<Held>>; 2]>,
    /// The worker calling now: what is held goes to its queues.
    worker: usize,
    seq: u64,
    /// Reused by the stages' contexts.
    injected: Vec<(Direction, Vec<u8>)>,
    emitted: Vec<(Instant, Vec<u8>)>,
    segmenter: Segmenter,
    /// Set when a stage asked to change a packet's bytes ([`Packet::data_mut`]).
    touched: bool,
    link: LinkLayer,
}

/// The stages of a relay, shared by its workers (see the module documentation).
pub struct Pipeline {
    inner: Mutex<Inner>,
    /// What the packets start with (IP, or an Ethernet frame).
    link: LinkLayer,
    /// Stages with a processor now: with none a packet is not even locked (packets an emptied
    /// slot still delays go on when due, from the timer).
    filled: AtomicUsize,
    /// The stages that decide later, with their wakers.
    wakers: Vec<(usize, Waker)>,
    shared: Shared,
}

/// What the pipeline counts outside its lock.
struct Shared {
    /// Packets held now, all stages and directions.
    held: AtomicUsize,
    /// Super-packets that could not be segmented.
    segment_errors: AtomicU64,
}

/// A stage to put on the path: its processor and, optionally, the filter that limits it.
pub type FilteredStage = (Box<dyn Processor>, Option<Filter>);

/// A slot that [`Pipeline::replace`] was asked for and that the pipeline does not have.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no stage slot `{0}` on the relay's path")]
pub struct NoSuchSlot(pub String);

/// Builds a [`Pipeline`]: stages in the order packets cross them.
#[derive(Default)]
pub struct PipelineBuilder {
    stages: Vec<Stage>,
    link: LinkLayer,
}

impl PipelineBuilder {
    /// What the packets start with (default [`LinkLayer::Ip`]: TUN devices;
    /// [`LinkLayer::Ethernet`] for TAP devices). Filters given to
    /// [`PipelineBuilder::filtered`] must be compiled for the same
    /// ([`Filter::compile_for`]).
    pub fn link(mut self, link: LinkLayer) -> PipelineBuilder {
        self.link = link;
        self
    }

    /// Adds a stage that sees every packet.
    pub fn stage(self, processor: impl Processor + 'static) -> PipelineBuilder {
        self.boxed(Box::new(processor), None)
    }

    /// Adds a stage that sees only the packets `filter` matches (others pass it by).
    pub fn filtered(self, processor: impl Processor + 'static, filter: Filter) -> PipelineBuilder {
        self.boxed(Box::new(processor), Some(filter))
    }

    /// Adds a boxed stage, filtered or not.
    pub fn boxed(
        mut self,
        processor: Box<dyn Processor>,
        filter: Option<Filter>,
    ) -> PipelineBuilder {
        self.stages.push(Stage::new(processor, filter, None));
        self
    }

    /// Adds a named slot that [`Pipeline::replace`] fills or empties while the relay runs
    /// (`tun set --impair …`), holding `stage` to begin with, or nothing.
    pub fn slot(mut self, name: &str, stage: Option<FilteredStage>) -> PipelineBuilder {
        self.stages.push(match stage {
            Some((p, f)) => Stage::new(p, f, Some(name.to_string())),
            None => Stage {
                processor: None,
                filter: None,
                wire_sized: false,
                slot: Some(name.to_string()),
                counters: Default::default(),
            },
        });
        self
    }

    /// Whether no stage (and no slot) was added.
    pub fn is_empty(&self) -> bool {
        self.stages.is_empty()
    }

    /// The pipeline.
    ///
    /// # Panics
    ///
    /// If a stage's filter was compiled for another link layer than the pipeline's (a
    /// filter for raw IP on Ethernet frames would silently match the wrong bytes).
    pub fn build(self) -> Pipeline {
        for s in &self.stages {
            if let (Some(f), Some(p)) = (&s.filter, &s.processor) {
                assert_eq!(
                    f.link(),
                    self.link,
                    "filter '{f}' of stage {} was compiled for {} packets, the pipeline carries {}",
                    p.name(),
                    f.link().name(),
                    self.link.name()
                );
            }
        }
        let filled = self.stages.iter().filter(|s| s.processor.is_some()).count();
        let wakers = self
            .stages
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.processor.as_ref().and_then(|p| p.waker()).map(|w| (i, w)))
            .collect();
        Pipeline {
            inner: Mutex::new(Inner {
                stages: self.stages,
                held: vec![Default::default()],
                worker: 0,
                parked: HashMap::new(),
                ready: Vec::new(),
                seq: 0,
                injected: Vec::new(),
                emitted: Vec::new(),
                segmenter: Segmenter::new(),
                touched: false,
                link: self.link,
            }),
            link: self.link,
            filled: AtomicUsize::new(filled),
            wakers,
            shared: Shared {
                held: AtomicUsize::new(0),
                segment_errors: AtomicU64::new(0),
            },
        }
    }
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("filled", &self.filled)
            .field("held", &self.shared.held)
            .finish_non_exhaustive()
    }
}

impl Pipeline {
    /// A builder.
    pub fn builder() -> PipelineBuilder {
        PipelineBuilder::default()
    }

    /// What its packets start with.
    pub fn link(&self) -> LinkLayer {
        self.link
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A stage that panicked leaves its own state as it was; the pipeline's stays usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The pipeline locked for `worker`: what is held now goes to its queues.
    fn lock_for(&self, worker: usize) -> std::sync::MutexGuard<'_, Inner> {
        let mut inner = self.lock();
        if inner.held.len() <= worker {
            inner.held.resize_with(worker + 1, Default::default);
        }
        inner.worker = worker;
        inner
    }

    /// Runs a packet read from `direction`'s source (with its offload metadata `hdr`) through
    /// the stages at time `now`. Packets to write now — other than the caller's own buffer,
    /// see [`Fate`] — are appended to `out`.
    pub fn process(
        &self,
        direction: Direction,
        hdr: VnetHdr,
        packet: &mut [u8],
        now: Instant,
        out: &mut Vec<Out>,
    ) -> Fate {
        self.process_on(0, direction, hdr, packet, now, out)
    }

    /// Whether a stage is on the path now (else [`Pipeline::process`] passes every packet).
    pub fn has_stages(&self) -> bool {
        self.filled.load(Ordering::Acquire) != 0
    }

    /// [`Pipeline::process`] for one of several workers sharing the pipeline: what it holds is
    /// released by [`Pipeline::release_on`] for the same worker. A relay whose workers each
    /// serve their own queues of the devices needs this: a packet written by another worker
    /// would go out through another queue, and could overtake the packets before it (the
    /// kernel's tun flow steering also follows the queue a flow's packets are written to).
    pub fn process_on(
        &self,
        worker: usize,
        direction: Direction,
        hdr: VnetHdr,
        packet: &mut [u8],
        now: Instant,
        out: &mut Vec<Out>,
    ) -> Fate {
        if !self.has_stages() {
            return Fate::Write;
        }
        let mut inner = self.lock_for(worker);
        let trip = Trip {
            dir: direction,
            hdr,
            arrival: now,
            now,
        };
        inner.run_borrowed(0, trip, packet, out, &self.shared)
    }

    /// Sends on the held packets of `direction` that are due at `now` (every worker's).
    pub fn release(&self, direction: Direction, now: Instant, out: &mut Vec<Out>) {
        if self.shared.held.load(Ordering::Acquire) == 0 {
            return;
        }
        let workers = self.lock().held.len();
        for worker in 0..workers {
            self.release_on(worker, direction, now, out);
        }
    }

    /// Sends on the packets of `direction` that `worker` holds and that are due at `now`.
    pub fn release_on(
        &self,
        worker: usize,
        direction: Direction,
        now: Instant,
        out: &mut Vec<Out>,
    ) {
        if self.shared.held.load(Ordering::Acquire) == 0 {
            return;
        }
        let mut inner = self.lock_for(worker);
        let d = direction.index();
        // Bounded: each turn removes one held packet; packets a stage holds again are due
        // later than `now` or are released in the same turn only if due.
        let mut budget = inner.held[worker][d].len() * 4 + 16;
        while budget > 0 {
            budget -= 1;
            let due = inner.held[worker][d]
                .peek()
                .is_some_and(|Reverse(h)| h.at <= now);
            if !due {
                break;
            }
            let Some(Reverse(h)) = inner.held[worker][d].pop() else {
                break;
            };
            inner.stages[h.by].counters[d]
                .held
                .fetch_sub(1, Ordering::Relaxed);
            self.shared.held.fetch_sub(1, Ordering::AcqRel);
            let trip = Trip {
                dir: direction,
                hdr: h.hdr,
                arrival: h.at,
                now,
            };
            inner.run_owned(h.next, trip, h.data, out, &self.shared);
        }
    }

    /// The wakers of the stages that decide packets later ([`Verdict::Hold`]): a worker waits
    /// on their descriptors for its direction and then calls [`Pipeline::resume_ready`].
    pub fn wakers(&self) -> impl Iterator<Item = &Waker> {
        self.wakers.iter().map(|(_, w)| w)
    }

    /// Sends on the held packets of `direction` their stages have decided by now (see
    /// [`Processor::ready`]); nothing to do (and no lock taken) without such stages.
    pub fn resume_ready(&self, direction: Direction, now: Instant, out: &mut Vec<Out>) {
        self.resume_ready_on(0, direction, now, out);
    }

    /// [`Pipeline::resume_ready`] for one of several workers: what a later stage delays after
    /// the decision is held for that worker (see [`Pipeline::process_on`]).
    pub fn resume_ready_on(
        &self,
        worker: usize,
        direction: Direction,
        now: Instant,
        out: &mut Vec<Out>,
    ) {
        if self.wakers.is_empty() {
            return;
        }
        let mut inner = self.lock_for(worker);
        for (i, waker) in &self.wakers {
            // Cleared first: a decision made from now on wakes the workers again.
            waker.clear(direction);
            let mut keys = std::mem::take(&mut inner.ready);
            if let Some(p) = inner.stages[*i].processor.as_mut() {
                p.ready(direction, &mut keys);
            }
            for key in keys.drain(..) {
                let Some(p) = inner.parked.remove(&(*i, key)) else {
                    continue; // not held (any more): the stage's mistake, ignored
                };
                inner.stages[*i].counters[p.dir.index()]
                    .held
                    .fetch_sub(1, Ordering::Relaxed);
                let Parked {
                    dir,
                    hdr,
                    arrival,
                    mut data,
                } = p;
                let trip = Trip {
                    dir,
                    hdr,
                    arrival,
                    now,
                };
                let fate = inner.call_stage(*i, trip, &mut data, out, &self.shared, |s, p, c| {
                    s.resume(key, p, c)
                });
                if fate == Fate::Write {
                    inner.run_owned(*i + 1, trip, data, out, &self.shared);
                }
            }
            inner.ready = keys;
        }
    }

    /// When the next held packet of `direction` is due (any worker's).
    pub fn next_due(&self, direction: Direction) -> Option<Instant> {
        if self.shared.held.load(Ordering::Acquire) == 0 {
            return None;
        }
        self.lock()
            .held
            .iter()
            .filter_map(|h| h[direction.index()].peek().map(|Reverse(h)| h.at))
            .min()
    }

    /// When the next packet of `direction` that `worker` holds is due.
    pub fn next_due_on(&self, worker: usize, direction: Direction) -> Option<Instant> {
        if self.shared.held.load(Ordering::Acquire) == 0 {
            return None;
        }
        self.lock()
            .held
            .get(worker)
            .and_then(|h| h[direction.index()].peek().map(|Reverse(h)| h.at))
    }

    /// The counters of every stage.
    pub fn snapshot(&self) -> Vec<StageSnapshot> {
        let inner = self.lock();
        inner
            .stages
            .iter()
            .filter_map(|stage| stage.processor.as_ref().map(|p| (stage, p)))
            .map(|(stage, processor)| {
                let extra = processor.counters();
                let dir = |i: usize| {
                    let c = &stage.counters[i];
                    let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
                    DirStageSnapshot {
                        packets: get(&c.packets),
                        bytes: get(&c.bytes),
                        dropped: get(&c.dropped),
                        delayed: get(&c.delayed),
                        held: get(&c.held),
                        injected: get(&c.injected),
                        bypassed: get(&c.bypassed),
                        extra: extra[i].iter().map(|(k, v)| (k.to_string(), *v)).collect(),
                    }
                };
                StageSnapshot {
                    name: processor.name().to_string(),
                    description: processor.describe(),
                    filter: stage.filter.as_ref().map(|f| f.to_string()),
                    wire_sized: stage.wire_sized,
                    directions: [dir(0), dir(1)],
                }
            })
            .collect()
    }

    /// Super-packets that could not be segmented (malformed) and were dropped.
    pub fn segment_errors(&self) -> u64 {
        self.shared.segment_errors.load(Ordering::Relaxed)
    }

    /// Tells every stage the relay stops; held packets are dropped (and counted).
    pub fn finish(&self) {
        let mut inner = self.lock();
        let Inner { held, stages, .. } = &mut *inner;
        for queues in held.iter_mut() {
            for (d, queue) in queues.iter_mut().enumerate() {
                while let Some(Reverse(h)) = queue.pop() {
                    let c = &stages[h.by].counters[d];
                    c.held.fetch_sub(1, Ordering::Relaxed);
                    c.dropped.fetch_add(1, Ordering::Relaxed);
                    self.shared.held.fetch_sub(1, Ordering::AcqRel);
                }
            }
        }
        for ((by, _), p) in std::mem::take(&mut inner.parked) {
            let c = &inner.stages[by].counters[p.dir.index()];
            c.held.fetch_sub(1, Ordering::Relaxed);
            c.dropped.fetch_add(1, Ordering::Relaxed);
        }
        for s in &mut inner.stages {
            if let Some(p) = s.processor.as_mut() {
                p.finish();
            }
        }
    }

    /// Gives every stage its [`Processor::tick`] (the relay's main thread calls this a few
    /// times a second).
    pub fn tick(&self) {
        if !self.has_stages() {
            return;
        }
        for s in &mut self.lock().stages {
            if let Some(p) = s.processor.as_mut() {
                p.tick();
            }
        }
    }

    /// Puts `stage` (or nothing) into the slot called `name`, between two packets: packets
    /// already held by the slot's old stage go on when due; the old stage is finished (a
    /// capture flushed) and its counters start again from zero for the new one.
    ///
    /// A stage that decides packets later ([`Verdict::Hold`]) belongs in the builder, not in a
    /// slot: its waker is collected when the pipeline is built.
    pub fn replace(&self, name: &str, stage: Option<FilteredStage>) -> Result<(), NoSuchSlot> {
        let mut inner = self.lock();
        let Some(index) = inner
            .stages
            .iter()
            .position(|s| s.slot.as_deref() == Some(name))
        else {
            return Err(NoSuchSlot(name.to_string()));
        };
        // Packets the old stage held until it decided them will never be decided: dropped,
        // and counted.
        let orphans: Vec<(usize, u64)> = inner
            .parked
            .keys()
            .filter(|(by, _)| *by == index)
            .copied()
            .collect();
        for key in orphans {
            if let Some(p) = inner.parked.remove(&key) {
                let c = &inner.stages[index].counters[p.dir.index()];
                c.held.fetch_sub(1, Ordering::Relaxed);
                c.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
        let slot = &mut inner.stages[index];
        let had = slot.processor.is_some();
        if let Some(mut old) = slot.processor.take() {
            old.finish();
        }
        for c in &slot.counters {
            for a in [
                &c.packets,
                &c.bytes,
                &c.dropped,
                &c.delayed,
                &c.injected,
                &c.bypassed,
            ] {
                a.store(0, Ordering::Relaxed);
            }
        }
        let has = stage.is_some();
        match stage {
            Some((p, f)) => {
                slot.wire_sized = p.wire_sized();
                slot.processor = Some(p);
                slot.filter = f;
            }
            None => {
                slot.wire_sized = false;
                slot.filter = None;
            }
        }
        match (had, has) {
            (false, true) => {
                self.filled.fetch_add(1, Ordering::AcqRel);
            }
            (true, false) => {
                self.filled.fetch_sub(1, Ordering::AcqRel);
            }
            _ => {}
        }
        Ok(())
    }

    /// The names of the slots and what each holds now (the processor's name, or `None`).
    pub fn slots(&self) -> Vec<(String, Option<String>)> {
        self.lock()
            .stages
            .iter()
            .filter_map(|s| {
                s.slot
                    .clone()
                    .map(|n| (n, s.processor.as_ref().map(|p| p.name().to_string())))
            })
            .collect()
    }
}

impl Inner {
    /// Runs an owned packet from stage `from`; what reaches the end goes to `out`.
    fn run_owned(
        &mut self,
        from: usize,
        trip: Trip,
        mut data: Vec<u8>,
        out: &mut Vec<Out>,
        shared: &Shared,
    ) {
        if self.run_borrowed(from, trip, &mut data, out, shared) == Fate::Write {
            out.push(Out {
                direction: trip.dir,
                hdr: trip.hdr,
                data,
            });
        }
    }

    /// Runs a packet in the caller's buffer from stage `from`.
    fn run_borrowed(
        &mut self,
        from: usize,
        trip: Trip,
        data: &mut [u8],
        out: &mut Vec<Out>,
        shared: &Shared,
    ) -> Fate {
        let d = trip.dir.index();
        let hdr = trip.hdr;
        for i in from..self.stages.len() {
            if self.stages[i].wire_sized && (hdr.is_gso() || hdr.needs_csum()) {
                return self.run_segmented(i, trip, data, out, shared);
            }
            let stage = &mut self.stages[i];
            if stage.processor.is_none() {
                continue; // an empty slot
            }
            if let Some(f) = &stage.filter
                && !f.matches(data)
            {
                stage.counters[d].bypassed.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            stage.counters[d].packets.fetch_add(1, Ordering::Relaxed);
            stage.counters[d]
                .bytes
                .fetch_add(data.len() as u64, Ordering::Relaxed);
            let fate = self.call_stage(i, trip, data, out, shared, |stage, pkt, ctx| {
                stage.process(pkt, ctx)
            });
            if fate == Fate::Taken {
                return Fate::Taken;
            }
        }
        Fate::Write
    }

    /// Runs the wire-sized packets of a super-packet from stage `i` (the first that asks for
    /// them), each in the segmenter's buffer as it is made. When every one of them comes
    /// through every stage unchanged — forwarded, never asked for through
    /// [`Packet::data_mut`], nothing injected or emitted beside them — the super-packet itself
    /// is what is to be written (`Write`): one write carries them all, as when nobody looks,
    /// and no segment is copied. From the first that does not, the segments that come
    /// through go out one by one, each where it would have been (those before it, unchanged,
    /// are made again from the super-packet).
    fn run_segmented(
        &mut self,
        i: usize,
        trip: Trip,
        data: &mut [u8],
        out: &mut Vec<Out>,
        shared: &Shared,
    ) -> Fate {
        let (dir, hdr) = (trip.dir, trip.hdr);
        // Taken out while its segments run (a later stage may segment a replaced packet).
        let mut segmenter = std::mem::take(&mut self.segmenter);
        let base = out.len();
        // Segments that came through unchanged before the first that did not.
        let mut clean = 0usize;
        let mut copying = false;
        let made = segmenter.segment_link_mut(self.link, &hdr, data, |seg: &mut [u8]| {
            self.touched = false;
            let fate = self.run_borrowed(i, trip.with_hdr(VnetHdr::NONE), seg, out, shared);
            if !copying && fate == Fate::Write && !self.touched && out.len() == base {
                clean += 1;
                return;
            }
            copying = true;
            if fate == Fate::Write {
                out.push(Out {
                    direction: dir,
                    hdr: VnetHdr::NONE,
                    data: seg.to_vec(),
                });
            }
        });
        let fate = match made {
            Ok(_) if !copying => Fate::Write,
            Ok(_) => {
                if clean > 0 {
                    // Nothing was put out while they came through: they go first, in order.
                    let mut first = Vec::with_capacity(clean);
                    // The same super-packet segments as before: it cannot fail now.
                    let _ = segmenter.segment_link(self.link, &hdr, data, |seg: &[u8]| {
                        if first.len() < clean {
                            first.push(Out {
                                direction: dir,
                                hdr: VnetHdr::NONE,
                                data: seg.to_vec(),
                            });
                        }
                    });
                    out.splice(base..base, first);
                }
                Fate::Taken
            }
            Err(e) => {
                let n = shared.segment_errors.fetch_add(1, Ordering::Relaxed) + 1;
                if n <= 10 || n.is_multiple_of(1000) {
                    log::warn!("a super-packet could not be segmented ({e}); dropped ({n} so far)");
                }
                Fate::Taken
            }
        };
        self.segmenter = segmenter;
        fate
    }

    /// Asks stage `i` about a packet (`call`: `process`, or `resume` of a held one) and acts on
    /// its verdict: `Write` when it goes on unchanged to stage `i + 1`, in the caller's buffer.
    fn call_stage(
        &mut self,
        i: usize,
        trip: Trip,
        data: &mut [u8],
        out: &mut Vec<Out>,
        shared: &Shared,
        call: impl FnOnce(&mut dyn Processor, &mut Packet<'_>, &mut Ctx<'_>) -> Verdict,
    ) -> Fate {
        let Trip {
            dir,
            hdr,
            arrival,
            now,
        } = trip;
        let d = dir.index();
        let link = self.link;
        let stage = &mut self.stages[i];
        let mut injected = std::mem::take(&mut self.injected);
        let mut emitted = std::mem::take(&mut self.emitted);
        let mut packet = Packet {
            data: &mut *data,
            replaced: None,
            touched: false,
            direction: dir,
            arrival,
            gso: hdr,
            link,
        };
        let verdict = {
            let mut ctx = Ctx {
                now,
                injected: &mut injected,
                emitted: &mut emitted,
            };
            match stage.processor.as_mut() {
                Some(p) => call(p.as_mut(), &mut packet, &mut ctx),
                None => Verdict::Forward,
            }
        };
        let replaced = packet.replaced.take();
        self.touched |= packet.touched;
        for (to, pkt) in injected.drain(..) {
            stage.counters[to.index()]
                .injected
                .fetch_add(1, Ordering::Relaxed);
            out.push(Out {
                direction: to,
                hdr: VnetHdr::NONE,
                data: pkt,
            });
        }
        self.injected = injected;
        for (at, pkt) in emitted.drain(..) {
            let copy = Trip {
                hdr: VnetHdr::NONE,
                arrival: at,
                ..trip
            };
            self.hold_or_run(i, i + 1, copy, pkt, out, shared);
        }
        // Emptied, its capacity kept for the next packet.
        self.emitted = emitted;
        match (verdict, replaced) {
            (Verdict::Drop, _) => {
                self.stages[i].counters[d]
                    .dropped
                    .fetch_add(1, Ordering::Relaxed);
                Fate::Taken
            }
            (Verdict::Forward, None) => Fate::Write,
            (Verdict::Forward, Some(new)) => {
                self.run_owned(i + 1, trip, new, out, shared);
                Fate::Taken
            }
            (Verdict::Delay(at), replaced) => {
                let pkt = replaced.unwrap_or_else(|| data.to_vec());
                let delayed = Trip {
                    arrival: at,
                    ..trip
                };
                self.hold_or_run(i, i + 1, delayed, pkt, out, shared);
                Fate::Taken
            }
            (Verdict::Hold(key), replaced) => {
                let data = replaced.unwrap_or_else(|| data.to_vec());
                let c = &self.stages[i].counters[d];
                c.held.fetch_add(1, Ordering::Relaxed);
                let parked = Parked {
                    dir,
                    hdr,
                    arrival,
                    data,
                };
                if let Some(old) = self.parked.insert((i, key), parked) {
                    // The stage reused a key it still holds: the older packet is lost.
                    let c = &self.stages[i].counters[old.dir.index()];
                    c.held.fetch_sub(1, Ordering::Relaxed);
                    c.dropped.fetch_add(1, Ordering::Relaxed);
                }
                Fate::Taken
            }
        }
    }

    /// Holds a packet until `trip.arrival` (when it is due; counted against stage `by`), or
    /// runs it from stage `next` at once if due.
    fn hold_or_run(
        &mut self,
        by: usize,
        next: usize,
        trip: Trip,
        data: Vec<u8>,
        out: &mut Vec<Out>,
        shared: &Shared,
    ) {
        let d = trip.dir.index();
        if trip.arrival <= trip.now {
            self.run_owned(next, trip, data, out, shared);
            return;
        }
        let c = &self.stages[by].counters[d];
        c.delayed.fetch_add(1, Ordering::Relaxed);
        c.held.fetch_add(1, Ordering::Relaxed);
        shared.held.fetch_add(1, Ordering::AcqRel);
        self.seq += 1;
        self.held[self.worker][d].push(Reverse(Held {
            at: trip.arrival,
            seq: self.seq,
            next,
            by,
            hdr: trip.hdr,
            data,
        }));
    }
}
