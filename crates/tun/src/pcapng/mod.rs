//! Packet capture to pcapng files, for the relay's `--pcap`.
//!
//! # Format
//! One Section Header Block, then one Interface Description Block per device (interface id =
//! its position in the list given to [`Capture::create`]) with `if_name` = the device name
//! and `if_tsresol` = 9, then one Enhanced Packet Block per packet: interface id, timestamp
//! in nanoseconds since 1970 (`CLOCK_REALTIME`), captured and original length (captured =
//! original cut to the snap length, [`DEFAULT_SNAPLEN`] unless set) and `epb_flags` with the
//! [`Direction`]. All little-endian (the byte-order magic says so).
//!
//! The link type is [`LinkType::LinuxSll2`] (276, Linux "cooked" v2: the interface and the
//! direction in a small header before the IP packet) unless [`CaptureOptions::link`] says
//! [`LinkType::Raw`] (101: the IP packet alone). Wireshark and tshark read both; the default
//! is the one the real tcpdump reads with two interfaces: **libpcap up to at least 1.10.3 (Debian 12's tcpdump) refuses a file
//! with more than one `LINKTYPE_RAW` interface** ("an interface has a type 101 different from
//! the type of the first interface": it compares each later IDB's link type with the first
//! one's DLT, 12); it reads a one-interface `Raw` file, and `LinuxSll2` files with any
//! number of interfaces (tcpdump then prints `In`/`Out`).
//!
//! Between TAP devices the packets are Ethernet frames and the link type is
//! [`LinkType::Ethernet`] (1): the frame as it crossed, MAC addresses and VLAN tags
//! included. Its `LINKTYPE_` and `DLT_` numbers are the same, so libpcap reads a file with
//! several such interfaces (`tcpdump -r FILE -e`).
//!
//! # Directions
//! The relay records each packet on the device it read it from, as [`Direction::Outbound`]
//! (the kernel sent it out of that device); a packet the relay itself injects into a device
//! may be recorded on that device as [`Direction::Inbound`].
//!
//! # Threads
//! [`PcapngWriter`] is `Send` and takes `&mut self`: a pipeline stage, which one worker at a
//! time calls, can own one. [`Capture`] is a [`PcapngWriter`] behind a [`Mutex`] for callers
//! that share it: a worker copies its packet into the one large buffer under the lock (no
//! allocation per packet), and the worker that fills the buffer writes it out. A channel to
//! a writer thread was measured slower (see the commit that added this module), and so was,
//! later, handing whole 256 KiB buffers to a writer thread and taking empty ones back: about
//! 0.3 s more relay CPU per GB captured, no throughput gained, one TCP stream on 2 cores
//! (the buffer crosses to the other core's cache; the kernel's copy into the file is most
//! of the cost either way).
//!
//! Timestamps are wall-clock ([`SystemTime`]); a caller holding an [`std::time::Instant`]
//! (a pipeline packet's arrival) converts it with an offset taken once.
//!
//! # Failure
//! A write error (disk full, EIO) is returned once, by the [`Capture::write`] or
//! [`Capture::flush`] call that met it. The capture is then failed: the file is cut back to
//! its last complete block and closed, later packets are only counted as
//! [`CaptureStats::drops`], and every later call returns `Ok`. The caller logs the one error
//! and goes on relaying.
//!
//! # Rotation
//! With [`CaptureOptions::rotation`], a packet that would take the current file past
//! [`Rotation::max_bytes`] (headers included) closes it, and a new file starts with its own
//! Section Header and Interface Description Blocks (a file always holds at least one
//! packet, however small `max_bytes` is). The file being written is always `FILE` (the path
//! given); closed files are `FILE.1` (newest) … `FILE.{N-1}` (oldest), `N` =
//! [`Rotation::files`]: at most `N` files, the oldest removed. With
//! `N` = 1 the file is started over.
//!
//! # Files
//! hostkit runs as root, and a capture path may lie in a directory that others can write:
//! a capture file is only ever created anew, with `O_CREAT | O_EXCL | O_NOFOLLOW |
//! O_CLOEXEC` and mode 0640, in the directory opened once at the start. An existing regular
//! file at the path is removed first (a hard link to another file is never written through);
//! a symbolic link, FIFO, socket, device or directory there is refused and left alone. There
//! is no default path. Every error names the path.

mod block;
mod file;
mod stage;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::SystemTime;

pub use stage::CaptureStage;
pub use writer::PcapngWriter;

/// The default snap length: how much of each packet is kept, as tcpdump's default.
pub const DEFAULT_SNAPLEN: u32 = 262_144;
/// The largest snap length accepted.
pub const MAX_SNAPLEN: u32 = 262_144;
/// The default size of the write buffer (1 MiB).
pub const DEFAULT_BUFFER: usize = 1 << 20;

/// The link-layer header type of every interface in a capture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LinkType {
    /// `LINKTYPE_RAW` (101): the IP packet as read from the TUN device, nothing before it.
    Raw,
    /// `LINKTYPE_LINUX_SLL2` (276): a 20-byte header before each IP packet with the
    /// EtherType, the device's interface index on this host (0 if there is none by that
    /// name) and the direction (`PACKET_HOST` inbound, `PACKET_OUTGOING` outbound), which
    /// tcpdump shows and filters on (`inbound`, `outbound`, `ifindex N`). The default.
    #[default]
    LinuxSll2,
    /// `LINKTYPE_ETHERNET` (1): an Ethernet frame as read from a TAP device, nothing before
    /// it.
    Ethernet,
}

impl LinkType {
    /// The `LINKTYPE_*` number written in each Interface Description Block.
    pub fn code(self) -> u16 {
        match self {
            LinkType::Raw => 101,
            LinkType::LinuxSll2 => 276,
            LinkType::Ethernet => 1,
        }
    }
}

/// Which way a packet went through the interface it is recorded on (`epb_flags` bits 0-1).
/// Relative to one device, unlike [`crate::pipeline::Direction`] (which device to which).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Into the interface's host side: the relay wrote it to the device (01).
    Inbound,
    /// Out of the host through the interface: the relay read it from the device (10).
    Outbound,
}

/// Size-based rotation, like `tcpdump -C`/`-W`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotation {
    /// A file is closed before it would grow past this many bytes.
    pub max_bytes: u64,
    /// How many files to keep, the one being written included (at least 1).
    pub files: u32,
}

/// Capture settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CaptureOptions {
    /// The link type of the interfaces.
    pub link: LinkType,
    /// Bytes kept of each packet (link-layer header included), 1 to [`MAX_SNAPLEN`].
    pub snaplen: u32,
    /// Rotation, if any.
    pub rotation: Option<Rotation>,
    /// Size of the write buffer (raised to hold the headers and one largest packet).
    pub buffer_size: usize,
}

impl Default for CaptureOptions {
    fn default() -> CaptureOptions {
        CaptureOptions {
            link: LinkType::LinuxSll2,
            snaplen: DEFAULT_SNAPLEN,
            rotation: None,
            buffer_size: DEFAULT_BUFFER,
        }
    }
}

/// A capture's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CaptureStats {
    /// Packets written to the files (what a reader finds; buffered ones count once flushed).
    pub packets: u64,
    /// Bytes written to the files, block headers included.
    pub bytes: u64,
    /// Packets lost to a write error: those buffered when it happened and every packet
    /// offered after it.
    pub drops: u64,
    /// Files started (1, plus one per rotation).
    pub files: u64,
    /// Whether a write error stopped the capture.
    pub failed: bool,
}

/// Why a capture could not be created or written.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// A system call on the path failed.
    #[error("{}: {op}: {cause}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What was being done, e.g. `cannot write`.
        op: &'static str,
        /// The cause (in the message, not repeated as a `source`).
        cause: std::io::Error,
    },
    /// A symbolic link is at the path.
    #[error("{}: a symbolic link; refusing to follow it", path.display())]
    SymbolicLink {
        /// The path.
        path: PathBuf,
    },
    /// Something else than a regular file is at the path.
    #[error("{}: not a regular file ({kind}); refusing to write a capture to it", path.display())]
    NotRegular {
        /// The path.
        path: PathBuf,
        /// What is there, e.g. `a FIFO`.
        kind: &'static str,
    },
    /// The path names a directory rather than a file (`/`, `dir/`, `..`).
    #[error("{}: names a directory, not a file", path.display())]
    NotAFile {
        /// The path.
        path: PathBuf,
    },
    /// Invalid settings.
    #[error("packet capture: {0}")]
    Invalid(String),
}

/// A [`PcapngWriter`] that the relay's worker threads share (`Send + Sync`).
#[derive(Debug)]
pub struct Capture {
    inner: Mutex<PcapngWriter>,
}

impl Capture {
    /// Creates the capture file (see [`PcapngWriter::create`]).
    pub fn create(
        path: impl AsRef<Path>,
        interfaces: &[&str],
        opts: CaptureOptions,
    ) -> Result<Capture, CaptureError> {
        Ok(Capture {
            inner: Mutex::new(PcapngWriter::create(path, interfaces, opts)?),
        })
    }

    fn lock(&self) -> MutexGuard<'_, PcapngWriter> {
        // The writer keeps itself consistent between calls; a panic elsewhere changes nothing.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a packet, timestamped now (taken under the lock, so that the file is in
    /// time order); see [`PcapngWriter::write`].
    pub fn write(&self, iface: u32, dir: Direction, pkt: &[u8]) -> Result<(), CaptureError> {
        let mut w = self.lock();
        w.write(iface, dir, SystemTime::now(), pkt)
    }

    /// Records a packet with a given timestamp; see [`PcapngWriter::write`].
    pub fn write_at(
        &self,
        iface: u32,
        dir: Direction,
        ts: SystemTime,
        pkt: &[u8],
    ) -> Result<(), CaptureError> {
        self.lock().write(iface, dir, ts, pkt)
    }

    /// Writes what is buffered; see [`PcapngWriter::flush`]. Dropping the capture flushes too.
    pub fn flush(&self) -> Result<(), CaptureError> {
        self.lock().flush()
    }

    /// The counters.
    pub fn stats(&self) -> CaptureStats {
        self.lock().stats()
    }

    /// The path being written.
    pub fn path(&self) -> PathBuf {
        self.lock().path().to_path_buf()
    }
}
