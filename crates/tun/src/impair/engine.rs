//! [`Impairment`]: one direction's netem, deciding each packet's fate.
//!
//! The order of decisions, and of random draws, follows the kernel's `netem_enqueue()`:
//!
//! 1. **duplicate**: with its chance the packet gets a second copy;
//! 2. **loss**: a loss event removes one copy (so a duplicated packet that is "lost" still
//!    goes out once, as in netem); no copy left → dropped (loss);
//! 3. **corrupt**: with its chance one random bit of one random byte is to be flipped;
//! 4. **limit**: with `limit` packets already held, the packet (and its duplicate) is
//!    tail-dropped (limit);
//! 5. the duplicate, if any, goes through steps 2–6 itself (its own loss, corruption, limit,
//!    reorder and delay; it is never duplicated again), before the original, as netem
//!    re-enqueues it at the root;
//! 6. **reorder**: once `gap − 1` packets have been delayed since the last reordered one, each
//!    packet is sent at once with the reorder chance (ahead of the held ones: [`DelayQueue::push_front`])
//!    and the count restarts; otherwise **delay**: `delay ± jitter` drawn from the
//!    distribution, and with **rate** the packet waits behind the last held packet and for its
//!    own serialization time, `len · 8 / rate` (netem's `packet_time_ns`, in whole ns).
//!
//! The engine does no I/O and reads no clock: the caller passes `now_ns`, flips the bits a
//! [`Corruption`] names, and puts each delivered copy in the engine's [`DelayQueue`] with
//! [`Impairment::enqueue`] (the queue's length is what `limit` counts, its last release time
//! what `rate` queues behind).

use super::queue::DelayQueue;
use super::rng::{Correlated, Rng};
use super::spec::{Chance, ImpairConfig, Loss, NetemSpec};
use crate::pipeline::Direction;

/// Why a copy was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropCause {
    /// By the loss model.
    Loss,
    /// The queue held `limit` packets (tail drop).
    Limit,
}

/// A bit to flip: `packet[byte] ^= mask`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Corruption {
    /// Offset of the byte, below the packet's length.
    pub byte: usize,
    /// The bit, a single-bit mask.
    pub mask: u8,
}

impl Corruption {
    /// Flips the bit in `packet` (nothing if the packet is shorter than expected).
    pub fn apply(&self, packet: &mut [u8]) {
        if let Some(b) = packet.get_mut(self.byte) {
            *b ^= self.mask;
        }
    }
}

/// When and how one copy goes out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    /// When it is due, on the caller's clock (ns); may be before `now_ns` when a negative
    /// jitter outweighs the delay (then it is due at once, as in netem).
    pub release_ns: u64,
    /// Sent at once, ahead of the held packets, by `reorder`.
    pub reordered: bool,
    /// A bit to flip before sending.
    pub corrupt: Option<Corruption>,
}

/// What becomes of one copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Dropped.
    Dropped(DropCause),
    /// Sent, as described.
    Deliver(Delivery),
}

impl Fate {
    /// The delivery, unless dropped.
    pub fn delivery(&self) -> Option<&Delivery> {
        match self {
            Fate::Deliver(d) => Some(d),
            Fate::Dropped(_) => None,
        }
    }
}

/// The decision for one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// The packet itself.
    pub original: Fate,
    /// Its duplicate, if `duplicate` made one (enqueue it before the original, like netem).
    pub duplicate: Option<Fate>,
}

/// One direction's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct ImpairStats {
    /// Packets offered ([`Impairment::on_packet`] calls).
    pub seen: u64,
    /// Copies dropped by the loss model.
    pub dropped_loss: u64,
    /// Copies tail-dropped at the limit.
    pub dropped_limit: u64,
    /// Duplicates made.
    pub duplicated: u64,
    /// Copies sent ahead by `reorder`.
    pub reordered: u64,
    /// Delivered copies with a flipped bit.
    pub corrupted: u64,
    /// Copies held now (the queue's length).
    pub queued: usize,
}

/// The queue as the decisions so far left it (length and last release), counting the
/// copies of the current packet that are not enqueued yet.
struct Pending {
    len: usize,
    last: Option<u64>,
}

/// One direction's impairment: netem's decisions and the queue of delayed packets.
#[derive(Debug, Clone)]
pub struct Impairment<T> {
    spec: NetemSpec,
    rng: Rng,
    delay_cor: Correlated,
    loss_cor: Correlated,
    dup_cor: Correlated,
    reorder_cor: Correlated,
    corrupt_cor: Correlated,
    /// Gilbert-Elliott: in the bad state.
    bad_state: bool,
    /// Packets delayed since the last reordered one (netem's `q->counter`).
    counter: u32,
    queue: DelayQueue<T>,
    stats: ImpairStats,
}

fn correlated(chance: Option<Chance>) -> Correlated {
    Correlated::new(chance.map_or(0, |c| c.correlation.scaled()))
}

/// netem's test: the event happens when its (non-zero) scaled chance is `>=` the draw.
fn happens(chance: Option<Chance>, cor: &mut Correlated, rng: &mut Rng) -> bool {
    match chance {
        Some(c) if !c.probability.is_zero() => c.probability.scaled() >= cor.next(rng),
        _ => false,
    }
}

impl<T> Impairment<T> {
    /// An impairment following `spec`, drawing from `rng`.
    pub fn new(spec: NetemSpec, rng: Rng) -> Self {
        let loss_chance = match spec.loss {
            Some(Loss::Random(c)) => Some(c),
            _ => None,
        };
        Impairment {
            delay_cor: Correlated::new(spec.delay.map_or(0, |d| d.correlation.scaled())),
            loss_cor: correlated(loss_chance),
            dup_cor: correlated(spec.duplicate),
            reorder_cor: correlated(spec.reorder.map(|r| r.chance)),
            corrupt_cor: correlated(spec.corrupt),
            bad_state: false,
            counter: 0,
            queue: DelayQueue::new(),
            stats: ImpairStats::default(),
            spec,
            rng,
        }
    }

    /// The spec followed.
    pub fn spec(&self) -> &NetemSpec {
        &self.spec
    }

    /// Decides the fate of a packet of `len` bytes arriving at `now_ns`. Every delivered copy
    /// must then be [`Impairment::enqueue`]d (or sent at once if `reordered`), or the limit
    /// and rate accounting drift.
    pub fn on_packet(&mut self, now_ns: u64, len: usize) -> Verdict {
        self.stats.seen += 1;
        let mut copies = 1;
        if happens(self.spec.duplicate, &mut self.dup_cor, &mut self.rng) {
            copies += 1;
        }
        if self.loss_event() {
            copies -= 1;
        }
        if copies == 0 {
            self.stats.dropped_loss += 1;
            return Verdict {
                original: Fate::Dropped(DropCause::Loss),
                duplicate: None,
            };
        }
        let duplicated = copies > 1;
        if duplicated {
            self.stats.duplicated += 1;
        }
        let corrupt = self.corruption(len);
        let mut pending = Pending {
            len: self.queue.len(),
            last: self.queue.last_release(),
        };
        if pending.len >= self.limit() {
            self.stats.dropped_limit += copies;
            let dropped = Fate::Dropped(DropCause::Limit);
            return Verdict {
                original: dropped,
                duplicate: duplicated.then_some(dropped),
            };
        }
        let duplicate = duplicated.then(|| self.duplicate_copy(now_ns, len, &mut pending));
        let original = Fate::Deliver(self.schedule(now_ns, len, corrupt, &mut pending));
        Verdict {
            original,
            duplicate,
        }
    }

    /// Holds a delivered copy until its release time (a reordered one goes to the head).
    pub fn enqueue(&mut self, delivery: &Delivery, item: T) {
        if delivery.reordered {
            self.queue.push_front(delivery.release_ns, item);
        } else {
            self.queue.push(delivery.release_ns, item);
        }
    }

    /// The next copy due at `now_ns`, if any.
    pub fn pop_ready(&mut self, now_ns: u64) -> Option<T> {
        self.queue.pop_ready(now_ns)
    }

    /// When the next held copy is due (for the caller's timer).
    pub fn next_release(&self) -> Option<u64> {
        self.queue.next_release()
    }

    /// The held copies.
    pub fn queue(&self) -> &DelayQueue<T> {
        &self.queue
    }

    /// Removes every held copy (on shutdown, or to flush).
    pub fn drain_all(&mut self) -> Vec<T> {
        self.queue.drain_all()
    }

    /// The counters.
    pub fn stats(&self) -> ImpairStats {
        ImpairStats {
            queued: self.queue.len(),
            ..self.stats
        }
    }

    fn limit(&self) -> usize {
        usize::try_from(self.spec.limit).unwrap_or(usize::MAX)
    }

    /// Steps 2–6 for a duplicate (netem re-enqueues it at the root, marked not to be
    /// duplicated again).
    fn duplicate_copy(&mut self, now_ns: u64, len: usize, pending: &mut Pending) -> Fate {
        if self.loss_event() {
            self.stats.dropped_loss += 1;
            return Fate::Dropped(DropCause::Loss);
        }
        let corrupt = self.corruption(len);
        if pending.len >= self.limit() {
            self.stats.dropped_limit += 1;
            return Fate::Dropped(DropCause::Limit);
        }
        Fate::Deliver(self.schedule(now_ns, len, corrupt, pending))
    }

    /// netem's `loss_event()`.
    fn loss_event(&mut self) -> bool {
        match self.spec.loss {
            None => false,
            Some(Loss::Random(chance)) => happens(Some(chance), &mut self.loss_cor, &mut self.rng),
            Some(Loss::GilbertElliott {
                p,
                r,
                bad_loss,
                good_loss,
            }) => {
                // netem's loss_gilb_ell(): move state with one draw, then decide the loss
                // with a second one, by the state the packet found (before moving).
                let rng = &mut self.rng;
                if self.bad_state {
                    if rng.next_u32() < r.scaled() {
                        self.bad_state = false;
                    }
                    // The kernel keeps h = 1 − (1-h) and loses when the draw exceeds it.
                    rng.next_u32() > u32::MAX - bad_loss.scaled()
                } else {
                    if rng.next_u32() < p.scaled() {
                        self.bad_state = true;
                    }
                    rng.next_u32() < good_loss.scaled()
                }
            }
        }
    }

    /// The corruption draw; a byte and a bit when it hits a non-empty packet.
    fn corruption(&mut self, len: usize) -> Option<Corruption> {
        if !happens(self.spec.corrupt, &mut self.corrupt_cor, &mut self.rng) || len == 0 {
            return None;
        }
        let byte = self.rng.below(u32::try_from(len).unwrap_or(u32::MAX)) as usize;
        let mask = 1u8 << self.rng.below(8);
        Some(Corruption { byte, mask })
    }

    /// netem's `tabledist()`: the delay for one packet, ns (may be negative).
    fn delay_ns(&mut self) -> i128 {
        let Some(d) = self.spec.delay else {
            return 0;
        };
        let latency = i128::from(d.latency_ns);
        if d.jitter_ns == 0 {
            return latency;
        }
        let jitter = i128::from(d.jitter_ns);
        let rnd = self.delay_cor.next(&mut self.rng);
        match d.distribution {
            // Uniform in [latency − jitter, latency + jitter), by scaling the draw rather than
            // netem's `rnd % (2·jitter)`, so that correlation carries over.
            super::Distribution::Uniform => {
                latency - jitter + ((i128::from(rnd) * 2 * jitter) >> 32)
            }
            dist => {
                let u = (f64::from(rnd) + 0.5) / 4_294_967_296.0;
                latency + (d.jitter_ns as f64 * dist.sample(u)).round() as i128
            }
        }
    }

    /// Step 6: reorder or delay (and rate) one copy that will be sent.
    fn schedule(
        &mut self,
        now_ns: u64,
        len: usize,
        corrupt: Option<Corruption>,
        pending: &mut Pending,
    ) -> Delivery {
        let reorder = self
            .spec
            .reorder
            .filter(|r| !r.chance.probability.is_zero());
        let reordered = match reorder {
            Some(r) if self.counter >= r.gap.saturating_sub(1) => {
                happens(Some(r.chance), &mut self.reorder_cor, &mut self.rng)
            }
            _ => false,
        };
        let release_ns = if reordered {
            self.counter = 0;
            self.stats.reordered += 1;
            now_ns
        } else {
            let mut delay = self.delay_ns();
            let mut base = i128::from(now_ns);
            if let Some(rate) = self.spec.rate_bytes_per_sec {
                if let Some(last) = pending.last {
                    // The last held packet is the reference: serialize after it.
                    delay -= i128::from(last) - base;
                    delay = delay.max(0);
                    base = i128::from(last);
                }
                delay += (len as u128 * 1_000_000_000 / u128::from(rate)) as i128;
            }
            self.counter = self.counter.saturating_add(1);
            (base + delay).clamp(0, i128::from(u64::MAX)) as u64
        };
        if corrupt.is_some() {
            self.stats.corrupted += 1;
        }
        pending.len += 1;
        pending.last = Some(pending.last.map_or(release_ns, |l| l.max(release_ns)));
        Delivery {
            release_ns,
            reordered,
            corrupt,
        }
    }
}

impl ImpairConfig {
    /// The impairment of direction `dir`, if any, drawing from stream `dir.index() as u32` of
    /// `seed`: the same seed and packets give the same decisions in both directions.
    pub fn impairment<T>(&self, dir: Direction, seed: u64) -> Option<Impairment<T>> {
        self.get(dir)
            .map(|spec| Impairment::new(spec.clone(), Rng::stream(seed, dir.index() as u32)))
    }
}

#[cfg(test)]
mod tests;
