//! Capture as a stage of the relay's pipeline (`tun up --pcap FILE`): every packet on the
//! device it was read from, outbound, with a nanosecond wall-clock timestamp; wire-sized
//! (super-packets segmented as a wire would carry them) unless `raw`.

use std::time::{Instant, SystemTime};

use super::{CaptureError, Direction as PcapDirection, PcapngWriter};
use crate::pipeline::{Ctx, Direction, Packet, Processor, Verdict};

/// `--pcap FILE` on the relay's path.
pub struct CaptureStage {
    writer: PcapngWriter,
    raw: bool,
    /// Wall-clock time at `epoch`: a packet's arrival (an `Instant`) becomes a timestamp.
    wall: SystemTime,
    epoch: Instant,
    failed: bool,
    /// Packets written and lost after a failure, per direction.
    written: [u64; 2],
    lost: [u64; 2],
}

impl CaptureStage {
    /// The stage writing to `writer`, whose interfaces are the relay's two devices in order
    /// (interface 0: the first device). `raw`: record super-packets as they crossed.
    pub fn new(writer: PcapngWriter, raw: bool) -> CaptureStage {
        CaptureStage {
            writer,
            raw,
            wall: SystemTime::now(),
            epoch: Instant::now(),
            failed: false,
            written: [0; 2],
            lost: [0; 2],
        }
    }

    fn fail(&mut self, e: &CaptureError) {
        if !self.failed {
            self.failed = true;
            log::warn!("capture stopped: {e}; the relay goes on without it");
        }
    }
}

impl Processor for CaptureStage {
    fn name(&self) -> &str {
        "capture"
    }

    fn describe(&self) -> String {
        format!(
            "pcapng {} ({})",
            self.writer.path().display(),
            if self.raw {
                "packets as they crossed"
            } else {
                "wire-sized packets"
            }
        )
    }

    fn wire_sized(&self) -> bool {
        !self.raw
    }

    fn process(&mut self, packet: &mut Packet<'_>, _ctx: &mut Ctx<'_>) -> Verdict {
        let d = packet.direction().index();
        if self.failed {
            self.lost[d] += 1;
            return Verdict::Forward;
        }
        let ts = match packet.arrival().checked_duration_since(self.epoch) {
            Some(since) => self.wall + since,
            None => self.wall - self.epoch.duration_since(packet.arrival()),
        };
        // Interface i is device i; a packet of direction d was read from device d.
        match self
            .writer
            .write(d as u32, PcapDirection::Outbound, ts, packet.data())
        {
            Ok(()) => self.written[d] += 1,
            Err(e) => {
                self.lost[d] += 1;
                self.fail(&e);
            }
        }
        Verdict::Forward
    }

    fn counters(&self) -> [Vec<(&'static str, u64)>; 2] {
        Direction::BOTH.map(|d| {
            let i = d.index();
            vec![
                ("captured", self.written[i]),
                ("capture_drops", self.lost[i]),
            ]
        })
    }

    fn tick(&mut self) {
        // What was captured reaches the file within a tick, so it can be read while it grows.
        if !self.failed
            && let Err(e) = self.writer.flush()
        {
            self.fail(&e);
        }
    }

    fn finish(&mut self) {
        if let Err(e) = self.writer.flush() {
            self.fail(&e);
        }
    }
}
