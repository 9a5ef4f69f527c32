//! Opening TUN and TAP devices with `TUNSETIFF`.
//!
//! The `tun-tap` crate only sets `IFF_TUN|IFF_NO_PI`; hostkit needs to choose the flags itself
//! (`IFF_TAP`, `IFF_VNET_HDR`, `IFF_MULTI_QUEUE`) and to reset a persistent device's sticky
//! offload state, so the ioctls live here, behind safe functions.
//!
//! A TAP device (`IFF_TAP`) is the same driver carrying Ethernet frames instead of IP
//! packets; with `IFF_VNET_HDR` its `virtio_net_hdr` works as for TUN, its `csum_start` and
//! `hdr_len` counting from the start of the frame (observed: a TCP super-frame reads with
//! `csum_start` 34 = 14 + 20, `hdr_len` 66 = 14 + 20 + 32).

use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::packet::LinkLayer;

/// The longest interface name the kernel accepts (IFNAMSIZ - 1).
pub(crate) const MAX_NAME_LEN: usize = 15;

/// The raw ioctls (generated `unsafe fn`s); only the safe methods below call them.
mod sys {
    #![allow(missing_docs)]
    nix::ioctl_write_ptr_bad!(ioctl_tunsetiff, libc::TUNSETIFF, libc::ifreq);
    nix::ioctl_write_int_bad!(ioctl_tunsetoffload, libc::TUNSETOFFLOAD);
}
use sys::{ioctl_tunsetiff, ioctl_tunsetoffload};

/// Why a device could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// The name is empty, too long or has characters the kernel refuses.
    #[error("invalid interface name {name:?}: {reason}")]
    InvalidName {
        /// The offending name.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// `/dev/net/tun` does not exist.
    #[error(
        "{path} does not exist: load the tun module (modprobe tun) or create the node (mknod {path} c 10 200)"
    )]
    NoTunNode {
        /// The clone device's path.
        path: String,
    },
    /// Permission denied (CAP_NET_ADMIN missing).
    #[error("permission denied opening TUN device {name:?}: CAP_NET_ADMIN is needed (run as root)")]
    Permission {
        /// The device name.
        name: String,
    },
    /// A device of that name exists but is not a TUN/TAP device of the requested mode (or
    /// has other flags).
    #[error("{name:?} exists but is not a {} device of the requested type", mode.label())]
    NotTun {
        /// The device name.
        name: String,
        /// The mode asked for.
        mode: DeviceMode,
    },
    /// The (single-queue) device is already held by another process.
    #[error("TUN device {name:?} is busy: another process (a running relay?) holds it")]
    Busy {
        /// The device name.
        name: String,
    },
    /// Any other I/O error.
    #[error("cannot open TUN device {name:?}: {source}")]
    Io {
        /// The device name.
        name: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

/// What a device carries: IP packets (TUN, `IFF_TUN`) or Ethernet frames (TAP, `IFF_TAP`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum DeviceMode {
    /// IP packets, no link layer (`IFF_TUN`).
    #[default]
    Tun,
    /// Ethernet frames (`IFF_TAP`): ARP, neighbour discovery, VLAN tags, any EtherType.
    Tap,
}

impl DeviceMode {
    /// `tun` or `tap` (the word `ip tuntap … mode` takes).
    pub fn name(self) -> &'static str {
        match self {
            DeviceMode::Tun => "tun",
            DeviceMode::Tap => "tap",
        }
    }

    /// `TUN` or `TAP`, for messages.
    pub fn label(self) -> &'static str {
        match self {
            DeviceMode::Tun => "TUN",
            DeviceMode::Tap => "TAP",
        }
    }

    /// What its packets start with.
    pub fn link(self) -> LinkLayer {
        match self {
            DeviceMode::Tun => LinkLayer::Ip,
            DeviceMode::Tap => LinkLayer::Ethernet,
        }
    }

    /// The `TUNSETIFF` type flag.
    fn flag(self) -> libc::c_int {
        match self {
            DeviceMode::Tun => libc::IFF_TUN,
            DeviceMode::Tap => libc::IFF_TAP,
        }
    }
}

impl std::fmt::Display for DeviceMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// How to open a TUN or TAP device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunOptions {
    /// Interface name (≤ 15 bytes).
    pub name: String,
    /// TUN (IP packets) or TAP (Ethernet frames).
    pub mode: DeviceMode,
    /// Prepend a `virtio_net_hdr` to every packet (`IFF_VNET_HDR`).
    pub vnet_hdr: bool,
    /// Open one queue of a multi-queue device (`IFF_MULTI_QUEUE`).
    pub multi_queue: bool,
    /// Offload flags to accept on read (`TUNSETOFFLOAD`); set explicitly on every attach,
    /// since the state is per device and survives on persistent devices.
    pub offload: u32,
}

/// How the two devices of a relay are opened (what [`crate::EngineProfile`] decides for an
/// engine).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceSetup {
    /// Prepend a `virtio_net_hdr` to every packet (`IFF_VNET_HDR`).
    pub vnet_hdr: bool,
    /// Queues per device (multi-queue when more than one; an existing single-queue device
    /// gets one).
    pub queues: usize,
    /// Offload sets to try, best first (empty: offloads off, set explicitly to 0 — offload
    /// state is sticky on persistent devices).
    pub offloads: Vec<u32>,
}

impl DeviceSetup {
    /// One plain queue, no header, no offloads: the classic relay.
    pub fn plain() -> DeviceSetup {
        DeviceSetup {
            vnet_hdr: false,
            queues: 1,
            offloads: Vec::new(),
        }
    }
}

/// Checks an interface name the way the kernel's `dev_valid_name` does.
pub fn validate_name(name: &str) -> Result<(), DeviceError> {
    let bad = |reason| {
        Err(DeviceError::InvalidName {
            name: name.to_string(),
            reason,
        })
    };
    if name.is_empty() {
        return bad("empty");
    }
    if name.len() > MAX_NAME_LEN {
        return bad("longer than 15 bytes");
    }
    if name == "." || name == ".." {
        return bad("reserved name");
    }
    if name == "all" || name == "default" {
        // /proc/sys/net/ipv{4,6}/conf/{all,default} are not devices: the kernel refuses them.
        return bad("reserved: `all` and `default` name every device in /proc/sys/net/*/conf");
    }
    if name.contains('%') {
        return bad(
            "contains '%': a kernel name template (`tun%d`) gives a device hostkit cannot name in advance; choose the name",
        );
    }
    if name
        .bytes()
        .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace() || b == 0)
    {
        return bad("contains '/', ':', a NUL or white space");
    }
    Ok(())
}

/// An open TUN or TAP device queue. Closing it (drop) detaches; a non-persistent device
/// disappears with its last queue.
#[derive(Debug)]
pub struct TunDevice {
    fd: OwnedFd,
    name: String,
    mode: DeviceMode,
    vnet_hdr: bool,
}

/// Size of the `virtio_net_hdr` that precedes each packet on an `IFF_VNET_HDR` device.
pub(crate) const VNET_HDR_LEN: usize = 10;

/// Offload sets to try, best first: TUNSETOFFLOAD refuses unknown bits as a whole, and the
/// kernel accepts USO4 and USO6 only together (Linux ≥ 6.2).
pub(crate) const OFFLOAD_PREFERENCE: [u32; 3] = [
    libc::TUN_F_CSUM
        | libc::TUN_F_TSO4
        | libc::TUN_F_TSO6
        | libc::TUN_F_TSO_ECN
        | libc::TUN_F_USO4
        | libc::TUN_F_USO6,
    libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6 | libc::TUN_F_TSO_ECN,
    libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6,
];

/// Names the bits of an offload set (`csum,tso4,…`).
pub fn offload_names(flags: u32) -> String {
    let names: Vec<&str> = [
        (libc::TUN_F_CSUM, "csum"),
        (libc::TUN_F_TSO4, "tso4"),
        (libc::TUN_F_TSO6, "tso6"),
        (libc::TUN_F_TSO_ECN, "tso-ecn"),
        (libc::TUN_F_UFO, "ufo"),
        (libc::TUN_F_USO4, "uso4"),
        (libc::TUN_F_USO6, "uso6"),
    ]
    .iter()
    .filter(|(bit, _)| flags & bit != 0)
    .map(|&(_, n)| n)
    .collect();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(",")
    }
}

/// The TUN clone device.
pub(crate) const TUN_CLONE_PATH: &str = "/dev/net/tun";

impl TunDevice {
    /// Opens (creating if needed) the device described by `opts`.
    pub fn open(opts: &TunOptions) -> Result<TunDevice, DeviceError> {
        Self::open_at(Path::new(TUN_CLONE_PATH), opts)
    }

    /// Like [`TunDevice::open`] with another clone-device path (for tests of the error path).
    pub fn open_at(clone: &Path, opts: &TunOptions) -> Result<TunDevice, DeviceError> {
        Self::open_with(clone, opts, false, true)
    }

    fn open_with(
        clone: &Path,
        opts: &TunOptions,
        packet_info: bool,
        set_offload: bool,
    ) -> Result<TunDevice, DeviceError> {
        validate_name(&opts.name)?;
        let name = opts.name.clone();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC | libc::O_NONBLOCK)
            .open(clone)
            .map_err(|e| match e.kind() {
                io::ErrorKind::NotFound => DeviceError::NoTunNode {
                    path: clone.display().to_string(),
                },
                io::ErrorKind::PermissionDenied => DeviceError::Permission { name: name.clone() },
                _ => DeviceError::Io {
                    name: name.clone(),
                    source: e,
                },
            })?;
        let fd: OwnedFd = file.into();

        let mut flags = opts.mode.flag();
        if !packet_info {
            flags |= libc::IFF_NO_PI;
        }
        if opts.vnet_hdr {
            flags |= libc::IFF_VNET_HDR;
        }
        if opts.multi_queue {
            flags |= libc::IFF_MULTI_QUEUE;
        }
        let req = ifreq_with(&opts.name, flags as libc::c_short);
        // SAFETY: `fd` is an open /dev/net/tun descriptor and `req` a fully initialised ifreq
        // that lives across the call; TUNSETIFF only reads it.
        let res = unsafe { ioctl_tunsetiff(fd.as_raw_fd(), &req) };
        if let Err(errno) = res {
            return Err(match errno {
                nix::errno::Errno::EPERM | nix::errno::Errno::EACCES => {
                    DeviceError::Permission { name }
                }
                nix::errno::Errno::EINVAL => DeviceError::NotTun {
                    name,
                    mode: opts.mode,
                },
                nix::errno::Errno::EBUSY => DeviceError::Busy { name },
                other => DeviceError::Io {
                    name,
                    source: io::Error::from(other),
                },
            });
        }
        let dev = TunDevice {
            fd,
            name: read_back_name(&opts.name, &req),
            mode: opts.mode,
            vnet_hdr: opts.vnet_hdr,
        };
        if set_offload {
            dev.set_offload(opts.offload).map_err(|e| DeviceError::Io {
                name: dev.name.clone(),
                source: e,
            })?;
        }
        Ok(dev)
    }

    /// Puts an existing device's own settings back: attaches once with its flags (packet
    /// information header, `IFF_VNET_HDR`, multi-queue: the kernel keeps the last opener's),
    /// sets its offloads if known, and detaches. Needs no queue of ours to be attached.
    pub fn restore_settings(
        name: &str,
        mode: DeviceMode,
        pi: bool,
        vnet_hdr: bool,
        multi_queue: bool,
        offload: Option<u32>,
    ) -> Result<(), DeviceError> {
        let opts = TunOptions {
            name: name.to_string(),
            mode,
            vnet_hdr,
            multi_queue,
            offload: offload.unwrap_or(0),
        };
        let dev = Self::open_with(Path::new(TUN_CLONE_PATH), &opts, pi, offload.is_some())?;
        drop(dev);
        Ok(())
    }

    /// Opens `queues` queues of one device (multi-queue when more than one). An existing
    /// device keeps its kind: a single-queue one gets one queue, a multi-queue one is opened
    /// with the multi-queue flag even for one queue.
    pub fn open_queues(opts: &TunOptions, queues: usize) -> Result<Vec<TunDevice>, DeviceError> {
        let queues = queues.max(1);
        let mut first_opts = opts.clone();
        first_opts.multi_queue = queues > 1;
        let first = match Self::open(&first_opts) {
            Err(DeviceError::NotTun { .. }) => {
                // Retry with the other queue mode: the device exists with that one.
                first_opts.multi_queue = !first_opts.multi_queue;
                let dev = Self::open(&first_opts)?;
                if !first_opts.multi_queue {
                    return Ok(vec![dev]);
                }
                dev
            }
            other => other?,
        };
        let mut all = vec![first];
        for _ in 1..queues {
            all.push(Self::open(&first_opts)?);
        }
        Ok(all)
    }

    /// Sets the first offload set in `candidates` that the kernel accepts; returns it (0 if
    /// none was accepted, which leaves offloads off).
    pub fn negotiate_offload(&self, candidates: &[u32]) -> io::Result<u32> {
        for &flags in candidates {
            match self.set_offload(flags) {
                Ok(()) => return Ok(flags),
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => continue,
                Err(e) => return Err(e),
            }
        }
        self.set_offload(0)?;
        Ok(0)
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// TUN or TAP.
    pub fn mode(&self) -> DeviceMode {
        self.mode
    }

    /// Whether packets carry a `virtio_net_hdr`.
    pub fn vnet_hdr(&self) -> bool {
        self.vnet_hdr
    }

    /// Sets the offloads userspace accepts on read (`TUNSETOFFLOAD`). Per device, sticky.
    pub fn set_offload(&self, flags: u32) -> io::Result<()> {
        // SAFETY: the fd is an attached TUN queue; TUNSETOFFLOAD takes its argument by value.
        unsafe { ioctl_tunsetoffload(self.fd.as_raw_fd(), flags as libc::c_int) }
            .map(|_| ())
            .map_err(io::Error::from)
    }

    /// Reads one packet (non-blocking: `WouldBlock` when none is queued).
    ///
    /// The system call itself, not libc's `read`: that one is a thread-cancellation point,
    /// whose bookkeeping around every call was 4.5 % of the relay's CPU with small packets
    /// (the relay never cancels threads).
    pub fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: `buf` is valid for writes of `buf.len()` bytes for the whole call, and the
        // descriptor is ours (open for as long as `self`).
        let n = unsafe {
            libc::syscall(
                libc::SYS_read,
                self.fd.as_raw_fd(),
                buf.as_mut_ptr(),
                buf.len(),
            )
        };
        syscall_len(n)
    }

    /// Writes one packet (the system call itself, as [`TunDevice::read`]).
    pub fn write(&self, buf: &[u8]) -> io::Result<usize> {
        // SAFETY: `buf` is valid for reads of `buf.len()` bytes for the whole call, and the
        // descriptor is ours (open for as long as `self`).
        let n = unsafe {
            libc::syscall(
                libc::SYS_write,
                self.fd.as_raw_fd(),
                buf.as_ptr(),
                buf.len(),
            )
        };
        syscall_len(n)
    }
}

impl AsFd for TunDevice {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for TunDevice {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

fn ifreq_with(name: &str, flags: libc::c_short) -> libc::ifreq {
    // SAFETY: ifreq is plain old data (arrays and a union of integers/pointers); all-zero is a
    // valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes().take(MAX_NAME_LEN)) {
        *dst = src as libc::c_char;
    }
    req.ifr_ifru.ifru_flags = flags;
    req
}

/// A byte count returned by `syscall(2)`, or the error it set.
fn syscall_len(n: libc::c_long) -> io::Result<usize> {
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

fn read_back_name(requested: &str, req: &libc::ifreq) -> String {
    let bytes: Vec<u8> = req
        .ifr_name
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    match String::from_utf8(bytes) {
        Ok(s) if !s.is_empty() => s,
        _ => requested.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_validated_like_the_kernel() {
        assert!(validate_name("tun0").is_ok());
        assert!(validate_name("abcdefghijklmno").is_ok());
        for bad in ["", "abcdefghijklmnop", ".", "..", "a/b", "a b", "a:b"] {
            assert!(validate_name(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn missing_clone_device_is_reported() {
        let err = TunDevice::open_at(
            Path::new("/nonexistent/dev/net/tun"),
            &TunOptions {
                name: "tun0".into(),
                mode: DeviceMode::Tun,
                vnet_hdr: false,
                multi_queue: false,
                offload: 0,
            },
        )
        .unwrap_err();
        assert!(matches!(err, DeviceError::NoTunNode { .. }), "{err}");
        assert!(err.to_string().contains("/nonexistent/dev/net/tun"));
    }

    #[test]
    fn ifreq_carries_name_and_flags() {
        let req = ifreq_with("tun7", 0x1001);
        assert_eq!(read_back_name("x", &req), "tun7");
        // SAFETY: we just wrote ifru_flags.
        assert_eq!(unsafe { req.ifr_ifru.ifru_flags }, 0x1001);
    }
}
