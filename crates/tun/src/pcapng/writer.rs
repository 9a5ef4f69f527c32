//! The writer proper: one file (or a ring of them), one buffer, the counters and the failed
//! state; single-threaded (`&mut self`). [`super::Capture`] shares it between threads.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use super::block::{self, Packet};
use super::file::Target;
use super::{CaptureError, CaptureOptions, CaptureStats, Direction, LinkType, Rotation};

/// Longest interface name accepted (an `if_name` option holds at most 65535 bytes; a Linux
/// device name at most 15).
const MAX_NAME: usize = 255;

/// One interface: its name (`if_name`) and, for SLL2, its index on this host (0 if unknown).
#[derive(Debug)]
struct Iface {
    name: String,
    ifindex: u32,
}

/// A pcapng writer on one thread; see the [module documentation](super) for the format,
/// the failure semantics and the rotation.
#[derive(Debug)]
pub struct PcapngWriter {
    target: Target,
    file: Option<File>,
    ifaces: Vec<Iface>,
    link: LinkType,
    snaplen: u32,
    rotation: Option<Rotation>,
    /// Encoded blocks not yet written; its capacity never changes.
    buf: Vec<u8>,
    /// Flush when the next block would take `buf` past this.
    cap: usize,
    /// Size of the current file, what is in `buf` included.
    file_bytes: u64,
    /// Bytes of the current file that reached it (where a failure truncates it back to).
    file_flushed: u64,
    /// Packets in the current file, what is in `buf` included.
    file_packets: u64,
    /// Packets in `buf`.
    pending: u64,
    stats: CaptureStats,
}

impl PcapngWriter {
    /// Creates the capture file at `path` (see the module documentation for what is refused)
    /// with one interface per name in `interfaces`, their ids being their positions, and
    /// writes the Section Header and Interface Description Blocks to it at once.
    pub fn create(
        path: impl AsRef<Path>,
        interfaces: &[&str],
        opts: CaptureOptions,
    ) -> Result<PcapngWriter, CaptureError> {
        let invalid = |why: String| Err(CaptureError::Invalid(why));
        if interfaces.is_empty() {
            return invalid("a capture needs at least one interface".into());
        }
        if let Some(name) = interfaces.iter().find(|n| n.len() > MAX_NAME) {
            return invalid(format!(
                "interface name `{name}` is longer than {MAX_NAME} bytes"
            ));
        }
        if !(1..=super::MAX_SNAPLEN).contains(&opts.snaplen) {
            return invalid(format!(
                "snap length {} is out of range: 1 to {}",
                opts.snaplen,
                super::MAX_SNAPLEN
            ));
        }
        if let Some(r) = opts.rotation
            && (r.max_bytes == 0 || r.files == 0)
        {
            return invalid(format!(
                "rotation needs a size and a number of files of at least 1 (got {} bytes, {} files)",
                r.max_bytes, r.files
            ));
        }
        let ifaces: Vec<Iface> = interfaces
            .iter()
            .map(|&name| Iface {
                name: name.to_string(),
                ifindex: match opts.link {
                    LinkType::Raw | LinkType::Ethernet => 0,
                    LinkType::LinuxSll2 => nix::net::if_::if_nametoindex(name).unwrap_or(0),
                },
            })
            .collect();
        let target = Target::new(path.as_ref())?;
        let file = target.create()?;
        let headers = headers_len(&ifaces, opts.link, opts.snaplen);
        let largest = block::epb_len(opts.snaplen as usize);
        let cap = opts.buffer_size.max(headers + largest);
        let mut w = PcapngWriter {
            target,
            file: Some(file),
            ifaces,
            link: opts.link,
            snaplen: opts.snaplen,
            rotation: opts.rotation,
            buf: Vec::with_capacity(cap),
            cap,
            file_bytes: 0,
            file_flushed: 0,
            file_packets: 0,
            pending: 0,
            stats: CaptureStats {
                files: 1,
                ..CaptureStats::default()
            },
        };
        w.start_file();
        w.flush()?;
        Ok(w)
    }

    /// The path given to [`PcapngWriter::create`]: the file being written.
    pub fn path(&self) -> &Path {
        self.target.path()
    }

    /// Records one packet read from or written to interface `iface` (its position in the
    /// list given to [`PcapngWriter::create`]; panics if there is no such interface) at time
    /// `ts`, cut to the snap length.
    ///
    /// The one call (this or [`PcapngWriter::flush`]) that meets a write error returns it;
    /// the capture is then failed: it writes nothing more, and this returns `Ok` and counts
    /// each packet as a drop. See [`CaptureStats`].
    pub fn write(
        &mut self,
        iface: u32,
        dir: Direction,
        ts: SystemTime,
        pkt: &[u8],
    ) -> Result<(), CaptureError> {
        if self.stats.failed {
            self.stats.drops += 1;
            return Ok(());
        }
        let Some(i) = self.ifaces.get(iface as usize) else {
            panic!(
                "capture {}: no interface {iface} (it has {})",
                self.path().display(),
                self.ifaces.len()
            );
        };
        let sll2;
        let head: &[u8] = match self.link {
            LinkType::Raw | LinkType::Ethernet => &[],
            LinkType::LinuxSll2 => {
                sll2 = block::sll2_header(pkt, i.ifindex, dir);
                &sll2
            }
        };
        let room = (self.snaplen as usize).saturating_sub(head.len());
        let data = &pkt[..pkt.len().min(room)];
        let len = block::epb_len(head.len() + data.len());
        if let Some(r) = self.rotation
            && self.file_packets > 0
            && self.file_bytes + len as u64 > r.max_bytes
            && let Err(e) = self.rotate(r.files)
        {
            return Err(self.fail(e, 1));
        }
        if self.buf.len() + len > self.cap
            && let Err(e) = self.write_buf()
        {
            return Err(self.fail(e, 1));
        }
        let ts_nanos = ts
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        block::enhanced_packet(
            &mut self.buf,
            &Packet {
                iface,
                ts_nanos,
                orig_len: u32::try_from(head.len() + pkt.len()).unwrap_or(u32::MAX),
                head,
                data,
                flags: block::direction_flags(dir),
            },
        );
        self.pending += 1;
        self.file_packets += 1;
        self.file_bytes += len as u64;
        Ok(())
    }

    /// Writes what is buffered to the file (no `fsync`). Returns the write error the one time
    /// it meets one, as [`PcapngWriter::write`] does; `Ok` once failed.
    pub fn flush(&mut self) -> Result<(), CaptureError> {
        if self.stats.failed || self.buf.is_empty() {
            return Ok(());
        }
        self.write_buf().map_err(|e| self.fail(e, 0))
    }

    /// The counters.
    pub fn stats(&self) -> CaptureStats {
        self.stats
    }

    /// Whether a write error stopped the capture.
    pub fn is_failed(&self) -> bool {
        self.stats.failed
    }

    /// Puts the Section Header and one Interface Description Block per interface in the
    /// (empty) buffer, for a new file.
    fn start_file(&mut self) {
        debug_assert!(self.buf.is_empty());
        block::section_header(&mut self.buf);
        for i in &self.ifaces {
            block::interface_description(&mut self.buf, self.link, self.snaplen, &i.name);
        }
        self.file_bytes = self.buf.len() as u64;
        self.file_flushed = 0;
        self.file_packets = 0;
    }

    /// Writes the buffer to the file and counts what it held.
    fn write_buf(&mut self) -> Result<(), CaptureError> {
        let file = self
            .file
            .as_mut()
            .expect("a capture that has not failed has a file");
        file.write_all(&self.buf)
            .map_err(|cause| CaptureError::Io {
                path: self.target.path().to_path_buf(),
                op: "cannot write",
                cause,
            })?;
        let n = self.buf.len() as u64;
        self.file_flushed += n;
        self.stats.bytes += n;
        self.stats.packets += self.pending;
        self.pending = 0;
        self.buf.clear();
        Ok(())
    }

    /// Closes the current file, shifts the ring and starts a new `FILE`.
    fn rotate(&mut self, files: u32) -> Result<(), CaptureError> {
        self.write_buf()?;
        drop(self.file.take());
        self.target.rotate(files)?;
        self.file = Some(self.target.create()?);
        self.stats.files += 1;
        self.start_file();
        Ok(())
    }

    /// Enters the failed state after `e`: what is buffered, and `more` packets not yet in the
    /// buffer, count as drops; the file is cut back to its last complete block and closed.
    fn fail(&mut self, e: CaptureError, more: u64) -> CaptureError {
        self.stats.failed = true;
        self.stats.drops += self.pending + more;
        self.pending = 0;
        self.buf.clear();
        if let Some(file) = self.file.take() {
            // A short write may have left part of a block: readers stop cleanly without it.
            let _ = file.set_len(self.file_flushed);
        }
        e
    }
}

/// Bytes of a Section Header and the Interface Description Blocks of `ifaces`.
fn headers_len(ifaces: &[Iface], link: LinkType, snaplen: u32) -> usize {
    let mut buf = Vec::new();
    block::section_header(&mut buf);
    for i in ifaces {
        block::interface_description(&mut buf, link, snaplen, &i.name);
    }
    buf.len()
}

impl Drop for PcapngWriter {
    /// Flushes; a write error here has nobody to return to, so it is logged.
    fn drop(&mut self) {
        let lost = self.pending;
        if let Err(e) = self.flush() {
            log::warn!("capture stopped: {e}; {lost} packets lost");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pcapng::Capture;
    use std::time::Duration;

    fn u32_at(b: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
    }

    /// (type, body) of every block in a file.
    fn blocks(b: &[u8]) -> Vec<(u32, Vec<u8>)> {
        let mut out = Vec::new();
        let mut at = 0;
        while at < b.len() {
            let len = u32_at(b, at + 4) as usize;
            assert_eq!(u32_at(b, at + len - 4) as usize, len);
            out.push((u32_at(b, at), b[at + 8..at + len - 4].to_vec()));
            at += len;
        }
        out
    }

    /// (iface, ts, caplen, origlen, flags) of every packet.
    fn packets(b: &[u8]) -> Vec<(u32, u64, u32, u32, u32)> {
        blocks(b)
            .into_iter()
            .filter(|(ty, _)| *ty == block::EPB)
            .map(|(_, body)| {
                let caplen = u32_at(&body, 12);
                let opts = 20 + block::pad4(caplen as usize);
                assert_eq!(u32_at(&body, opts), 2 | (4 << 16), "epb_flags option");
                (
                    u32_at(&body, 0),
                    (u64::from(u32_at(&body, 4)) << 32) | u64::from(u32_at(&body, 8)),
                    caplen,
                    u32_at(&body, 16),
                    u32_at(&body, opts + 4),
                )
            })
            .collect()
    }

    fn at(nanos: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_nanos(nanos)
    }

    #[test]
    fn packets_go_after_the_headers_with_their_interface_time_and_direction() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.pcapng");
        // The raw layout (the IP packet alone in each block).
        let raw = CaptureOptions {
            link: LinkType::Raw,
            ..CaptureOptions::default()
        };
        let mut w = PcapngWriter::create(&path, &["tun0", "tun1"], raw).unwrap();
        let on_disk = std::fs::read(&path).unwrap();
        let types: Vec<u32> = blocks(&on_disk).iter().map(|b| b.0).collect();
        assert_eq!(
            types,
            [block::SHB, block::IDB, block::IDB],
            "headers at once"
        );
        assert_eq!(w.stats().bytes, on_disk.len() as u64);
        w.write(
            0,
            Direction::Outbound,
            at(1_700_000_000_000_000_001),
            &[0x45; 20],
        )
        .unwrap();
        w.write(
            1,
            Direction::Inbound,
            at(1_700_000_000_000_000_002),
            &[0x60; 41],
        )
        .unwrap();
        assert_eq!(w.stats().packets, 0, "buffered, not yet written");
        w.flush().unwrap();
        let s = w.stats();
        assert_eq!((s.packets, s.drops, s.files, s.failed), (2, 0, 1, false));
        let data = std::fs::read(&path).unwrap();
        assert_eq!(s.bytes, data.len() as u64);
        assert_eq!(
            packets(&data),
            [
                (0, 1_700_000_000_000_000_001, 20, 20, 2),
                (1, 1_700_000_000_000_000_002, 41, 41, 1)
            ]
        );
    }

    #[test]
    fn the_snap_length_cuts_packets_and_keeps_the_original_length() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c");
        for (link, head) in [
            (LinkType::Raw, 0),
            (LinkType::LinuxSll2, 20),
            (LinkType::Ethernet, 0),
        ] {
            let opts = CaptureOptions {
                link,
                snaplen: 64,
                ..CaptureOptions::default()
            };
            let mut w = PcapngWriter::create(&path, &["x"], opts).unwrap();
            w.write(0, Direction::Outbound, at(1), &[0x45; 100])
                .unwrap();
            w.write(0, Direction::Outbound, at(2), &[0x45; 10]).unwrap();
            drop(w); // flushes
            let got: Vec<(u32, u32)> = packets(&std::fs::read(&path).unwrap())
                .iter()
                .map(|p| (p.2, p.3))
                .collect();
            assert_eq!(got, [(64, 100 + head), (10 + head, 10 + head)], "{link:?}");
        }
    }

    #[test]
    fn a_full_buffer_is_written_without_growing_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c");
        let opts = CaptureOptions {
            buffer_size: 4096,
            snaplen: 1500,
            ..CaptureOptions::default()
        };
        let mut w = PcapngWriter::create(&path, &["a", "b"], opts).unwrap();
        let cap = w.buf.capacity();
        for n in 0..1000u32 {
            w.write(n % 2, Direction::Outbound, at(u64::from(n)), &[0x45; 1500])
                .unwrap();
            assert_eq!(w.buf.capacity(), cap);
        }
        assert!(w.stats().packets > 900, "written as the buffer filled");
        w.flush().unwrap();
        let pkts = packets(&std::fs::read(&path).unwrap());
        assert_eq!(pkts.len(), 1000);
        assert!(pkts.iter().enumerate().all(|(n, p)| p.1 == n as u64));
    }

    #[test]
    fn rotation_keeps_at_most_n_files_each_complete() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ring");
        let opts = CaptureOptions {
            rotation: Some(Rotation {
                max_bytes: 2000,
                files: 3,
            }),
            ..CaptureOptions::default()
        };
        let mut w = PcapngWriter::create(&path, &["tun0", "tun1"], opts).unwrap();
        for n in 0..40u64 {
            w.write((n % 2) as u32, Direction::Outbound, at(n), &[0x45; 200])
                .unwrap();
        }
        w.flush().unwrap();
        let s = w.stats();
        assert!(s.files > 3, "{s:?}");
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["ring", "ring.1", "ring.2"]);
        let mut total = 0;
        let mut newest_first = Vec::new();
        for name in &names {
            let data = std::fs::read(dir.path().join(name)).unwrap();
            assert!(data.len() <= 2000, "{name}: {} bytes", data.len());
            let types: Vec<u32> = blocks(&data).iter().map(|b| b.0).collect();
            assert_eq!(&types[..3], [block::SHB, block::IDB, block::IDB], "{name}");
            let pkts = packets(&data);
            assert!(!pkts.is_empty());
            total += data.len() as u64;
            newest_first.push(pkts.first().unwrap().1);
        }
        assert!(newest_first.windows(2).all(|w| w[0] > w[1]), "FILE newest");
        assert!(total < s.bytes, "older files were removed");
    }

    #[test]
    fn a_packet_larger_than_the_rotation_size_still_gets_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ring");
        let opts = CaptureOptions {
            rotation: Some(Rotation {
                max_bytes: 10,
                files: 1,
            }),
            ..CaptureOptions::default()
        };
        let mut w = PcapngWriter::create(&path, &["tun0"], opts).unwrap();
        for n in 0..3 {
            w.write(0, Direction::Inbound, at(n), &[0x45; 100]).unwrap();
        }
        w.flush().unwrap();
        assert_eq!(w.stats().files, 3);
        assert_eq!(packets(&std::fs::read(&path).unwrap()).len(), 1);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn invalid_settings_are_refused_before_any_file_is_made() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c");
        let long = "x".repeat(300);
        for (ifaces, opts, msg) in [
            (
                &[][..],
                CaptureOptions::default(),
                "packet capture: a capture needs at least one interface",
            ),
            (
                &[long.as_str()][..],
                CaptureOptions::default(),
                "is longer than 255 bytes",
            ),
            (
                &["a"][..],
                CaptureOptions {
                    snaplen: 0,
                    ..CaptureOptions::default()
                },
                "snap length 0 is out of range: 1 to 262144",
            ),
            (
                &["a"][..],
                CaptureOptions {
                    rotation: Some(Rotation {
                        max_bytes: 1,
                        files: 0,
                    }),
                    ..CaptureOptions::default()
                },
                "number of files of at least 1",
            ),
        ] {
            let err = PcapngWriter::create(&path, ifaces, opts).unwrap_err();
            assert!(err.to_string().contains(msg), "{err}");
        }
        assert!(!path.exists());
    }

    #[test]
    #[should_panic(expected = "no interface 2")]
    fn an_unknown_interface_is_a_bug() {
        let dir = tempfile::tempdir().unwrap();
        let mut w =
            PcapngWriter::create(dir.path().join("c"), &["a", "b"], CaptureOptions::default())
                .unwrap();
        let _ = w.write(2, Direction::Inbound, at(0), &[]);
    }

    #[test]
    fn a_shared_capture_takes_packets_from_many_threads() {
        fn shareable<T: Send + Sync>() {}
        fn movable<T: Send>() {}
        shareable::<Capture>();
        movable::<PcapngWriter>();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c");
        let cap = Capture::create(&path, &["a", "b"], CaptureOptions::default()).unwrap();
        std::thread::scope(|s| {
            for t in 0..4u32 {
                let cap = &cap;
                s.spawn(move || {
                    for _ in 0..5000 {
                        cap.write(t % 2, Direction::Outbound, &[0x45; 64]).unwrap();
                    }
                });
            }
        });
        cap.flush().unwrap();
        assert_eq!(cap.stats().packets, 20_000);
        let pkts = packets(&std::fs::read(&path).unwrap());
        assert_eq!(pkts.len(), 20_000);
        assert!(pkts.windows(2).all(|w| w[0].1 <= w[1].1), "in time order");
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        let first = Duration::from_nanos(pkts[0].1);
        assert!(now - first < Duration::from_secs(60), "realtime clock");
    }
}
