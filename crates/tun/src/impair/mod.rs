//! Per-direction impairment in tc-netem(8)'s vocabulary: delay with jitter and a distribution,
//! loss (random or Gilbert-Elliott), duplication, reordering, corruption, a rate and a queue
//! limit, for the relay to act as a protocol lab.
//!
//! Pure logic, no I/O, no threads, no clock: the relay stage that drives it passes the time.
//!
//! * [`spec`]: the `--impair 'tun0->tun1: delay 10ms 2ms distribution normal loss 5%'` parser
//!   ([`ImpairConfig`], [`NetemSpec`]) and its canonical `Display`; units in [`units`];
//! * [`rng`]: xoshiro256** seeded by SplitMix64, one stream per direction, netem's correlated
//!   draw; `--seed N` makes every decision reproducible;
//! * [`dist`]: the delay distributions;
//! * [`engine`]: [`Impairment`], one direction's decisions ([`Verdict`]) and counters;
//! * [`queue`]: [`DelayQueue`], the packets waiting for their release time;
//! * [`ImpairStage`]: all of it as a stage of the relay's pipeline ([`crate::pipeline`]).
//!
//! Left out of netem: `loss state` (4-state model), `ecn`, `slot`, rate overheads and cell
//! sizes, rates as a percentage of the link speed, custom distribution tables.

pub mod dist;
pub mod engine;
pub mod queue;
pub mod rng;
pub mod spec;
mod stage;
pub mod units;

pub use dist::Distribution;
pub use engine::{Corruption, Delivery, DropCause, Fate, ImpairStats, Impairment, Verdict};
pub use queue::DelayQueue;
pub use rng::{Correlated, Rng, SplitMix64, os_seed};
pub use spec::{Chance, DEFAULT_LIMIT, Delay, ImpairConfig, Loss, NetemSpec, Reorder, SpecError};
pub use stage::ImpairStage;
pub use units::Percent;
