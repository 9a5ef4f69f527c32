//! TUN devices and the packet relay between two of them.
//!
//! * the devices (`device.rs`): [`TunDevice`] opens TUN devices through `/dev/net/tun` and the
//!   `TUNSETIFF` ioctl, with `IFF_VNET_HDR`, multi-queue and `TUNSETOFFLOAD` as a
//!   [`DeviceSetup`] asks;
//! * [`packet`] decodes an IP packet into a one-line summary (pure, no I/O);
//! * the relay (`relay/`): [`Relay`] copies packets between two [`PacketIo`] endpoints, counting
//!   ([`RelayStats`]) and logging ([`PacketLog`]) them (`relay/forward.rs`), with two engines
//!   ([`Engine`]: `relay/simple.rs`, `relay/fast.rs`); the device I/O is behind that trait so
//!   the packet logic is unit-tested without a kernel;
//! * [`EngineProfile`] (`profile.rs`): everything the engine and the options decide — the
//!   [`DeviceSetup`], the [`RelayOptions`], the transmit queue length, the nice value — resolved
//!   once (pure).
#![deny(missing_docs)]

mod device;
pub mod filter;
pub mod gso;
pub mod impair;
pub mod packet;
pub mod pcapng;
pub mod pipeline;
mod profile;
mod relay;

pub use device::{DeviceError, DeviceSetup, TunDevice, TunOptions, offload_names, validate_name};
pub use pipeline::{Ctx, Direction, Packet, Pipeline, Processor, Verdict};
pub use profile::{
    DEFAULT_COALESCE_US, EngineProfile, FAST_NICE, FAST_TXQUEUELEN, MAX_DEFAULT_QUEUES,
    ProfileError, ProfileOptions,
};
pub use relay::{
    DirSnapshot, Engine, LogSink, PacketIo, PacketLog, Relay, RelayError, RelayOptions, RelayStats,
};
