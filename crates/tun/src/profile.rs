//! The relay's decisions, resolved once from the options: how the devices are opened
//! ([`DeviceSetup`]), how the relay runs ([`RelayOptions`]), the devices' transmit queue length,
//! the workers' nice value, and the words `hostkit tun up` reports them with. Pure: options in,
//! decisions out (the CPU count is the one fact read from the system).

use std::time::Duration;

use crate::device::{DeviceSetup, OFFLOAD_PREFERENCE, offload_names};
use crate::relay::{Engine, LogSink, PacketLog, RelayOptions};

/// Transmit queue length the fast engine sets (the kernel's default of 500 overflows, and a
/// full TUN ring drops silently).
pub const FAST_TXQUEUELEN: u32 = 5000;
/// Nice value of the fast engine's workers: the relay is the network path, like the kernel's
/// softirqs it should win the CPU from the programs whose traffic it carries.
pub const FAST_NICE: i32 = -10;
/// Most queues per device the fast engine opens by default (one per CPU but one, up to this).
pub const MAX_DEFAULT_QUEUES: usize = 4;

/// The fast engine's default number of queues on a machine with `cpus` CPUs: one worker per
/// CPU but one, at least one and at most [`MAX_DEFAULT_QUEUES`]. The relay shares the machine
/// with the programs whose traffic it carries: measured on 2 CPUs with four TCP streams, one
/// worker carried more (and cost less CPU per GB) than one per CPU, whose workers competed
/// with the four iperf3 streams for the same two CPUs; one stream and UDP, carried by one
/// worker either way, were alike (docs/benchmarks.md).
pub fn default_queues(cpus: usize) -> usize {
    cpus.saturating_sub(1).clamp(1, MAX_DEFAULT_QUEUES)
}
/// The fast engine's interrupt moderation by default, in microseconds.
pub const DEFAULT_COALESCE_US: u64 = 50;

/// What was asked of the relay. `None` leaves a setting to the engine's default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ProfileOptions {
    /// The engine.
    pub engine: Engine,
    /// Queues per device; the fast engine only (default: [`default_queues`]).
    pub queues: Option<usize>,
    /// Nice value of the worker threads (default: [`FAST_NICE`] with the fast engine, unchanged
    /// with the simple one).
    pub nice: Option<i32>,
    /// Interrupt moderation; the fast engine only (default: [`DEFAULT_COALESCE_US`]; zero: off).
    pub coalesce: Option<Duration>,
    /// Transmit queue length of both devices (default: [`FAST_TXQUEUELEN`] with the fast
    /// engine, the kernel's with the simple one).
    pub txqueuelen: Option<u32>,
    /// Packet-log level. The log must see wire-sized packets, so with the fast engine it turns
    /// the offloads off (the kernel then segments and checksums) instead of splitting
    /// super-packets in software.
    pub log: PacketLog,
}

/// Options that contradict each other.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProfileError {
    /// Queues asked of the simple engine, which opens one per device.
    #[error(
        "--queues applies to the fast engine only: the simple engine uses one queue per device"
    )]
    QueuesWithSimpleEngine,
}

/// Everything the engine and the options decide, resolved once ([`EngineProfile::resolve`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineProfile {
    engine: Engine,
    log: PacketLog,
    device: DeviceSetup,
    txqueuelen: Option<u32>,
    nice: Option<i32>,
    coalesce: Option<Duration>,
}

impl EngineProfile {
    /// The options given, the engine's defaults for the rest; refuses `queues` with the simple
    /// engine.
    pub fn resolve(opts: &ProfileOptions) -> Result<EngineProfile, ProfileError> {
        EngineProfile::resolve_for_cpus(opts, available_cpus())
    }

    /// The engine without any tuning of the host: the kernel's transmit queue length, the
    /// process's own priority, no interrupt moderation (what `hostkit tun demo` runs). Queues
    /// and offloads are chosen as [`EngineProfile::resolve`] chooses them.
    pub fn untuned(engine: Engine, log: PacketLog) -> EngineProfile {
        EngineProfile::build(engine, log, None, available_cpus(), None, None, None)
    }

    /// [`EngineProfile::resolve`] on a machine with `cpus` CPUs.
    fn resolve_for_cpus(opts: &ProfileOptions, cpus: usize) -> Result<EngineProfile, ProfileError> {
        let fast = opts.engine == Engine::Fast;
        if !fast && opts.queues.is_some() {
            return Err(ProfileError::QueuesWithSimpleEngine);
        }
        Ok(EngineProfile::build(
            opts.engine,
            opts.log,
            opts.queues,
            cpus,
            opts.txqueuelen.or(fast.then_some(FAST_TXQUEUELEN)),
            opts.nice.or(fast.then_some(FAST_NICE)),
            fast.then(|| {
                opts.coalesce
                    .unwrap_or(Duration::from_micros(DEFAULT_COALESCE_US))
            }),
        ))
    }

    fn build(
        engine: Engine,
        log: PacketLog,
        queues: Option<usize>,
        cpus: usize,
        txqueuelen: Option<u32>,
        nice: Option<i32>,
        coalesce: Option<Duration>,
    ) -> EngineProfile {
        let device = match engine {
            Engine::Simple => DeviceSetup::plain(),
            Engine::Fast => DeviceSetup {
                vnet_hdr: true,
                queues: queues.unwrap_or_else(|| default_queues(cpus)),
                offloads: if log == PacketLog::Off {
                    OFFLOAD_PREFERENCE.to_vec()
                } else {
                    Vec::new()
                },
            },
        };
        EngineProfile {
            engine,
            log,
            device,
            txqueuelen,
            nice,
            // Only the fast engine moderates; zero is off.
            coalesce: coalesce.filter(|d| engine == Engine::Fast && !d.is_zero()),
        }
    }

    /// The engine.
    pub fn engine(&self) -> Engine {
        self.engine
    }

    /// The packet-log level.
    pub fn log(&self) -> PacketLog {
        self.log
    }

    /// How the devices are opened.
    pub fn device_setup(&self) -> &DeviceSetup {
        &self.device
    }

    /// The transmit queue length to set on both devices (`None`: leave the kernel's).
    pub fn txqueuelen(&self) -> Option<u32> {
        self.txqueuelen
    }

    /// The workers' nice value (`None`: leave the process's).
    pub fn nice(&self) -> Option<i32> {
        self.nice
    }

    /// The interrupt moderation (`None`: off).
    pub fn coalesce(&self) -> Option<Duration> {
        self.coalesce
    }

    /// Whether the offloads are off because of the packet log (the fast engine's devices would
    /// otherwise have them).
    pub fn log_turns_offloads_off(&self) -> bool {
        self.engine == Engine::Fast && self.log != PacketLog::Off
    }

    /// The relay's settings, its packet log going to `sink`, without stages (add them with
    /// [`RelayOptions::pipeline`]).
    pub fn relay_options(&self, sink: LogSink) -> RelayOptions {
        RelayOptions {
            engine: self.engine,
            log: self.log,
            sink,
            nice: self.nice,
            coalesce: self.coalesce,
            pipeline: None,
        }
    }

    /// `engine fast, 4 queue(s), offloads csum,…, nice -10, coalesce 50 µs`, with the queues
    /// each device has and the offloads in force (as opened, which can differ from what was
    /// asked: an existing single-queue device, a kernel without some offload).
    pub fn describe(&self, queues: usize, offloads: u32) -> String {
        format!(
            "engine {}, {queues} queue(s), offloads {}, nice {}, coalesce {} µs",
            self.engine.name(),
            offload_names(offloads),
            self.nice.unwrap_or(0),
            self.coalesce.map_or(0, |d| d.as_micros())
        )
    }
}

/// The CPUs this process may run on (1 if unknown).
fn available_cpus() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(opts: ProfileOptions, cpus: usize) -> EngineProfile {
        EngineProfile::resolve_for_cpus(&opts, cpus).unwrap()
    }

    fn fast() -> ProfileOptions {
        ProfileOptions {
            engine: Engine::Fast,
            ..Default::default()
        }
    }

    fn simple() -> ProfileOptions {
        ProfileOptions {
            engine: Engine::Simple,
            ..Default::default()
        }
    }

    #[test]
    fn fast_defaults() {
        let p = resolve(fast(), 8);
        assert_eq!(
            *p.device_setup(),
            DeviceSetup {
                vnet_hdr: true,
                queues: 4,
                offloads: OFFLOAD_PREFERENCE.to_vec(),
            }
        );
        assert_eq!(p.txqueuelen(), Some(5000));
        assert_eq!(p.nice(), Some(-10));
        assert_eq!(p.coalesce(), Some(Duration::from_micros(50)));
        assert!(!p.log_turns_offloads_off());
        let o = p.relay_options(std::sync::Arc::new(|_: &str| {}));
        assert_eq!(
            (o.engine, o.log, o.nice, o.coalesce),
            (
                Engine::Fast,
                PacketLog::Off,
                Some(-10),
                Some(Duration::from_micros(50))
            )
        );
        assert_eq!(
            p.describe(4, OFFLOAD_PREFERENCE[1]),
            "engine fast, 4 queue(s), offloads csum,tso4,tso6,tso-ecn, nice -10, coalesce 50 µs"
        );
    }

    #[test]
    fn fast_queues_default_to_one_per_cpu_but_one_at_least_one_at_most_four() {
        for (cpus, queues) in [(0, 1), (1, 1), (2, 1), (3, 2), (4, 3), (5, 4), (64, 4)] {
            assert_eq!(
                resolve(fast(), cpus).device_setup().queues,
                queues,
                "{cpus}"
            );
        }
    }

    #[test]
    fn simple_defaults() {
        let p = resolve(simple(), 8);
        assert_eq!(*p.device_setup(), DeviceSetup::plain());
        assert_eq!(p.txqueuelen(), None);
        assert_eq!(p.nice(), None);
        assert_eq!(p.coalesce(), None);
        assert_eq!(
            p.describe(1, 0),
            "engine simple, 1 queue(s), offloads none, nice 0, coalesce 0 µs"
        );
    }

    #[test]
    fn the_simple_engine_ignores_coalescing_and_refuses_queues() {
        let p = resolve(
            ProfileOptions {
                coalesce: Some(Duration::from_micros(50)),
                ..simple()
            },
            8,
        );
        assert_eq!(p.coalesce(), None);
        let err = EngineProfile::resolve_for_cpus(
            &ProfileOptions {
                queues: Some(4),
                ..simple()
            },
            8,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "--queues applies to the fast engine only: the simple engine uses one queue per device"
        );
    }

    #[test]
    fn the_packet_log_turns_the_fast_engines_offloads_off() {
        for log in [PacketLog::Brief, PacketLog::Decoded] {
            let p = resolve(ProfileOptions { log, ..fast() }, 2);
            assert!(p.device_setup().offloads.is_empty(), "{log:?}");
            assert!(p.device_setup().vnet_hdr);
            assert!(p.log_turns_offloads_off());
            assert_eq!(p.relay_options(std::sync::Arc::new(|_: &str| {})).log, log);
            let p = resolve(ProfileOptions { log, ..simple() }, 2);
            assert!(!p.log_turns_offloads_off(), "the simple engine has none");
        }
    }

    #[test]
    fn explicit_options_win() {
        let p = resolve(
            ProfileOptions {
                queues: Some(7),
                nice: Some(0),
                coalesce: Some(Duration::from_micros(10)),
                txqueuelen: Some(1000),
                ..fast()
            },
            2,
        );
        assert_eq!(p.device_setup().queues, 7);
        assert_eq!(p.nice(), Some(0), "0 is normal priority, set explicitly");
        assert_eq!(p.coalesce(), Some(Duration::from_micros(10)));
        assert_eq!(p.txqueuelen(), Some(1000));
        let p = resolve(
            ProfileOptions {
                nice: Some(5),
                txqueuelen: Some(2000),
                ..simple()
            },
            2,
        );
        assert_eq!((p.nice(), p.txqueuelen()), (Some(5), Some(2000)));
    }

    #[test]
    fn zero_coalescing_is_off() {
        let p = resolve(
            ProfileOptions {
                coalesce: Some(Duration::ZERO),
                ..fast()
            },
            2,
        );
        assert_eq!(p.coalesce(), None);
        assert!(p.describe(2, 0).ends_with("nice -10, coalesce 0 µs"));
    }

    #[test]
    fn untuned_leaves_the_host_alone() {
        let p = EngineProfile::untuned(Engine::Fast, PacketLog::Decoded);
        assert!(p.device_setup().vnet_hdr && p.device_setup().offloads.is_empty());
        assert!((1..=MAX_DEFAULT_QUEUES).contains(&p.device_setup().queues));
        assert_eq!((p.txqueuelen(), p.nice(), p.coalesce()), (None, None, None));
    }
}
