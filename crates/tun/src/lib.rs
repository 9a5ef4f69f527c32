//! TUN devices and the packet relay between two of them.
//!
//! * [`device`] opens TUN devices through `/dev/net/tun` and the `TUNSETIFF` ioctl (with any
//!   flag the kernel offers, so later engines can ask for `IFF_VNET_HDR` or multi-queue);
//! * [`packet`] decodes an IP packet into a one-line summary (pure, no I/O);
//! * [`relay`] copies packets between two [`relay::PacketIo`] endpoints, counting and logging
//!   them; the device I/O is behind that trait so the packet logic is unit-tested without a
//!   kernel.
#![deny(missing_docs)]

pub mod device;
pub mod packet;
pub mod relay;

pub use device::{DeviceError, TunDevice, TunOptions};
pub use relay::{PacketLog, Relay, RelayOptions, RelayStats};
