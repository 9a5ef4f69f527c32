//! TUN devices and the packet relay between two of them.
//!
//! * [`device`] opens TUN devices through `/dev/net/tun` and the `TUNSETIFF` ioctl, with
//!   `IFF_VNET_HDR`, multi-queue and `TUNSETOFFLOAD` for the fast engine;
//! * [`packet`] decodes an IP packet into a one-line summary (pure, no I/O);
//! * [`relay`] copies packets between two [`relay::PacketIo`] endpoints, counting and logging
//!   them (`relay/forward.rs`), with two engines (`relay/simple.rs`, `relay/fast.rs`); the
//!   device I/O is behind that trait so the packet logic is unit-tested without a kernel.
#![deny(missing_docs)]

pub mod device;
pub mod packet;
mod profile;
pub mod relay;

pub use device::{DeviceError, DeviceSetup, TunDevice, TunOptions};
pub use profile::{
    DEFAULT_COALESCE_US, EngineProfile, FAST_NICE, FAST_TXQUEUELEN, MAX_DEFAULT_QUEUES,
    ProfileError, ProfileOptions,
};
pub use relay::{PacketLog, Relay, RelayOptions, RelayStats};
