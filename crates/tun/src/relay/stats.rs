//! The relay's counters: per worker and direction, summed on demand.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters of one direction of one worker, updated by that worker and read by anyone.
#[derive(Debug, Default)]
pub(crate) struct DirCounters {
    /// Packets written to the other side.
    pub packets: AtomicU64,
    /// Bytes written to the other side.
    pub bytes: AtomicU64,
    /// Packets read but dropped because the write failed.
    pub write_errors: AtomicU64,
    /// Failed reads (other than "nothing queued").
    pub read_errors: AtomicU64,
}

/// A copy of one direction's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DirSnapshot {
    /// Source device.
    pub from: String,
    /// Destination device.
    pub to: String,
    /// Packets relayed.
    pub packets: u64,
    /// Bytes relayed.
    pub bytes: u64,
    /// Packets dropped on a failed write.
    pub write_errors: u64,
    /// Failed reads.
    pub read_errors: u64,
}

impl std::fmt::Display for DirSnapshot {
    /// `tun0 -> tun1: 12 packets, 1008 bytes, 0 write errors, 0 read errors`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} -> {}: {} packets, {} bytes, {} write errors, {} read errors",
            self.from, self.to, self.packets, self.bytes, self.write_errors, self.read_errors
        )
    }
}

/// Counters of a relay: one block per worker (so workers never share a cache line), each with
/// `[A→B, B→A]`; [`RelayStats::snapshot`] sums them.
#[derive(Debug)]
pub struct RelayStats {
    names: [String; 2],
    workers: Vec<[DirCounters; 2]>,
}

impl RelayStats {
    /// Counters for a relay between devices named `a` and `b` with `workers` workers.
    pub(crate) fn new(a: &str, b: &str, workers: usize) -> RelayStats {
        RelayStats {
            names: [a.to_string(), b.to_string()],
            workers: (0..workers.max(1)).map(|_| Default::default()).collect(),
        }
    }

    /// The counters of one worker and direction (0: A→B, 1: B→A).
    pub(crate) fn counters(&self, worker: usize, dir: usize) -> &DirCounters {
        &self.workers[worker][dir]
    }

    /// The sums over all workers, per direction.
    pub fn snapshot(&self) -> [DirSnapshot; 2] {
        let snap = |i: usize| {
            let sum = |f: fn(&DirCounters) -> &AtomicU64| {
                self.workers
                    .iter()
                    .map(|w| f(&w[i]).load(Ordering::Relaxed))
                    .sum()
            };
            DirSnapshot {
                from: self.names[i].clone(),
                to: self.names[1 - i].clone(),
                packets: sum(|c| &c.packets),
                bytes: sum(|c| &c.bytes),
                write_errors: sum(|c| &c.write_errors),
                read_errors: sum(|c| &c.read_errors),
            }
        };
        [snap(0), snap(1)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_sums_the_workers() {
        let stats = RelayStats::new("a", "b", 3);
        for w in 0..3 {
            stats
                .counters(w, 1)
                .packets
                .fetch_add(w as u64 + 1, Ordering::Relaxed);
        }
        let snap = stats.snapshot();
        assert_eq!(snap[1].packets, 6);
        assert_eq!((snap[1].from.as_str(), snap[1].to.as_str()), ("b", "a"));
        assert_eq!(snap[0].packets, 0);
        assert_eq!(
            snap[1].to_string(),
            "b -> a: 6 packets, 0 bytes, 0 write errors, 0 read errors"
        );
    }
}
