//! The impairment as a pipeline stage: one [`Impairment`] per direction, acting on wire-sized
//! packets (as netem does on a real link); the pipeline holds the delayed ones.

use std::time::{Duration, Instant};

use super::engine::{Fate, Impairment};
use super::spec::ImpairConfig;
use crate::pipeline::{Ctx, Direction, Packet, Processor, Verdict};

/// `--impair` on the relay's path.
pub struct ImpairStage {
    config: ImpairConfig,
    seed: u64,
    engines: [Option<Impairment<()>>; 2],
    epoch: Instant,
}

impl ImpairStage {
    /// The stage for `config`, every random decision drawn from `seed` (one stream per
    /// direction: the same seed and packets give the same decisions).
    pub fn new(config: ImpairConfig, seed: u64) -> ImpairStage {
        let engines = Direction::BOTH.map(|d| config.impairment(d, seed));
        ImpairStage {
            config,
            seed,
            engines,
            epoch: Instant::now(),
        }
    }

    fn ns(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.epoch).as_nanos() as u64
    }

    fn at(&self, ns: u64) -> Instant {
        self.epoch + Duration::from_nanos(ns)
    }
}

impl Processor for ImpairStage {
    fn name(&self) -> &str {
        "impair"
    }

    fn describe(&self) -> String {
        format!("{} (seed {})", self.config, self.seed)
    }

    fn wire_sized(&self) -> bool {
        true
    }

    fn process(&mut self, packet: &mut Packet<'_>, ctx: &mut Ctx<'_>) -> Verdict {
        let now = self.ns(ctx.now());
        let d = packet.direction().index();
        let Some(engine) = self.engines[d].as_mut() else {
            return Verdict::Forward;
        };
        // The engine's queue mirrors what the pipeline holds (release times only), for the
        // limit and the rate: what is due by now has left.
        while engine.pop_ready(now).is_some() {}
        let verdict = engine.on_packet(now, packet.data().len());
        if let Some(Fate::Deliver(copy)) = verdict.duplicate {
            engine.enqueue(&copy, ());
            let mut bytes = packet.data().to_vec();
            if let Some(c) = copy.corrupt {
                c.apply(&mut bytes);
            }
            let at = self.epoch + Duration::from_nanos(copy.release_ns);
            ctx.emit_at(at, &bytes);
        }
        match verdict.original {
            Fate::Dropped(_) => Verdict::Drop,
            Fate::Deliver(delivery) => {
                engine.enqueue(&delivery, ());
                if let Some(c) = delivery.corrupt {
                    c.apply(packet.data_mut());
                }
                if delivery.release_ns <= now {
                    // Due at once (no delay, or a reordered packet): on in place.
                    Verdict::Forward
                } else {
                    Verdict::Delay(self.at(delivery.release_ns))
                }
            }
        }
    }

    fn counters(&self) -> [Vec<(&'static str, u64)>; 2] {
        Direction::BOTH.map(|d| match &self.engines[d.index()] {
            None => Vec::new(),
            Some(e) => {
                let s = e.stats();
                vec![
                    ("dropped_loss", s.dropped_loss),
                    ("dropped_limit", s.dropped_limit),
                    ("duplicated", s.duplicated),
                    ("reordered", s.reordered),
                    ("corrupted", s.corrupted),
                ]
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gso::VnetHdr;
    use crate::pipeline::{Fate as PFate, Pipeline};

    fn packet(i: u16) -> Vec<u8> {
        let mut p = vec![0u8; 60];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&60u16.to_be_bytes());
        p[4..6].copy_from_slice(&i.to_be_bytes());
        p[9] = 17;
        p
    }

    fn run(spec: &str, seed: u64, n: u16) -> (Vec<u16>, Vec<Option<Instant>>) {
        let config = ImpairConfig::parse(&[spec], "tun0", "tun1").unwrap();
        let p = Pipeline::builder()
            .stage(ImpairStage::new(config, seed))
            .build();
        let t0 = Instant::now();
        let mut passed = Vec::new();
        let mut due = Vec::new();
        for i in 0..n {
            let mut out = Vec::new();
            let now = t0 + Duration::from_millis(u64::from(i));
            if p.process(
                Direction::Forward,
                VnetHdr::NONE,
                &mut packet(i),
                now,
                &mut out,
            ) == PFate::Write
            {
                passed.push(i);
            }
            due.push(p.next_due(Direction::Forward));
        }
        (passed, due)
    }

    #[test]
    fn the_same_seed_drops_the_same_packets() {
        let (a, _) = run("loss 30%", 7, 2000);
        let (b, _) = run("loss 30%", 7, 2000);
        let (c, _) = run("loss 30%", 8, 2000);
        assert_eq!(a, b);
        assert_ne!(a, c);
        let lost = 2000 - a.len();
        assert!((480..=720).contains(&lost), "{lost} of 2000 lost at 30 %");
    }

    #[test]
    fn a_delay_holds_every_packet_for_its_time() {
        let (passed, due) = run("delay 10ms", 1, 5);
        assert!(passed.is_empty());
        assert!(due.iter().all(Option::is_some));
    }

    #[test]
    fn the_other_direction_is_untouched_when_only_one_is_impaired() {
        let config = ImpairConfig::parse(&["tun1->tun0: loss 100%"], "tun0", "tun1").unwrap();
        let p = Pipeline::builder()
            .stage(ImpairStage::new(config, 1))
            .build();
        let mut out = Vec::new();
        let now = Instant::now();
        assert_eq!(
            p.process(
                Direction::Forward,
                VnetHdr::NONE,
                &mut packet(1),
                now,
                &mut out
            ),
            PFate::Write
        );
        assert_eq!(
            p.process(
                Direction::Backward,
                VnetHdr::NONE,
                &mut packet(2),
                now,
                &mut out
            ),
            PFate::Taken
        );
        let snap = &p.snapshot()[0];
        assert_eq!(snap.directions[1].extra["dropped_loss"], 1);
        assert!(snap.directions[0].extra.is_empty());
    }
}
