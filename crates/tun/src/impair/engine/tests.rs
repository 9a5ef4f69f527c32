//! Deterministic tests: fixed seeds, simulated clock.

use super::*;
use crate::impair::spec::NetemSpec;

const MS: u64 = 1_000_000;

fn imp(spec: &str, seed: u64) -> Impairment<u64> {
    let spec: NetemSpec = spec.parse().unwrap();
    Impairment::new(spec, Rng::from_seed(seed))
}

/// `k` successes in `n` trials is within the two-sided 99.9 % band of Binomial(n, p)
/// (normal approximation, z = 3.29).
fn assert_binomial(k: u64, n: u64, p: f64, what: &str) {
    let mean = n as f64 * p;
    let sd = (n as f64 * p * (1.0 - p)).sqrt();
    assert!(
        (k as f64 - mean).abs() <= 3.29 * sd,
        "{what}: {k} of {n}, expected {mean:.1} ± {:.1}",
        3.29 * sd
    );
}

/// Offers `n` packets one per `gap_ns`, enqueueing every delivered copy and popping what is
/// due; returns the verdicts.
fn run(imp: &mut Impairment<u64>, n: u64, gap_ns: u64, len: usize) -> Vec<Verdict> {
    let mut out = Vec::new();
    for i in 0..n {
        let now = i * gap_ns;
        while imp.pop_ready(now).is_some() {}
        let v = imp.on_packet(now, len);
        if let Some(Fate::Deliver(d)) = v.duplicate {
            imp.enqueue(&d, i);
        }
        if let Fate::Deliver(d) = v.original {
            imp.enqueue(&d, i);
        }
        out.push(v);
    }
    out
}

fn deliveries(verdicts: &[Verdict]) -> Vec<Delivery> {
    verdicts
        .iter()
        .flat_map(|v| v.duplicate.iter().chain([&v.original]))
        .filter_map(|f| f.delivery().copied())
        .collect()
}

fn mean_sd(xs: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, var.sqrt())
}

const EVERYTHING: &str = "delay 10ms 3ms 20% distribution normal loss 5% 10% duplicate 3% \
                          reorder 10% gap 3 corrupt 2% rate 10mbit limit 50";

#[test]
fn same_seed_same_decisions() {
    let a = run(&mut imp(EVERYTHING, 42), 10_000, 100_000, 700);
    let b = run(&mut imp(EVERYTHING, 42), 10_000, 100_000, 700);
    assert_eq!(a, b);
    let c = run(&mut imp(EVERYTHING, 43), 10_000, 100_000, 700);
    assert_ne!(a, c);
}

#[test]
fn directions_draw_from_their_own_streams() {
    let config = ImpairConfig::parse(&["loss 50%"], "tun0", "tun1").unwrap();
    let drops = |dir| {
        let mut imp: Impairment<u64> = config.impairment(dir, 7).unwrap();
        run(&mut imp, 1000, MS, 100)
    };
    let (fw, bw) = (drops(Direction::Forward), drops(Direction::Backward));
    assert_ne!(fw, bw);
    assert_eq!(fw, drops(Direction::Forward));
    let none = ImpairConfig::parse(&["tun0->tun1: loss 1%"], "tun0", "tun1").unwrap();
    assert!(none.impairment::<u64>(Direction::Backward, 7).is_none());
}

#[test]
fn counters_add_up() {
    let mut imp = imp(EVERYTHING, 5);
    let verdicts = run(&mut imp, 20_000, 50_000, 1200);
    let s = imp.stats();
    let delivered = deliveries(&verdicts).len() as u64;
    assert_eq!(s.seen, 20_000);
    assert_eq!(
        s.seen + s.duplicated,
        s.dropped_loss + s.dropped_limit + delivered
    );
    assert!(s.dropped_loss > 0 && s.dropped_limit > 0 && s.duplicated > 0);
    assert!(s.reordered > 0 && s.corrupted > 0);
    assert_eq!(s.queued, imp.queue().len());
    let flagged = deliveries(&verdicts).iter().filter(|d| d.reordered).count() as u64;
    assert_eq!(flagged, s.reordered);
}

#[test]
fn random_loss_within_binomial_band() {
    for (p, seed) in [(0.05, 1), (0.3, 2), (0.001, 3)] {
        let mut imp = imp(&format!("loss {}%", p * 100.0), seed);
        let n = 20_000;
        let v = run(&mut imp, n, MS, 100);
        let lost = v
            .iter()
            .filter(|v| v.original == Fate::Dropped(DropCause::Loss))
            .count() as u64;
        assert_binomial(lost, n, p, "loss");
        assert_eq!(imp.stats().dropped_loss, lost);
    }
    assert_eq!(
        run(&mut imp("loss 100%", 1), 1000, MS, 1)
            .iter()
            .filter(|v| v.original.delivery().is_some())
            .count(),
        0
    );
    assert_eq!(imp("loss 0%", 1).stats().dropped_loss, 0);
}

#[test]
fn correlated_loss_is_burstier() {
    let mean_run = |spec: &str| {
        let v = run(&mut imp(spec, 11), 50_000, MS, 100);
        let lost: Vec<bool> = v.iter().map(|v| v.original.delivery().is_none()).collect();
        let runs = lost.windows(2).filter(|w| w[0] && !w[1]).count();
        lost.iter().filter(|&&l| l).count() as f64 / runs as f64
    };
    let independent = mean_run("loss 50%");
    let correlated = mean_run("loss 50% 90%");
    assert!((independent - 2.0).abs() < 0.1, "{independent}");
    assert!(correlated > 2.0 * independent, "{correlated}");
}

#[test]
fn duplicate_and_corrupt_rates() {
    let n = 20_000;
    let mut dup = imp("duplicate 10%", 21);
    let v = run(&mut dup, n, MS, 100);
    let made = v.iter().filter(|v| v.duplicate.is_some()).count() as u64;
    assert_binomial(made, n, 0.10, "duplicate");
    assert_eq!(dup.stats().duplicated, made);
    // A duplicate goes out, undelayed here, like the original.
    assert!(
        v.iter()
            .filter_map(|v| v.duplicate)
            .all(|f| f.delivery().is_some())
    );

    let mut cor = imp("corrupt 5%", 22);
    let v = run(&mut cor, n, MS, 60);
    let hits: Vec<Corruption> = deliveries(&v).iter().filter_map(|d| d.corrupt).collect();
    assert_binomial(hits.len() as u64, n, 0.05, "corrupt");
    assert_eq!(cor.stats().corrupted, hits.len() as u64);
    assert!(hits.iter().all(|c| c.byte < 60 && c.mask.count_ones() == 1));
    // Every byte and every bit gets hit now and then.
    assert_eq!(
        hits.iter()
            .map(|c| c.byte)
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        60
    );
    assert_eq!(
        hits.iter()
            .map(|c| c.mask)
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        8
    );
    let mut packet = [0u8; 60];
    hits[0].apply(&mut packet);
    assert_eq!(packet.iter().map(|b| b.count_ones()).sum::<u32>(), 1);
    hits[0].apply(&mut packet);
    assert_eq!(packet, [0u8; 60]);
    // An empty packet has nothing to corrupt.
    let mut cor = imp("corrupt 100%", 23);
    assert_eq!(
        cor.on_packet(0, 0).original.delivery().unwrap().corrupt,
        None
    );
    assert!(
        cor.on_packet(0, 1)
            .original
            .delivery()
            .unwrap()
            .corrupt
            .is_some()
    );
}

#[test]
fn duplicate_then_loss_like_netem() {
    // netem counts the duplicate, then a loss event removes one copy: the packet goes out once.
    let mut imp = imp("duplicate 100% loss 100%", 3);
    for v in run(&mut imp, 100, MS, 100) {
        assert!(v.original.delivery().is_some());
        assert_eq!(v.duplicate, None);
    }
    let s = imp.stats();
    assert_eq!((s.duplicated, s.dropped_loss), (0, 0));
    // With duplication sure and some loss, a duplicate can be lost on its own pass.
    let mut imp = self::imp("duplicate 100% loss 30%", 4);
    let v = run(&mut imp, 10_000, MS, 100);
    assert!(
        v.iter()
            .any(|v| v.duplicate == Some(Fate::Dropped(DropCause::Loss)))
    );
}

#[test]
fn uniform_delay_mean_and_spread() {
    let mut imp = imp("delay 10ms 2ms", 31);
    let n = 20_000;
    let delays: Vec<f64> = (0..n)
        .map(|i| {
            let now = i * MS;
            let d = imp
                .on_packet(now, 100)
                .original
                .delivery()
                .unwrap()
                .release_ns
                - now;
            assert!((8 * MS..12 * MS).contains(&d), "{d}");
            d as f64
        })
        .collect();
    let (mean, sd) = mean_sd(&delays);
    let sigma = 2e6 / 3f64.sqrt();
    assert!(
        (mean - 10e6).abs() < 4.0 * sigma / (n as f64).sqrt(),
        "{mean}"
    );
    assert!((sd / sigma - 1.0).abs() < 0.03, "{sd}");
}

#[test]
fn normal_delay_mean_and_spread() {
    let mut imp = imp("delay 100ms 10ms distribution normal", 32);
    let n = 20_000;
    let delays: Vec<f64> = (0..n)
        .map(|i| {
            let now = i * MS;
            (imp.on_packet(now, 100)
                .original
                .delivery()
                .unwrap()
                .release_ns
                - now) as f64
        })
        .collect();
    let (mean, sd) = mean_sd(&delays);
    assert!(
        (mean - 100e6).abs() < 4.0 * 10e6 / (n as f64).sqrt(),
        "{mean}"
    );
    assert!((sd / 10e6 - 1.0).abs() < 0.03, "{sd}");
    // Within ±1σ about 68.3 %.
    let inside = delays.iter().filter(|&&d| (d - 100e6).abs() < 10e6).count() as u64;
    assert_binomial(inside, n, 0.682_689, "within 1σ");
    // Clipped like netem's table at ±4σ.
    assert!(delays.iter().all(|&d| (d - 100e6).abs() <= 40e6 + 1.0));
}

#[test]
fn pareto_delays_have_a_long_right_tail() {
    for (dist, max_left) in [("pareto", 2.0 / 3.0), ("paretonormal", 1.5)] {
        let mut imp = imp(&format!("delay 100ms 10ms distribution {dist}"), 33);
        let delays: Vec<f64> = (0..20_000)
            .map(|i| {
                let now = i * MS;
                (imp.on_packet(now, 100)
                    .original
                    .delivery()
                    .unwrap()
                    .release_ns
                    - now) as f64
            })
            .collect();
        let (mean, _) = mean_sd(&delays);
        let min = delays.iter().cloned().fold(f64::MAX, f64::min);
        let max = delays.iter().cloned().fold(f64::MIN, f64::max);
        assert!((mean - 100e6).abs() < 0.5e6, "{dist}: mean {mean}");
        assert!(min >= 100e6 - max_left * 10e6 - 1.0, "{dist}: min {min}");
        assert!(max > 100e6 + 2.5 * 10e6, "{dist}: max {max}");
    }
}

#[test]
fn gemodel_stationary_loss_rate() {
    for (spec, seed) in [
        ("loss gemodel 10% 40% 80% 2%", 41),
        ("loss gemodel 3%", 42),
        ("loss gemodel 1% 10%", 43),
    ] {
        let mut imp = imp(spec, seed);
        let n = 200_000;
        let v = run(&mut imp, n, 1000, 100);
        let lost = v.iter().filter(|v| v.original.delivery().is_none()).count();
        let expected = imp.spec().loss.unwrap().stationary_rate();
        let got = lost as f64 / n as f64;
        assert!(
            (got - expected).abs() < 0.1 * expected,
            "{spec}: {got} vs {expected}"
        );
    }
}

#[test]
fn gemodel_bursts_last_one_over_r() {
    // Simple Gilbert (1-h = 100 %, 1-k = 0 %): every bad-state packet is lost, a burst lasts
    // 1/r packets on average.
    let v = run(&mut imp("loss gemodel 2% 25%", 44), 200_000, 1000, 100);
    let lost: Vec<bool> = v.iter().map(|v| v.original.delivery().is_none()).collect();
    let bursts = lost.windows(2).filter(|w| w[0] && !w[1]).count();
    let mean = lost.iter().filter(|&&l| l).count() as f64 / bursts as f64;
    assert!((mean - 4.0).abs() < 0.2, "{mean}");
}

#[test]
fn rate_serializes_exactly() {
    // 1 mbit/s = 125 000 B/s: a 1000-byte packet takes 8 ms, queued behind earlier ones.
    let mut imp = imp("rate 1mbit", 51);
    for k in 1..=10u64 {
        let v = imp.on_packet(0, 1000);
        let d = *v.original.delivery().unwrap();
        assert_eq!(d.release_ns, k * 8 * MS);
        imp.enqueue(&d, k);
    }
    // Half way through the sixth packet: behind the tenth.
    let now = 44 * MS;
    let mut out = Vec::new();
    while let Some(k) = imp.pop_ready(now) {
        out.push(k);
    }
    assert_eq!(out, [1, 2, 3, 4, 5]);
    let d = *imp.on_packet(now, 500).original.delivery().unwrap();
    assert_eq!(d.release_ns, 80 * MS + 4 * MS);
    imp.enqueue(&d, 11);
    // Once the queue is empty the link is idle: now + serialization time.
    while imp.pop_ready(u64::MAX).is_some() {}
    let d = imp
        .on_packet(1_000 * MS, 1)
        .original
        .delivery()
        .copied()
        .unwrap();
    assert_eq!(d.release_ns, 1_000 * MS + 8_000);
    // An odd rate rounds each packet's time down to whole ns, like netem's div64.
    let mut imp = self::imp("rate 24bit", 52);
    let d = imp.on_packet(0, 1).original.delivery().copied().unwrap();
    assert_eq!(d.release_ns, 333_333_333);
}

#[test]
fn rate_and_delay_combine_like_netem() {
    let mut imp = imp("delay 10ms rate 1mbit", 53);
    let mut releases = Vec::new();
    for i in 0..3 {
        let d = *imp.on_packet(0, 1000).original.delivery().unwrap();
        imp.enqueue(&d, i);
        releases.push(d.release_ns);
    }
    // The first waits delay + 8 ms; the next ones serialize behind it.
    assert_eq!(releases, [18 * MS, 26 * MS, 34 * MS]);
    // A packet long after: the queued one's lead is taken off its delay.
    let d = *imp.on_packet(30 * MS, 1000).original.delivery().unwrap();
    assert_eq!(d.release_ns, 40 * MS + 8 * MS);
}

#[test]
fn limit_tail_drops() {
    let mut imp = imp("delay 1s limit 10", 61);
    let v = run(&mut imp, 15, 0, 100);
    assert!(v[..10].iter().all(|v| v.original.delivery().is_some()));
    assert!(
        v[10..]
            .iter()
            .all(|v| v.original == Fate::Dropped(DropCause::Limit))
    );
    let s = imp.stats();
    assert_eq!((s.dropped_limit, s.queued), (5, 10));
    // Room again once packets leave.
    assert_eq!(imp.pop_ready(1_000 * MS), Some(0));
    assert!(imp.on_packet(1_000 * MS, 100).original.delivery().is_some());
    // With a duplicate, both copies are dropped at the limit.
    let mut imp = self::imp("delay 1s duplicate 100% limit 2", 62);
    let v = run(&mut imp, 2, 0, 100);
    assert!(v[0].duplicate.unwrap().delivery().is_some());
    assert_eq!(
        v[1],
        Verdict {
            original: Fate::Dropped(DropCause::Limit),
            duplicate: Some(Fate::Dropped(DropCause::Limit)),
        }
    );
    assert_eq!(imp.stats().dropped_limit, 2);
    assert_eq!(imp.stats().queued, 2);
    // limit 0 holds nothing.
    assert!(
        self::imp("limit 0", 63)
            .on_packet(0, 1)
            .original
            .delivery()
            .is_none()
    );
}

#[test]
fn reorder_fraction() {
    let n = 20_000;
    let mut imp = imp("delay 10ms reorder 25%", 71);
    let v = run(&mut imp, n, MS, 100);
    let reordered = deliveries(&v).iter().filter(|d| d.reordered).count();
    assert_binomial(reordered as u64, n, 0.25, "reorder");
    for (i, v) in v.iter().enumerate() {
        let d = v.original.delivery().unwrap();
        let now = i as u64 * MS;
        assert_eq!(d.release_ns, if d.reordered { now } else { now + 10 * MS });
    }
}

#[test]
fn reorder_gap() {
    // Sure reordering with gap 5: packets 5, 10, 15, ... go at once.
    let v = run(&mut imp("delay 10ms reorder 100% gap 5", 72), 50, MS, 100);
    let at_once: Vec<usize> = (0..50)
        .filter(|&i| v[i].original.delivery().unwrap().reordered)
        .collect();
    assert_eq!(at_once, (1..=10).map(|k| 5 * k - 1).collect::<Vec<_>>());
    // With 50 %: at least 4 delayed packets between two reordered ones, and one reorder per
    // 4 + 2 packets on average (4 waits, then a geometric number of tries).
    let n = 30_000;
    let v = run(&mut imp("delay 10ms reorder 50% gap 5", 73), n, MS, 100);
    let at_once: Vec<usize> = (0..n as usize)
        .filter(|&i| v[i].original.delivery().unwrap().reordered)
        .collect();
    assert!(at_once[0] >= 4);
    assert!(at_once.windows(2).all(|w| w[1] - w[0] >= 5));
    let per = n as f64 / at_once.len() as f64;
    assert!((per - 6.0).abs() < 0.15, "{per}");
}

#[test]
fn reordered_packets_jump_the_queue() {
    let mut imp = imp("delay 10ms reorder 100% gap 3", 74);
    for i in 0..3 {
        let v = imp.on_packet(i * MS, 100);
        imp.enqueue(v.original.delivery().unwrap(), i);
    }
    // Packet 2 was sent at once, ahead of 0 and 1 (due at 10 and 11 ms).
    assert_eq!(imp.next_release(), Some(2 * MS));
    assert_eq!(imp.pop_ready(2 * MS), Some(2));
    assert_eq!(imp.pop_ready(2 * MS), None);
    assert_eq!(imp.pop_ready(11 * MS), Some(0));
    assert_eq!(imp.pop_ready(11 * MS), Some(1));
}

#[test]
fn negative_jitter_is_due_at_once() {
    let mut imp = imp("delay 1ms 5ms", 81);
    let now = 1_000 * MS;
    let early = (0..1000)
        .filter(|_| {
            imp.on_packet(now, 100)
                .original
                .delivery()
                .unwrap()
                .release_ns
                < now
        })
        .count();
    assert_binomial(early as u64, 1000, 0.4, "before now");
}
