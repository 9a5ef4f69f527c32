//! The relay's view of a device: something packets are read from and written to.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};

use crate::device::TunDevice;
use crate::packet::LinkLayer;

/// One end of the relay: something packets are read from and written to.
pub trait PacketIo: Send + Sync {
    /// Reads one packet; `WouldBlock` when none is queued.
    fn recv(&self, buf: &mut [u8]) -> io::Result<usize>;
    /// Writes one packet.
    fn send(&self, pkt: &[u8]) -> io::Result<usize>;
    /// A short name for logs (the interface name).
    fn label(&self) -> &str;
    /// The descriptor to wait on and to name in the packet log.
    fn fd(&self) -> BorrowedFd<'_>;
    /// Bytes of per-packet metadata before the IP packet (a `virtio_net_hdr`, or 0).
    fn header_len(&self) -> usize {
        0
    }
    /// What each packet starts with (after any metadata header): an IP header (a TUN device,
    /// the default) or an Ethernet header (a TAP device).
    fn link(&self) -> LinkLayer {
        LinkLayer::Ip
    }
}

impl PacketIo for TunDevice {
    fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.read(buf)
    }
    fn send(&self, pkt: &[u8]) -> io::Result<usize> {
        self.write(pkt)
    }
    fn label(&self) -> &str {
        self.name()
    }
    fn fd(&self) -> BorrowedFd<'_> {
        self.as_fd()
    }
    fn header_len(&self) -> usize {
        if self.vnet_hdr() {
            crate::device::VNET_HDR_LEN
        } else {
            0
        }
    }
    fn link(&self) -> LinkLayer {
        self.mode().link()
    }
}
