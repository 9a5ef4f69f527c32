//! The `--impair` spec: tc-netem(8)'s words, per direction, parsed and printed back.
//!
//! ```text
//! [DEV->DEV:] WORD...        several clauses may be joined with ';'
//!   delay TIME [JITTER [CORR%]]
//!   distribution uniform|normal|pareto|paretonormal     (needs delay with jitter)
//!   loss [random] P% [CORR%]
//!   loss gemodel p% [r% [1-h% [1-k%]]]                 (defaults r = 100 − p, 1-h = 100, 1-k = 0)
//!   duplicate P% [CORR%]
//!   reorder P% [CORR%] [gap N]                          (needs delay; gap defaults to 1)
//!   corrupt P% [CORR%]
//!   rate RATE
//!   limit PACKETS                                       (default 1000)
//! ```
//!
//! As in tc an optional number is taken when the next word starts with a digit. Units are
//! described in [`super::units`]. Each word may appear once per direction.

use std::fmt;
use std::str::FromStr;

use super::dist::Distribution;
use super::units::{self, Percent, UnitError};
use crate::pipeline::Direction;

/// netem's default queue limit, in packets.
pub const DEFAULT_LIMIT: u32 = 1000;

/// The words a spec understands, for error messages.
pub const WORDS: &str = "delay, distribution, loss, duplicate, reorder, gap, corrupt, rate, limit";

const TIME_HINT: &str = "expected e.g. 10ms, 1.5s, 250us";
const PERCENT_HINT: &str = "expected 0 to 100, e.g. 5%, 0.1%";
const RATE_HINT: &str = "expected e.g. 1mbit, 100kbit, 1.5gbit, 10mbps";

/// A bad `--impair` spec.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// A word's value does not parse.
    #[error("{word}: bad {what} \"{value}\" ({hint})")]
    BadValue {
        /// The word (`delay`, `loss gemodel`, ...).
        word: String,
        /// What the value is (`time`, `percentage`, ...).
        what: &'static str,
        /// The value as given.
        value: String,
        /// What was expected.
        hint: String,
    },
    /// A word lacks its value.
    #[error("{word}: missing {what} ({hint})")]
    Missing {
        /// The word.
        word: String,
        /// What is missing.
        what: &'static str,
        /// What was expected.
        hint: String,
    },
    /// Not one of [`WORDS`].
    #[error("unknown word \"{word}\" (expected one of: {WORDS})")]
    UnknownWord {
        /// The word as given.
        word: String,
    },
    /// The same word twice in one direction's spec.
    #[error("{word}: given twice")]
    Repeated {
        /// The word.
        word: String,
    },
    /// A word that only makes sense with another.
    #[error("{word} needs {needs}")]
    Requires {
        /// The word.
        word: &'static str,
        /// What it needs.
        needs: &'static str,
    },
    /// No words.
    #[error("empty impairment (expected words such as: delay 10ms, loss 1%)")]
    Empty,
    /// A `DEV->DEV:` prefix that does not parse.
    #[error("bad direction \"{0}\" (expected DEV->DEV: before the words, e.g. tun0->tun1:)")]
    BadDirection(String),
    /// A direction naming a device the relay does not have.
    #[error("unknown device \"{device}\" in direction \"{direction}\" (devices: {a}, {b})")]
    UnknownDevice {
        /// The unknown name.
        device: String,
        /// The direction as given.
        direction: String,
        /// The relay's first device.
        a: String,
        /// The relay's second device.
        b: String,
    },
    /// A direction given twice (an undirected spec counts for both).
    #[error("direction {0} given twice")]
    DirectionTwice(String),
}

/// A probability with netem's optional correlation (`P% [CORR%]`).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Chance {
    /// The probability.
    pub probability: Percent,
    /// How much the previous draw weighs on the next (0 = independent).
    pub correlation: Percent,
}

impl fmt::Display for Chance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.probability)?;
        if !self.correlation.is_zero() {
            write!(f, " {}", self.correlation)?;
        }
        Ok(())
    }
}

/// `delay TIME [JITTER [CORR%]] [distribution NAME]`.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Delay {
    /// The mean delay, ns.
    pub latency_ns: u64,
    /// The spread, ns (uniform: ± this; normal: the standard deviation).
    pub jitter_ns: u64,
    /// Correlation of successive jitter draws.
    pub correlation: Percent,
    /// The jitter's distribution.
    pub distribution: Distribution,
}

/// `loss ...`: the loss model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Loss {
    /// `loss [random] P% [CORR%]`: each packet lost with probability P.
    Random(Chance),
    /// `loss gemodel p [r [1-h [1-k]]]`: the Gilbert-Elliott two-state burst model.
    GilbertElliott {
        /// Chance of moving from the good to the bad state, per packet.
        p: Percent,
        /// Chance of moving from the bad to the good state (default 100 % − p).
        r: Percent,
        /// `1-h`: loss probability in the bad state (default 100 %).
        bad_loss: Percent,
        /// `1-k`: loss probability in the good state (default 0 %).
        good_loss: Percent,
    },
}

impl Loss {
    /// The long-run fraction of packets lost (for `gemodel`, from the chain's stationary
    /// distribution: bad state with probability p / (p + r)).
    pub fn stationary_rate(&self) -> f64 {
        match *self {
            Loss::Random(chance) => chance.probability.fraction(),
            Loss::GilbertElliott {
                p,
                r,
                bad_loss,
                good_loss,
            } => {
                let (p, r) = (p.fraction(), r.fraction());
                if p + r == 0.0 {
                    return good_loss.fraction();
                }
                let bad = p / (p + r);
                bad * bad_loss.fraction() + (1.0 - bad) * good_loss.fraction()
            }
        }
    }
}

/// `reorder P% [CORR%] [gap N]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reorder {
    /// Chance that an eligible packet is sent at once, ahead of the delayed ones.
    pub chance: Chance,
    /// Packets `1..gap` after a reordered one are always delayed; from the `gap`-th on each
    /// is sent at once with the chance above (default 1: every packet is eligible).
    pub gap: u32,
}

/// One direction's impairment: the netem options.
#[derive(Debug, Clone, PartialEq)]
pub struct NetemSpec {
    /// Most packets held at once; more are tail-dropped (default 1000).
    pub limit: u32,
    /// `delay`.
    pub delay: Option<Delay>,
    /// `loss`.
    pub loss: Option<Loss>,
    /// `duplicate`.
    pub duplicate: Option<Chance>,
    /// `reorder` (with `gap`).
    pub reorder: Option<Reorder>,
    /// `corrupt`.
    pub corrupt: Option<Chance>,
    /// `rate`, in bytes per second.
    pub rate_bytes_per_sec: Option<u64>,
}

impl Default for NetemSpec {
    fn default() -> Self {
        NetemSpec {
            limit: DEFAULT_LIMIT,
            delay: None,
            loss: None,
            duplicate: None,
            reorder: None,
            corrupt: None,
            rate_bytes_per_sec: None,
        }
    }
}

/// The words of one spec, with tc's "an optional number follows" look-ahead.
struct Words<'a> {
    words: std::iter::Peekable<std::str::SplitWhitespace<'a>>,
}

impl<'a> Words<'a> {
    fn next_is_number(&mut self) -> bool {
        self.words
            .peek()
            .is_some_and(|w| w.starts_with(|c: char| c.is_ascii_digit()))
    }

    fn value(&mut self, word: &str, what: &'static str, hint: &str) -> Result<&'a str, SpecError> {
        self.words.next().ok_or_else(|| SpecError::Missing {
            word: word.into(),
            what,
            hint: hint.into(),
        })
    }

    fn optional_number(&mut self) -> Option<&'a str> {
        if self.next_is_number() {
            self.words.next()
        } else {
            None
        }
    }
}

fn bad(word: &str, what: &'static str, value: &str, hint: &str) -> SpecError {
    SpecError::BadValue {
        word: word.into(),
        what,
        value: value.into(),
        hint: hint.into(),
    }
}

fn time(word: &str, what: &'static str, value: &str) -> Result<u64, SpecError> {
    units::parse_time(value).map_err(|e| {
        let hint = match e {
            UnitError::NoUnit => format!(
                "a unit is required, {}",
                TIME_HINT.trim_start_matches("expected ")
            ),
            UnitError::Range => "too large".into(),
            UnitError::Malformed => TIME_HINT.into(),
        };
        bad(word, what, value, &hint)
    })
}

fn percent(word: &str, what: &'static str, value: &str) -> Result<Percent, SpecError> {
    units::parse_percent(value).map_err(|_| bad(word, what, value, PERCENT_HINT))
}

fn count(word: &str, value: &str, min: u32) -> Result<u32, SpecError> {
    value
        .parse::<u32>()
        .ok()
        .filter(|&n| n >= min)
        .ok_or_else(|| {
            let hint = if min == 0 {
                "expected a whole number".to_string()
            } else {
                format!("expected a whole number, at least {min}")
            };
            bad(word, "count", value, &hint)
        })
}

/// `P% [CORR%]` after `word`.
fn chance(words: &mut Words<'_>, word: &str) -> Result<Chance, SpecError> {
    let p = words.value(word, "percentage", PERCENT_HINT)?;
    let probability = percent(word, "percentage", p)?;
    let correlation = match words.optional_number() {
        Some(c) => percent(word, "correlation", c)?,
        None => Percent::ZERO,
    };
    Ok(Chance {
        probability,
        correlation,
    })
}

fn loss(words: &mut Words<'_>) -> Result<Loss, SpecError> {
    const HINT: &str = "expected P%, random P%, or gemodel p% [r% [1-h% [1-k%]]]";
    if words.next_is_number() {
        return chance(words, "loss").map(Loss::Random);
    }
    match words.value("loss", "model", HINT)? {
        "random" => chance(words, "loss random").map(Loss::Random),
        "gemodel" => {
            const W: &str = "loss gemodel";
            let p = percent(W, "p", words.value(W, "p", PERCENT_HINT)?)?;
            let mut next = |what| {
                words
                    .optional_number()
                    .map(|v| percent(W, what, v))
                    .transpose()
            };
            let r = next("r")?;
            let bad_loss = r.map(|_| next("1-h")).transpose()?.flatten();
            let good_loss = bad_loss.map(|_| next("1-k")).transpose()?.flatten();
            Ok(Loss::GilbertElliott {
                p,
                r: r.unwrap_or_else(|| Percent::new(100.0 - p.value()).unwrap_or(Percent::ZERO)),
                bad_loss: bad_loss.unwrap_or(Percent::ALL),
                good_loss: good_loss.unwrap_or(Percent::ZERO),
            })
        }
        other => Err(bad("loss", "model", other, HINT)),
    }
}

impl FromStr for NetemSpec {
    type Err = SpecError;

    /// Parses the words of one direction (no `DEV->DEV:` prefix).
    fn from_str(text: &str) -> Result<Self, SpecError> {
        let mut words = Words {
            words: text.split_whitespace().peekable(),
        };
        let mut spec = NetemSpec::default();
        let mut seen: Vec<&str> = Vec::new();
        let mut distribution = None;
        let mut gap = None;
        while let Some(word) = words.words.next() {
            if seen.contains(&word) {
                return Err(SpecError::Repeated { word: word.into() });
            }
            match word {
                "delay" => {
                    let latency = words.value(word, "time", TIME_HINT)?;
                    let latency_ns = time(word, "time", latency)?;
                    let (jitter_ns, correlation) = match words.optional_number() {
                        Some(j) => {
                            let jitter_ns = time(word, "jitter", j)?;
                            match words.optional_number() {
                                Some(c) => (jitter_ns, percent(word, "correlation", c)?),
                                None => (jitter_ns, Percent::ZERO),
                            }
                        }
                        None => (0, Percent::ZERO),
                    };
                    spec.delay = Some(Delay {
                        latency_ns,
                        jitter_ns,
                        correlation,
                        distribution: Distribution::Uniform,
                    });
                }
                "distribution" => {
                    const HINT: &str = "expected uniform, normal, pareto or paretonormal";
                    let name = words.value(word, "distribution", HINT)?;
                    distribution = Some(
                        Distribution::from_name(name)
                            .ok_or_else(|| bad(word, "distribution", name, HINT))?,
                    );
                }
                "loss" => spec.loss = Some(loss(&mut words)?),
                "duplicate" => spec.duplicate = Some(chance(&mut words, word)?),
                "corrupt" => spec.corrupt = Some(chance(&mut words, word)?),
                "reorder" => {
                    spec.reorder = Some(Reorder {
                        chance: chance(&mut words, word)?,
                        gap: 1,
                    });
                }
                "gap" => {
                    let n = words.value(word, "count", "expected a whole number, at least 1")?;
                    gap = Some(count(word, n, 1)?);
                }
                "rate" => {
                    let r = words.value(word, "rate", RATE_HINT)?;
                    spec.rate_bytes_per_sec = Some(units::parse_rate(r).map_err(|e| {
                        let hint = match e {
                            UnitError::Range => "expected at least 8bit, at most 2^64 bits/s",
                            _ => RATE_HINT,
                        };
                        bad(word, "rate", r, hint)
                    })?);
                }
                "limit" => {
                    let n = words.value(word, "count", "expected a whole number")?;
                    spec.limit = count(word, n, 0)?;
                }
                _ => return Err(SpecError::UnknownWord { word: word.into() }),
            }
            seen.push(word);
        }
        if seen.is_empty() {
            return Err(SpecError::Empty);
        }
        if let Some(distribution) = distribution {
            match &mut spec.delay {
                Some(d) if d.latency_ns > 0 && d.jitter_ns > 0 => d.distribution = distribution,
                _ => {
                    return Err(SpecError::Requires {
                        word: "distribution",
                        needs: "a delay with jitter (delay TIME JITTER)",
                    });
                }
            }
        }
        match (&mut spec.reorder, gap) {
            (Some(reorder), gap) => {
                if spec.delay.is_none_or(|d| d.latency_ns == 0) {
                    return Err(SpecError::Requires {
                        word: "reorder",
                        needs: "a delay (delay TIME)",
                    });
                }
                reorder.gap = gap.unwrap_or(1);
            }
            (None, Some(_)) => {
                return Err(SpecError::Requires {
                    word: "gap",
                    needs: "reorder (reorder P%)",
                });
            }
            (None, None) => {}
        }
        Ok(spec)
    }
}

impl fmt::Display for NetemSpec {
    /// The canonical form: words in a fixed order, defaults left out, units normalised.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts: Vec<String> = Vec::new();
        if let Some(d) = &self.delay {
            let mut s = format!("delay {}", units::format_time(d.latency_ns));
            if d.jitter_ns > 0 || !d.correlation.is_zero() {
                s += &format!(" {}", units::format_time(d.jitter_ns));
            }
            if !d.correlation.is_zero() {
                s += &format!(" {}", d.correlation);
            }
            if d.distribution != Distribution::Uniform {
                s += &format!(" distribution {}", d.distribution);
            }
            parts.push(s);
        }
        match &self.loss {
            Some(Loss::Random(c)) => parts.push(format!("loss {c}")),
            Some(Loss::GilbertElliott {
                p,
                r,
                bad_loss,
                good_loss,
            }) => parts.push(format!("loss gemodel {p} {r} {bad_loss} {good_loss}")),
            None => {}
        }
        if let Some(c) = &self.duplicate {
            parts.push(format!("duplicate {c}"));
        }
        if let Some(r) = &self.reorder {
            let mut s = format!("reorder {}", r.chance);
            if r.gap != 1 {
                s += &format!(" gap {}", r.gap);
            }
            parts.push(s);
        }
        if let Some(c) = &self.corrupt {
            parts.push(format!("corrupt {c}"));
        }
        if let Some(rate) = self.rate_bytes_per_sec {
            parts.push(format!("rate {}", units::format_rate(rate)));
        }
        if self.limit != DEFAULT_LIMIT || parts.is_empty() {
            parts.push(format!("limit {}", self.limit));
        }
        f.write_str(&parts.join(" "))
    }
}

/// Every `--impair` of a relay between devices `a` and `b`, per direction.
#[derive(Debug, Clone, PartialEq)]
pub struct ImpairConfig {
    /// The relay's first device.
    pub a: String,
    /// The relay's second device.
    pub b: String,
    /// Impairment of packets from `a` to `b`.
    pub forward: Option<NetemSpec>,
    /// Impairment of packets from `b` to `a`.
    pub backward: Option<NetemSpec>,
}

impl ImpairConfig {
    /// No impairment between `a` and `b`.
    pub fn none(a: &str, b: &str) -> Self {
        ImpairConfig {
            a: a.into(),
            b: b.into(),
            forward: None,
            backward: None,
        }
    }

    /// Parses `--impair` values for a relay between `a` and `b`. Each value holds one or more
    /// clauses separated by `;`, each `[DEV->DEV:] WORD...`; a clause without a direction
    /// applies to both. A direction may be set once.
    pub fn parse<S: AsRef<str>>(specs: &[S], a: &str, b: &str) -> Result<Self, SpecError> {
        let mut config = ImpairConfig::none(a, b);
        for clause in specs.iter().flat_map(|s| s.as_ref().split(';')) {
            let (directions, words) = config.split_direction(clause.trim())?;
            let spec: NetemSpec = words.parse()?;
            for dir in directions {
                let slot = match dir {
                    Direction::Forward => &mut config.forward,
                    Direction::Backward => &mut config.backward,
                };
                if slot.is_some() {
                    return Err(SpecError::DirectionTwice(config.direction_name(dir)));
                }
                *slot = Some(spec.clone());
            }
        }
        Ok(config)
    }

    /// The directions a clause names and its words.
    fn split_direction<'c>(&self, clause: &'c str) -> Result<(Vec<Direction>, &'c str), SpecError> {
        let Some((prefix, words)) = clause.split_once(':') else {
            if clause
                .split_whitespace()
                .next()
                .is_some_and(|w| w.contains("->"))
            {
                return Err(SpecError::BadDirection(clause.into()));
            }
            return Ok((Direction::BOTH.to_vec(), clause));
        };
        let Some((from, to)) = prefix.split_once("->") else {
            return Err(SpecError::BadDirection(prefix.trim().into()));
        };
        let (from, to) = (from.trim(), to.trim());
        let direction = prefix.trim().to_string();
        for dev in [from, to] {
            if dev != self.a && dev != self.b {
                return Err(SpecError::UnknownDevice {
                    device: dev.into(),
                    direction,
                    a: self.a.clone(),
                    b: self.b.clone(),
                });
            }
        }
        match (from == self.a, to == self.b, from == to) {
            (_, _, true) => Err(SpecError::BadDirection(direction)),
            (true, true, _) => Ok((vec![Direction::Forward], words)),
            _ => Ok((vec![Direction::Backward], words)),
        }
    }

    /// `a->b` or `b->a`.
    pub fn direction_name(&self, dir: Direction) -> String {
        match dir {
            Direction::Forward => format!("{}->{}", self.a, self.b),
            Direction::Backward => format!("{}->{}", self.b, self.a),
        }
    }

    /// The impairment of one direction.
    pub fn get(&self, dir: Direction) -> Option<&NetemSpec> {
        match dir {
            Direction::Forward => self.forward.as_ref(),
            Direction::Backward => self.backward.as_ref(),
        }
    }

    /// Whether neither direction is impaired.
    pub fn is_empty(&self) -> bool {
        self.forward.is_none() && self.backward.is_none()
    }
}

impl fmt::Display for ImpairConfig {
    /// The canonical form, which [`ImpairConfig::parse`] reads back: one undirected clause
    /// when both directions are alike, else `a->b: ...; b->a: ...`; empty when unimpaired.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let (Some(fw), Some(bw)) = (&self.forward, &self.backward)
            && fw == bw
        {
            return write!(f, "{fw}");
        }
        let clauses: Vec<String> = Direction::BOTH
            .iter()
            .filter_map(|&dir| {
                self.get(dir)
                    .map(|spec| format!("{}: {spec}", self.direction_name(dir)))
            })
            .collect();
        f.write_str(&clauses.join("; "))
    }
}

#[cfg(test)]
mod tests;
