//! The packet pipeline: the stages every packet crosses between the two devices, per
//! direction — built-in capture and impairment, and your own code.
//!
//! # Writing a stage
//!
//! A stage is a [`Processor`]. The relay hands it one packet at a time — a raw IPv4 or IPv6
//! packet between TUN devices, an Ethernet frame between TAP devices ([`Packet::link`]), with
//! the [`Direction`] it travels and the time it was read — and the stage answers with a
//! [`Verdict`]:
//!
//! * [`Verdict::Forward`]: on to the next stage (and then to the other device), possibly
//!   changed in place through [`Packet::data_mut`];
//! * [`Verdict::Drop`]: the packet goes no further;
//! * [`Verdict::Delay`]: the pipeline holds the packet and sends it on to the next stage at
//!   that time (other packets keep flowing);
//! * [`Verdict::Hold`]: the pipeline holds the packet until the stage has decided it (below,
//!   *Deciding later*).
//!
//! Through the [`Ctx`] a stage may also put new packets on the path: [`Ctx::inject`] writes a
//! packet into the device at the end of a direction (an ICMP reply to the sender:
//! `ctx.inject(pkt.direction().reverse(), &reply)`), [`Ctx::emit_at`] sends a packet on to the
//! next stages at a given time (a duplicate).
//!
//! ```
//! use hostkit_tun::{Ctx, Packet, Processor, Verdict};
//!
//! /// Drops every IPv6 packet.
//! struct NoIpv6;
//!
//! impl Processor for NoIpv6 {
//!     fn name(&self) -> &str {
//!         "no-ipv6"
//!     }
//!     fn process(&mut self, pkt: &mut Packet<'_>, _ctx: &mut Ctx<'_>) -> Verdict {
//!         if pkt.data().first().is_some_and(|b| b >> 4 == 6) {
//!             Verdict::Drop
//!         } else {
//!             Verdict::Forward
//!         }
//!     }
//! }
//! ```
//!
//! # Frames (TAP mode)
//!
//! Between TAP devices (`hostkit tun up --mode tap`) a packet is a whole Ethernet frame:
//! destination and source MAC, any 802.1Q/802.1ad tags, the EtherType, the payload — ARP,
//! neighbour discovery, a VLAN-tagged frame, your own EtherType. [`Packet::link`] says which
//! ([`LinkLayer::Ethernet`]), and [`Packet::ip_offset`] / [`Packet::ip`] find the IP header
//! when there is one, so a stage written for IP works on both (`pkt.ip()` instead of
//! `pkt.data()`). What a stage injects or emits is of the same link layer: a frame in TAP mode.
//!
//! # Super-packets
//!
//! The fast engine moves TCP and UDP as GSO super-packets of up to 64 KiB: one read and one
//! write carry what the wire would carry as ~45 packets, and their checksums are only partial.
//! A stage that must see packets as a wire carries them (it counts, captures, drops or rewrites
//! single packets) says so with [`Processor::wire_sized`]: the pipeline then segments
//! super-packets for it — correct lengths, IP IDs, sequence numbers and checksums, as the
//! kernel would — and the segments go on as wire-sized packets to it and the stages after it.
//! When every segment of a super-packet comes through every stage unchanged (forwarded, never
//! asked for through [`Packet::data_mut`], nothing injected or emitted beside it), the device
//! gets the super-packet itself: one write instead of one per segment, so a stage that only
//! looks (a capture) costs its own work and no more. Stages that do not care see
//! super-packets untouched ([`Packet::gso`] says what one stands for), which keeps the fast
//! path fast. A stage that changes a packet's bytes should ask for wire-sized packets: then its
//! packets carry complete checksums, which it must keep right (see [`crate::gso`]).
//!
//! # Deciding later
//!
//! A stage that cannot answer at once — it asks another program (`--processor-exec`), a
//! database, a person — answers [`Verdict::Hold`] with a key of its choosing; the pipeline
//! keeps the packet (other packets keep flowing). When the stage has decided, from any thread,
//! it wakes the relay's workers through its [`Waker`] (given by [`Processor::waker`]); a worker
//! then asks it which held packets of its direction are decided ([`Processor::ready`]) and
//! hands each back to [`Processor::resume`], which answers as `process` does (and may change
//! the packet, inject, or hold it again). A stage must not block in `process` or `resume`:
//! every worker waits for it.
//!
//! # Threads
//!
//! The relay's workers share the pipeline: a stage is called by one worker at a time, so it
//! needs no locking of its own (it must be `Send`). With no stage at all the relay does not
//! touch the pipeline.

mod run;

use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;
use std::time::Instant;

use nix::sys::eventfd::{EfdFlags, EventFd};

pub use run::{
    DirStageSnapshot, Fate, FilteredStage, NoSuchSlot, Out, Pipeline, PipelineBuilder,
    StageCounters, StageSnapshot,
};

#[cfg(test)]
mod tests;

use crate::gso::VnetHdr;
use crate::packet::LinkLayer;

/// Which way a packet crosses: from the first device to the second, or back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// From the first device (`tun0`) to the second (`tun1`).
    Forward,
    /// From the second device to the first.
    Backward,
}

impl Direction {
    /// Both directions, `Forward` first.
    pub const BOTH: [Direction; 2] = [Direction::Forward, Direction::Backward];

    /// 0 for `Forward`, 1 for `Backward`.
    pub fn index(self) -> usize {
        match self {
            Direction::Forward => 0,
            Direction::Backward => 1,
        }
    }

    /// The direction with this index (0: `Forward`, anything else: `Backward`).
    pub fn from_index(i: usize) -> Direction {
        if i == 0 {
            Direction::Forward
        } else {
            Direction::Backward
        }
    }

    /// The other way.
    pub fn reverse(self) -> Direction {
        match self {
            Direction::Forward => Direction::Backward,
            Direction::Backward => Direction::Forward,
        }
    }
}

/// What a stage decides for a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// On to the next stage (with whatever changes the stage made).
    Forward,
    /// No further.
    Drop,
    /// Held by the pipeline, then on to the next stage at this time.
    Delay(Instant),
    /// Held by the pipeline under this key (unique among the packets the stage holds) until
    /// the stage names it in [`Processor::ready`]; then [`Processor::resume`] decides it.
    Hold(u64),
}

/// Wakes the relay's workers, from any thread, when a stage has decided packets it holds
/// ([`Verdict::Hold`]): one event descriptor per direction, which the workers wait on with
/// their devices. Clones share the descriptors.
#[derive(Debug, Clone)]
pub struct Waker {
    fds: Arc<[EventFd; 2]>,
}

impl Waker {
    /// A waker (two non-blocking event descriptors).
    pub fn new() -> std::io::Result<Waker> {
        let make =
            || EventFd::from_value_and_flags(0, EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC);
        Ok(Waker {
            fds: Arc::new([make()?, make()?]),
        })
    }

    /// Wakes the workers of `direction`: the stage has decided some of its held packets.
    pub fn wake(&self, direction: Direction) {
        // Fails only when the counter would overflow: then it is set anyway.
        let _ = self.fds[direction.index()].write(1);
    }

    /// The descriptor of `direction`, readable while a wake-up is pending.
    pub fn fd(&self, direction: Direction) -> BorrowedFd<'_> {
        self.fds[direction.index()].as_fd()
    }

    /// Takes the pending wake-up of `direction`, if any (before asking the stage).
    pub(crate) fn clear(&self, direction: Direction) {
        // Non-blocking: EAGAIN when nothing is pending.
        let _ = self.fds[direction.index()].read();
    }
}

/// One packet, as a stage sees it.
pub struct Packet<'a> {
    pub(crate) data: &'a mut [u8],
    pub(crate) replaced: Option<Vec<u8>>,
    /// Whether the stage asked for the bytes to change them ([`Packet::data_mut`]).
    pub(crate) touched: bool,
    pub(crate) direction: Direction,
    pub(crate) arrival: Instant,
    pub(crate) gso: VnetHdr,
    pub(crate) link: LinkLayer,
}

impl Packet<'_> {
    /// The packet: the IP packet (TUN), or the Ethernet frame (TAP, see [`Packet::link`]).
    pub fn data(&self) -> &[u8] {
        self.replaced.as_deref().unwrap_or(self.data)
    }

    /// What [`Packet::data`] starts with: the IP header ([`LinkLayer::Ip`], between TUN
    /// devices) or an Ethernet header ([`LinkLayer::Ethernet`], between TAP devices).
    pub fn link(&self) -> LinkLayer {
        self.link
    }

    /// Where the IP header starts in [`Packet::data`]: 0 between TUN devices; after the
    /// Ethernet header and any VLAN tags in a frame that carries IPv4 or IPv6; `None` for a
    /// frame that does not (ARP, another EtherType).
    pub fn ip_offset(&self) -> Option<usize> {
        crate::packet::ip_offset(self.link, self.data())
    }

    /// The IP packet inside (the whole packet between TUN devices), if any.
    pub fn ip(&self) -> Option<&[u8]> {
        let at = self.ip_offset()?;
        self.data().get(at..)
    }

    /// The packet, to change in place. Asking counts as a change: the segments of a
    /// super-packet a stage asked for are written one by one (see *Super-packets* above), so a
    /// stage that only sometimes changes a packet should ask only then.
    pub fn data_mut(&mut self) -> &mut [u8] {
        self.touched = true;
        match &mut self.replaced {
            Some(v) => v,
            None => self.data,
        }
    }

    /// Replaces the packet with other bytes (of any length).
    pub fn replace(&mut self, packet: Vec<u8>) {
        self.replaced = Some(packet);
    }

    /// Which way it travels.
    pub fn direction(&self) -> Direction {
        self.direction
    }

    /// When the relay read it.
    pub fn arrival(&self) -> Instant {
        self.arrival
    }

    /// The offload metadata: for a super-packet, what it stands for (its segment size and
    /// kind); [`VnetHdr::NONE`] for a wire-sized packet.
    pub fn gso(&self) -> &VnetHdr {
        &self.gso
    }
}

/// What a stage may do besides answering: put packets on the path.
pub struct Ctx<'a> {
    pub(crate) now: Instant,
    pub(crate) injected: &'a mut Vec<(Direction, Vec<u8>)>,
    pub(crate) emitted: &'a mut Vec<(Instant, Vec<u8>)>,
}

impl Ctx<'_> {
    /// The time the pipeline is working at.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Writes `packet` (a complete IP packet, or Ethernet frame between TAP devices) into the
    /// device at the end of `direction`, past every stage: `pkt.direction().reverse()`
    /// answers the sender.
    pub fn inject(&mut self, direction: Direction, packet: &[u8]) {
        self.injected.push((direction, packet.to_vec()));
    }

    /// Sends `packet` on to the stages after this one, in the current packet's direction, at
    /// `at` (now or later): a duplicate, or a packet the stage made.
    pub fn emit_at(&mut self, at: Instant, packet: &[u8]) {
        self.emitted.push((at, packet.to_vec()));
    }
}

/// A stage of the pipeline (see the module documentation).
pub trait Processor: Send {
    /// A short name for `tun status` and logs (`capture`, `impair`, `icmp-responder`).
    fn name(&self) -> &str;

    /// What it does, one line, for `tun status` (e.g. its settings).
    fn describe(&self) -> String {
        self.name().to_string()
    }

    /// Whether it must see wire-sized packets (then super-packets are segmented for it).
    fn wire_sized(&self) -> bool {
        false
    }

    /// Handles one packet.
    fn process(&mut self, packet: &mut Packet<'_>, ctx: &mut Ctx<'_>) -> Verdict;

    /// Counters of its own, per direction (`[Forward, Backward]`), e.g. `("duplicated", 3)`;
    /// the pipeline counts packets, bytes, drops and delays for every stage already.
    fn counters(&self) -> [Vec<(&'static str, u64)>; 2] {
        [Vec::new(), Vec::new()]
    }

    /// Called a few times a second while the relay runs, whatever the traffic (flush a file,
    /// so that a capture can be read while it grows).
    fn tick(&mut self) {}

    /// A stage that answers [`Verdict::Hold`]: the waker it wakes when it has decided held
    /// packets (asked once, when the pipeline is built).
    fn waker(&self) -> Option<Waker> {
        None
    }

    /// Appends to `keys` the keys of the held packets of `direction` it has decided (a
    /// worker of that direction asks after a wake-up); they go to [`Processor::resume`].
    fn ready(&mut self, direction: Direction, keys: &mut Vec<u64>) {
        let _ = (direction, keys);
    }

    /// Decides a packet it held under `key`, as [`Processor::process`] does (it may change the
    /// packet, inject, or even hold it again).
    fn resume(&mut self, key: u64, packet: &mut Packet<'_>, ctx: &mut Ctx<'_>) -> Verdict {
        let _ = (key, packet, ctx);
        Verdict::Forward
    }

    /// Called when the relay stops (flush a file, say what was lost).
    fn finish(&mut self) {}
}
