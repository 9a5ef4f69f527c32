use super::*;

fn pct(v: f64) -> Percent {
    Percent::new(v).unwrap()
}

fn parse(text: &str) -> NetemSpec {
    text.parse().unwrap_or_else(|e| panic!("{text:?}: {e}"))
}

fn err(text: &str) -> String {
    text.parse::<NetemSpec>().unwrap_err().to_string()
}

#[test]
fn delay_forms() {
    let d = parse("delay 10ms").delay.unwrap();
    assert_eq!((d.latency_ns, d.jitter_ns), (10_000_000, 0));
    assert_eq!(d.distribution, Distribution::Uniform);
    let d = parse("delay 1.5s 200us 25%").delay.unwrap();
    assert_eq!((d.latency_ns, d.jitter_ns), (1_500_000_000, 200_000));
    assert_eq!(d.correlation, pct(25.0));
    let d = parse("delay 10ms 2ms distribution normal").delay.unwrap();
    assert_eq!(d.distribution, Distribution::Normal);
    // distribution may come first, as in tc.
    let d = parse("distribution pareto delay 10ms 2ms").delay.unwrap();
    assert_eq!(d.distribution, Distribution::Pareto);
    let d = parse("delay 10ms 2ms distribution paretonormal")
        .delay
        .unwrap();
    assert_eq!(d.distribution, Distribution::ParetoNormal);
    let d = parse("delay 10ms 2ms distribution uniform").delay.unwrap();
    assert_eq!(d.distribution, Distribution::Uniform);
}

#[test]
fn loss_forms() {
    let random = |p, c| {
        Some(Loss::Random(Chance {
            probability: pct(p),
            correlation: pct(c),
        }))
    };
    assert_eq!(parse("loss 5%").loss, random(5.0, 0.0));
    assert_eq!(parse("loss 5").loss, random(5.0, 0.0));
    assert_eq!(parse("loss 5% 25%").loss, random(5.0, 25.0));
    assert_eq!(parse("loss random 0.5%").loss, random(0.5, 0.0));
    assert_eq!(parse("loss random 1% 10%").loss, random(1.0, 10.0));
}

#[test]
fn gemodel_defaults_like_tc() {
    let ge = |p, r, h, k| {
        Some(Loss::GilbertElliott {
            p: pct(p),
            r: pct(r),
            bad_loss: pct(h),
            good_loss: pct(k),
        })
    };
    assert_eq!(parse("loss gemodel 10%").loss, ge(10.0, 90.0, 100.0, 0.0));
    assert_eq!(
        parse("loss gemodel 10% 40%").loss,
        ge(10.0, 40.0, 100.0, 0.0)
    );
    assert_eq!(
        parse("loss gemodel 10% 40% 80%").loss,
        ge(10.0, 40.0, 80.0, 0.0)
    );
    assert_eq!(
        parse("loss gemodel 10% 40% 80% 2%").loss,
        ge(10.0, 40.0, 80.0, 2.0)
    );
    let rate = parse("loss gemodel 10% 40% 80% 2%")
        .loss
        .unwrap()
        .stationary_rate();
    assert!((rate - 0.176).abs() < 1e-12);
    // Simple Gilbert: the long-run loss is p.
    let rate = parse("loss gemodel 3%").loss.unwrap().stationary_rate();
    assert!((rate - 0.03).abs() < 1e-12);
}

#[test]
fn chances_reorder_rate_limit() {
    let s =
        parse("duplicate 1% corrupt 0.1% 5% delay 10ms reorder 25% 50% gap 5 rate 1mbit limit 50");
    assert_eq!(
        s.duplicate,
        Some(Chance {
            probability: pct(1.0),
            correlation: Percent::ZERO
        })
    );
    assert_eq!(
        s.corrupt,
        Some(Chance {
            probability: pct(0.1),
            correlation: pct(5.0)
        })
    );
    let r = s.reorder.unwrap();
    assert_eq!(
        (r.chance.probability, r.chance.correlation, r.gap),
        (pct(25.0), pct(50.0), 5)
    );
    assert_eq!(s.rate_bytes_per_sec, Some(125_000));
    assert_eq!(s.limit, 50);
    // gap may precede reorder; reorder alone has gap 1.
    assert_eq!(parse("delay 1ms gap 3 reorder 10%").reorder.unwrap().gap, 3);
    assert_eq!(parse("delay 1ms reorder 10%").reorder.unwrap().gap, 1);
    assert_eq!(parse("rate 10mibit").rate_bytes_per_sec, Some(1_310_720));
    assert_eq!(parse("rate 2kbps").rate_bytes_per_sec, Some(2000));
}

#[test]
fn defaults() {
    let s = parse("loss 1%");
    assert_eq!(s.limit, 1000);
    assert_eq!(s.delay, None);
    assert_eq!(s.duplicate, None);
    assert_eq!(s.reorder, None);
    assert_eq!(s.corrupt, None);
    assert_eq!(s.rate_bytes_per_sec, None);
    assert_eq!(parse("limit 1000"), NetemSpec::default());
}

#[test]
fn errors_name_the_word_and_value() {
    assert_eq!(
        err("delay 10xs"),
        r#"delay: bad time "10xs" (expected e.g. 10ms, 1.5s, 250us)"#
    );
    assert_eq!(
        err("delay 10"),
        r#"delay: bad time "10" (a unit is required, e.g. 10ms, 1.5s, 250us)"#
    );
    assert_eq!(
        err("delay 10ms 2qs"),
        r#"delay: bad jitter "2qs" (expected e.g. 10ms, 1.5s, 250us)"#
    );
    assert_eq!(
        err("delay 10ms 2ms 120%"),
        r#"delay: bad correlation "120%" (expected 0 to 100, e.g. 5%, 0.1%)"#
    );
    assert_eq!(
        err("delay"),
        "delay: missing time (expected e.g. 10ms, 1.5s, 250us)"
    );
    assert_eq!(
        err("loss 5x"),
        r#"loss: bad percentage "5x" (expected 0 to 100, e.g. 5%, 0.1%)"#
    );
    assert_eq!(
        err("loss often"),
        r#"loss: bad model "often" (expected P%, random P%, or gemodel p% [r% [1-h% [1-k%]]])"#
    );
    assert_eq!(
        err("loss random"),
        "loss random: missing percentage (expected 0 to 100, e.g. 5%, 0.1%)"
    );
    assert_eq!(
        err("loss gemodel 1% 200%"),
        r#"loss gemodel: bad r "200%" (expected 0 to 100, e.g. 5%, 0.1%)"#
    );
    assert_eq!(
        err("duplicate -1%"),
        r#"duplicate: bad percentage "-1%" (expected 0 to 100, e.g. 5%, 0.1%)"#
    );
    assert_eq!(
        err("corrupt 1% 1x"),
        r#"corrupt: bad correlation "1x" (expected 0 to 100, e.g. 5%, 0.1%)"#
    );
    assert_eq!(
        err("delay 1ms reorder x"),
        r#"reorder: bad percentage "x" (expected 0 to 100, e.g. 5%, 0.1%)"#
    );
    assert_eq!(
        err("delay 1ms reorder 1% gap 0"),
        r#"gap: bad count "0" (expected a whole number, at least 1)"#
    );
    assert_eq!(
        err("rate fast"),
        r#"rate: bad rate "fast" (expected e.g. 1mbit, 100kbit, 1.5gbit, 10mbps)"#
    );
    assert_eq!(
        err("rate 1bit"),
        r#"rate: bad rate "1bit" (expected at least 8bit, at most 2^64 bits/s)"#
    );
    assert_eq!(
        err("limit -3"),
        r#"limit: bad count "-3" (expected a whole number)"#
    );
    assert_eq!(
        err("delay 1ms 1ms distribution gauss"),
        r#"distribution: bad distribution "gauss" (expected uniform, normal, pareto or paretonormal)"#
    );
    assert_eq!(
        err("jitter 5ms"),
        r#"unknown word "jitter" (expected one of: delay, distribution, loss, duplicate, reorder, gap, corrupt, rate, limit)"#
    );
    assert_eq!(err("loss 1% loss 2%"), "loss: given twice");
    assert_eq!(err(""), SpecError::Empty.to_string());
}

#[test]
fn netem_consistency_rules() {
    assert_eq!(err("reorder 25%"), "reorder needs a delay (delay TIME)");
    assert_eq!(
        err("delay 0ms reorder 25%"),
        "reorder needs a delay (delay TIME)"
    );
    assert_eq!(err("delay 5ms gap 5"), "gap needs reorder (reorder P%)");
    assert_eq!(
        err("delay 5ms distribution normal"),
        "distribution needs a delay with jitter (delay TIME JITTER)"
    );
    assert_eq!(
        err("distribution normal"),
        "distribution needs a delay with jitter (delay TIME JITTER)"
    );
}

#[test]
fn display_is_canonical_and_round_trips() {
    for (input, canonical) in [
        ("delay 10ms", "delay 10ms"),
        ("delay 10000us 2000000ns", "delay 10ms 2ms"),
        ("delay 1.5s 0.5ms 25", "delay 1500ms 500us 25%"),
        (
            "distribution normal delay 10ms 2ms loss 5%",
            "delay 10ms 2ms distribution normal loss 5%",
        ),
        ("delay 10ms 2ms distribution uniform", "delay 10ms 2ms"),
        ("loss random 5% 10%", "loss 5% 10%"),
        ("loss gemodel 1%", "loss gemodel 1% 99% 100% 0%"),
        ("limit 10 rate 8000kbit", "rate 8mbit limit 10"),
        ("rate 1kbps", "rate 8kbit"),
        (
            "corrupt 0.1% duplicate 1% 5% gap 4 reorder 25% delay 1s",
            "delay 1s duplicate 1% 5% reorder 25% gap 4 corrupt 0.1%",
        ),
        ("delay 10ms reorder 25% gap 1", "delay 10ms reorder 25%"),
        ("limit 1000", "limit 1000"),
        ("delay 0 0 5%", "delay 0ms 0ms 5%"),
    ] {
        let spec = parse(input);
        assert_eq!(spec.to_string(), canonical, "{input}");
        assert_eq!(parse(canonical), spec, "{canonical}");
        assert_eq!(parse(canonical).to_string(), canonical);
    }
}

fn config(specs: &[&str]) -> Result<ImpairConfig, SpecError> {
    ImpairConfig::parse(specs, "tun0", "tun1")
}

#[test]
fn directions() {
    let c = config(&["tun0->tun1: delay 10ms 2ms distribution normal loss 5%"]).unwrap();
    assert_eq!(
        c.forward,
        Some(parse("delay 10ms 2ms distribution normal loss 5%"))
    );
    assert_eq!(c.backward, None);
    let c = config(&["tun1 -> tun0 : loss 1%"]).unwrap();
    assert_eq!((c.forward, c.backward), (None, Some(parse("loss 1%"))));
    let c = config(&["delay 5ms"]).unwrap();
    assert_eq!(c.forward, Some(parse("delay 5ms")));
    assert_eq!(c.backward, c.forward);
    let c = config(&["tun0->tun1: loss 1%", "tun1->tun0: delay 1ms"]).unwrap();
    assert!(c.forward.is_some() && c.backward.is_some());
    let c = config(&["tun0->tun1: loss 1%; tun1->tun0: delay 1ms"]).unwrap();
    assert_eq!(c.get(Direction::Backward), Some(&parse("delay 1ms")));
    let c = config(&[]).unwrap();
    assert!(c.is_empty());
    assert_eq!(c.to_string(), "");
}

#[test]
fn direction_errors() {
    assert_eq!(
        config(&["tun0->eth0: loss 1%"]).unwrap_err().to_string(),
        r#"unknown device "eth0" in direction "tun0->eth0" (devices: tun0, tun1)"#
    );
    assert_eq!(
        config(&["tun0->tun1: loss 1%", "tun0->tun1: delay 1ms"])
            .unwrap_err()
            .to_string(),
        "direction tun0->tun1 given twice"
    );
    assert_eq!(
        config(&["delay 1ms", "tun1->tun0: loss 1%"]).unwrap_err(),
        SpecError::DirectionTwice("tun1->tun0".into())
    );
    assert_eq!(
        config(&["tun0->tun0: loss 1%"]).unwrap_err(),
        SpecError::BadDirection("tun0->tun0".into())
    );
    assert_eq!(
        config(&["tun0: loss 1%"]).unwrap_err().to_string(),
        r#"bad direction "tun0" (expected DEV->DEV: before the words, e.g. tun0->tun1:)"#
    );
    assert_eq!(
        config(&["tun0->tun1 loss 1%"]).unwrap_err(),
        SpecError::BadDirection("tun0->tun1 loss 1%".into())
    );
    assert_eq!(config(&["tun0->tun1:"]).unwrap_err(), SpecError::Empty);
    assert_eq!(
        config(&["tun0->tun1: loss 1% bogus"]).unwrap_err(),
        SpecError::UnknownWord {
            word: "bogus".into()
        }
    );
}

#[test]
fn config_display_round_trips() {
    for (input, canonical) in [
        (vec!["loss 1%"], "loss 1%"),
        (
            vec!["tun0->tun1: loss 1%", "tun1->tun0: loss 1%"],
            "loss 1%",
        ),
        (vec!["tun1->tun0: delay 1000us"], "tun1->tun0: delay 1ms"),
        (
            vec!["tun1->tun0: delay 1ms; tun0->tun1: loss 2%"],
            "tun0->tun1: loss 2%; tun1->tun0: delay 1ms",
        ),
    ] {
        let c = config(&input).unwrap();
        assert_eq!(c.to_string(), canonical);
        assert_eq!(config(&[canonical]).unwrap(), c);
    }
}
