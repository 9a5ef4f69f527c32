//! TUN (and TAP) devices, the packet relay between two of them, and the pipeline of stages
//! every packet crosses on the way — where your code watches, breaks and rewrites traffic.
//!
//! # Your code on the path: [`Processor`]
//!
//! A stage gets one packet at a time ([`Packet`]: the IP bytes, or the Ethernet frame between
//! TAP devices; its [`Direction`]; when it was read) and answers a [`Verdict`] — forward
//! (changed or not), drop, or delay until a time — and may put packets on the path through its
//! [`Ctx`] (an answer to the sender, a copy).
//! A stage that needs packets as a wire carries them says so ([`Processor::wire_sized`]) and
//! gets GSO super-packets segmented ([`gso`]); the others see super-packets untouched, so the
//! fast path stays fast. The full story, with an example, is in [`pipeline`]; a program runs
//! its stages with `hostkit::tunnel::Relay::builder().processor(p).run()` (the root
//! package), which sets up, routes and tears down exactly as `hostkit tun up`.
//!
//! Built-in stages: capture to pcapng ([`pcapng::CaptureStage`]), tc-netem-style
//! impairment ([`impair::ImpairStage`]) and a program in any language over a Unix socket
//! ([`external::ExternalStage`], which decides packets later: [`Verdict::Hold`]); any stage
//! can be limited to the packets a tcpdump expression matches ([`filter::Filter`]).
//!
//! # The rest
//!
//! * the devices (`device.rs`): [`TunDevice`] opens TUN devices — or TAP devices, which carry
//!   Ethernet frames ([`DeviceMode`]) — through `/dev/net/tun` and the `TUNSETIFF` ioctl, with
//!   `IFF_VNET_HDR`, multi-queue and `TUNSETOFFLOAD` as a [`DeviceSetup`] asks;
//! * [`packet`] decodes an IP packet or an Ethernet frame into a one-line summary and finds
//!   the IP header in a frame ([`LinkLayer`]; pure, no I/O);
//! * the relay (`relay/`): [`Relay`] copies packets between two [`PacketIo`] endpoints, counting
//!   ([`RelayStats`]) and logging ([`PacketLog`]) them and running them through the
//!   [`Pipeline`] when there is one (`relay/forward.rs`), with two engines ([`Engine`]:
//!   `relay/simple.rs`, `relay/fast.rs`); the device I/O is behind that trait so the packet
//!   logic is unit-tested without a kernel;
//! * [`EngineProfile`] (`profile.rs`): everything the engine and the options decide — the
//!   [`DeviceSetup`], the [`RelayOptions`], the transmit queue length, the nice value — resolved
//!   once (pure).
#![deny(missing_docs)]

mod device;
pub mod external;
pub mod filter;
pub mod gso;
pub mod impair;
pub mod packet;
pub mod pcapng;
pub mod pipeline;
mod profile;
mod relay;

pub use device::{
    DeviceError, DeviceMode, DeviceSetup, TunDevice, TunOptions, offload_names, validate_name,
};
pub use packet::LinkLayer;
pub use pipeline::{Ctx, Direction, Packet, Pipeline, Processor, Verdict};
pub use profile::{
    DEFAULT_COALESCE_US, EngineProfile, FAST_NICE, FAST_TXQUEUELEN, MAX_DEFAULT_QUEUES,
    ProfileError, ProfileOptions, default_queues,
};
pub use relay::{
    DirSnapshot, Engine, LogSink, PacketIo, PacketLog, Relay, RelayError, RelayOptions, RelayStats,
};
