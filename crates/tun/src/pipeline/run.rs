//! Running packets through the stages: filters, segmentation for stages that want wire-sized
//! packets, verdicts, held (delayed) packets, packets held until their stage decides them,
//! injections and the counters.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use super::{Ctx, Direction, Packet, Processor, Verdict, Waker};
use crate::filter::Filter;
use crate::gso::{Segmenter, VnetHdr};

/// A packet the pipeline puts out: written into the device at the end of `direction`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Out {
    /// Which way it goes (it is written into that direction's destination device).
    pub direction: Direction,
    /// Its offload metadata (for a device with virtio-net headers).
    pub hdr: VnetHdr,
    /// The IP packet.
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
    processor: Box<dyn Processor>,
    filter: Option<Filter>,
    wire_sized: bool,
    counters: [StageCounters; 2],
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

struct Inner {
    stages: Vec<Stage>,
    held: [BinaryHeap<Reverse<Held>>; 2],
    /// Packets held by stage and key until the stage decides them.
    parked: HashMap<(usize, u64), Parked>,
    /// Reused for the keys a stage names as ready.
    ready: Vec<u64>,
    seq: u64,
    /// Reused by the stages' contexts.
    injected: Vec<(Direction, Vec<u8>)>,
    emitted: Vec<(Instant, Vec<u8>)>,
    segmenter: Segmenter,
}

/// The stages of a relay, shared by its workers (see the module documentation).
pub struct Pipeline {
    inner: Mutex<Inner>,
    names: Vec<(String, String, Option<String>, bool)>,
    /// The stages that decide later, with their wakers.
    wakers: Vec<(usize, Waker)>,
    segment_errors: AtomicU64,
}

/// Builds a [`Pipeline`]: stages in the order packets cross them.
#[derive(Default)]
pub struct PipelineBuilder {
    stages: Vec<Stage>,
}

impl PipelineBuilder {
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
        let wire_sized = processor.wire_sized();
        self.stages.push(Stage {
            processor,
            filter,
            wire_sized,
            counters: Default::default(),
        });
        self
    }

    /// Whether no stage was added.
    pub fn is_empty(&self) -> bool {
        self.stages.is_empty()
    }

    /// The pipeline.
    pub fn build(self) -> Pipeline {
        let names = self
            .stages
            .iter()
            .map(|s| {
                (
                    s.processor.name().to_string(),
                    s.processor.describe(),
                    s.filter.as_ref().map(|f| f.to_string()),
                    s.wire_sized,
                )
            })
            .collect();
        let wakers = self
            .stages
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.processor.waker().map(|w| (i, w)))
            .collect();
        Pipeline {
            wakers,
            inner: Mutex::new(Inner {
                stages: self.stages,
                held: Default::default(),
                parked: HashMap::new(),
                ready: Vec::new(),
                seq: 0,
                injected: Vec::new(),
                emitted: Vec::new(),
                segmenter: Segmenter::new(),
            }),
            names,
            segment_errors: AtomicU64::new(0),
        }
    }
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("stages", &self.names)
            .finish_non_exhaustive()
    }
}

impl Pipeline {
    /// A builder.
    pub fn builder() -> PipelineBuilder {
        PipelineBuilder::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A stage that panicked leaves its own state as it was; the pipeline's stays usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
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
        let mut inner = self.lock();
        inner.run_borrowed(
            0,
            direction,
            hdr,
            packet,
            now,
            now,
            out,
            &self.segment_errors,
        )
    }

    /// Sends on the held packets of `direction` that are due at `now`.
    pub fn release(&self, direction: Direction, now: Instant, out: &mut Vec<Out>) {
        let mut inner = self.lock();
        let d = direction.index();
        // Bounded: each turn removes one held packet; packets a stage holds again are due
        // later than `now` or are released in the same turn only if due.
        let mut budget = inner.held[d].len() * 4 + 16;
        while budget > 0 {
            budget -= 1;
            let due = inner.held[d].peek().is_some_and(|Reverse(h)| h.at <= now);
            if !due {
                break;
            }
            let Some(Reverse(h)) = inner.held[d].pop() else {
                break;
            };
            inner.stages[h.by].counters[d]
                .held
                .fetch_sub(1, Ordering::Relaxed);
            inner.run_owned(
                h.next,
                direction,
                h.hdr,
                h.data,
                h.at,
                now,
                out,
                &self.segment_errors,
            );
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
        if self.wakers.is_empty() {
            return;
        }
        let mut inner = self.lock();
        let d = direction.index();
        for (i, waker) in &self.wakers {
            // Cleared first: a decision made from now on wakes the workers again.
            waker.clear(direction);
            let mut keys = std::mem::take(&mut inner.ready);
            inner.stages[*i].processor.ready(direction, &mut keys);
            for key in keys.drain(..) {
                let Some(p) = inner.parked.remove(&(*i, key)) else {
                    continue; // not held (any more): the stage's mistake, ignored
                };
                inner.stages[*i].counters[d]
                    .held
                    .fetch_sub(1, Ordering::Relaxed);
                let Parked {
                    dir,
                    hdr,
                    arrival,
                    mut data,
                } = p;
                let fate = inner.call_stage(
                    *i,
                    dir,
                    hdr,
                    &mut data,
                    arrival,
                    now,
                    out,
                    &self.segment_errors,
                    |stage, pkt, ctx| stage.resume(key, pkt, ctx),
                );
                if fate == Fate::Write {
                    inner.run_owned(
                        *i + 1,
                        dir,
                        hdr,
                        data,
                        arrival,
                        now,
                        out,
                        &self.segment_errors,
                    );
                }
            }
            inner.ready = keys;
        }
    }

    /// When the next held packet of `direction` is due.
    pub fn next_due(&self, direction: Direction) -> Option<Instant> {
        self.lock().held[direction.index()]
            .peek()
            .map(|Reverse(h)| h.at)
    }

    /// The counters of every stage.
    pub fn snapshot(&self) -> Vec<StageSnapshot> {
        let inner = self.lock();
        inner
            .stages
            .iter()
            .zip(&self.names)
            .map(|(stage, (name, description, filter, wire_sized))| {
                let extra = stage.processor.counters();
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
                    name: name.clone(),
                    description: description.clone(),
                    filter: filter.clone(),
                    wire_sized: *wire_sized,
                    directions: [dir(0), dir(1)],
                }
            })
            .collect()
    }

    /// Super-packets that could not be segmented (malformed) and were dropped.
    pub fn segment_errors(&self) -> u64 {
        self.segment_errors.load(Ordering::Relaxed)
    }

    /// Tells every stage the relay stops; held packets are dropped (and counted).
    pub fn finish(&self) {
        let mut inner = self.lock();
        for d in 0..2 {
            while let Some(Reverse(h)) = inner.held[d].pop() {
                let c = &inner.stages[h.by].counters[d];
                c.held.fetch_sub(1, Ordering::Relaxed);
                c.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
        for ((by, _), p) in std::mem::take(&mut inner.parked) {
            let c = &inner.stages[by].counters[p.dir.index()];
            c.held.fetch_sub(1, Ordering::Relaxed);
            c.dropped.fetch_add(1, Ordering::Relaxed);
        }
        for s in &mut inner.stages {
            s.processor.finish();
        }
    }
}

impl Inner {
    /// Runs an owned packet from stage `from`; what reaches the end goes to `out`.
    #[allow(clippy::too_many_arguments)]
    fn run_owned(
        &mut self,
        from: usize,
        dir: Direction,
        hdr: VnetHdr,
        mut data: Vec<u8>,
        arrival: Instant,
        now: Instant,
        out: &mut Vec<Out>,
        seg_errors: &AtomicU64,
    ) {
        if self.run_borrowed(from, dir, hdr, &mut data, arrival, now, out, seg_errors)
            == Fate::Write
        {
            out.push(Out {
                direction: dir,
                hdr,
                data,
            });
        }
    }

    /// Runs a packet in the caller's buffer from stage `from`.
    #[allow(clippy::too_many_arguments)]
    fn run_borrowed(
        &mut self,
        from: usize,
        dir: Direction,
        hdr: VnetHdr,
        data: &mut [u8],
        arrival: Instant,
        now: Instant,
        out: &mut Vec<Out>,
        seg_errors: &AtomicU64,
    ) -> Fate {
        let d = dir.index();
        for i in from..self.stages.len() {
            if self.stages[i].wire_sized && (hdr.is_gso() || hdr.needs_csum()) {
                let mut segments = Vec::new();
                match self
                    .segmenter
                    .segment(&hdr, data, |seg: &[u8]| segments.push(seg.to_vec()))
                {
                    Ok(_) => {
                        for seg in segments {
                            self.run_owned(
                                i,
                                dir,
                                VnetHdr::NONE,
                                seg,
                                arrival,
                                now,
                                out,
                                seg_errors,
                            );
                        }
                    }
                    Err(e) => {
                        let n = seg_errors.fetch_add(1, Ordering::Relaxed) + 1;
                        if n <= 10 || n.is_multiple_of(1000) {
                            log::warn!(
                                "a super-packet could not be segmented ({e}); dropped ({n} so far)"
                            );
                        }
                    }
                }
                return Fate::Taken;
            }
            let stage = &mut self.stages[i];
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
            let fate = self.call_stage(
                i,
                dir,
                hdr,
                data,
                arrival,
                now,
                out,
                seg_errors,
                |stage, pkt, ctx| stage.process(pkt, ctx),
            );
            if fate == Fate::Taken {
                return Fate::Taken;
            }
        }
        Fate::Write
    }

    /// Asks stage `i` about a packet (`call`: `process`, or `resume` of a held one) and acts on
    /// its verdict: `Write` when it goes on unchanged to stage `i + 1`, in the caller's buffer.
    #[allow(clippy::too_many_arguments)]
    fn call_stage(
        &mut self,
        i: usize,
        dir: Direction,
        hdr: VnetHdr,
        data: &mut [u8],
        arrival: Instant,
        now: Instant,
        out: &mut Vec<Out>,
        seg_errors: &AtomicU64,
        call: impl FnOnce(&mut dyn Processor, &mut Packet<'_>, &mut Ctx<'_>) -> Verdict,
    ) -> Fate {
        let d = dir.index();
        let stage = &mut self.stages[i];
        let mut injected = std::mem::take(&mut self.injected);
        let mut emitted = std::mem::take(&mut self.emitted);
        let mut packet = Packet {
            data: &mut *data,
            replaced: None,
            direction: dir,
            arrival,
            gso: hdr,
        };
        let verdict = {
            let mut ctx = Ctx {
                now,
                injected: &mut injected,
                emitted: &mut emitted,
            };
            call(stage.processor.as_mut(), &mut packet, &mut ctx)
        };
        let replaced = packet.replaced.take();
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
        let emitted_now = std::mem::take(&mut emitted);
        self.emitted = emitted;
        for (at, pkt) in emitted_now {
            self.hold_or_run(i, i + 1, dir, VnetHdr::NONE, pkt, at, now, out, seg_errors);
        }
        match (verdict, replaced) {
            (Verdict::Drop, _) => {
                self.stages[i].counters[d]
                    .dropped
                    .fetch_add(1, Ordering::Relaxed);
                Fate::Taken
            }
            (Verdict::Forward, None) => Fate::Write,
            (Verdict::Forward, Some(new)) => {
                self.run_owned(i + 1, dir, hdr, new, arrival, now, out, seg_errors);
                Fate::Taken
            }
            (Verdict::Delay(at), replaced) => {
                let pkt = replaced.unwrap_or_else(|| data.to_vec());
                self.hold_or_run(i, i + 1, dir, hdr, pkt, at, now, out, seg_errors);
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

    /// Holds a packet until `at` (counted against stage `by`), or runs it at once if due.
    #[allow(clippy::too_many_arguments)]
    fn hold_or_run(
        &mut self,
        by: usize,
        next: usize,
        dir: Direction,
        hdr: VnetHdr,
        data: Vec<u8>,
        at: Instant,
        now: Instant,
        out: &mut Vec<Out>,
        seg_errors: &AtomicU64,
    ) {
        let d = dir.index();
        if at <= now {
            self.run_owned(next, dir, hdr, data, at, now, out, seg_errors);
            return;
        }
        let c = &self.stages[by].counters[d];
        c.delayed.fetch_add(1, Ordering::Relaxed);
        c.held.fetch_add(1, Ordering::Relaxed);
        self.seq += 1;
        self.held[d].push(Reverse(Held {
            at,
            seq: self.seq,
            next,
            by,
            hdr,
            data,
        }));
    }
}
