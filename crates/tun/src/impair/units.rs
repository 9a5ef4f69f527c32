//! Numbers with units as tc(8) writes them: times, percentages, rates; parsing and the
//! canonical form printed back.
//!
//! * **Times** are a decimal number and a unit, case-insensitive: `s`/`sec`/`secs`,
//!   `ms`/`msec`/`msecs`, `us`/`usec`/`usecs`, `ns`/`nsec`/`nsecs` (tc's `get_time64()`,
//!   which netem uses). The value is kept in whole nanoseconds, truncated like tc.
//!   A **bare number is refused** (except `0`): tc itself disagrees on its meaning: netem's
//!   parser (`get_time64`) reads it as nanoseconds, tc's older parser (`get_time`, other
//!   qdiscs, netem before iproute2 4.15) as microseconds, and tc-netem(8) says milliseconds.
//!   Printed with the largest unit that shows the value exactly (`1500ms`, `2s`, `250us`).
//! * **Percentages** are a number from 0 to 100 with an optional `%` (tc's `parse_percent`),
//!   printed with `%`; netem scales them to `0..=u32::MAX` ([`Percent::scaled`]).
//! * **Rates** are a number and one of tc's units, case-insensitive: `bit` (or none),
//!   `kbit`, `mbit`, `gbit`, `tbit` (powers of 1000) and `kibit`, `mibit`, `gibit`, `tibit`
//!   (powers of 1024) in bits per second; `bps`, `kbps`, `mbps`, `gbps`, `tbps` and `kibps`,
//!   `mibps`, `gibps`, `tibps` in **bytes** per second (as tc(8): `kbps` is kilobytes). Kept,
//!   like netem, in whole bytes per second; printed in the largest of `gbit`, `mbit`, `kbit`,
//!   `bit` that shows it exactly.

use std::fmt;

/// A probability, as a percentage in `0..=100`.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Default)]
pub struct Percent(f64);

impl Percent {
    /// Zero.
    pub const ZERO: Percent = Percent(0.0);
    /// One hundred percent.
    pub const ALL: Percent = Percent(100.0);

    /// `value` percent, if it is within `0..=100`.
    pub fn new(value: f64) -> Option<Percent> {
        (0.0..=100.0).contains(&value).then_some(Percent(value))
    }

    /// The percentage, `0..=100`.
    pub fn value(self) -> f64 {
        self.0
    }

    /// The fraction, `0..=1`.
    pub fn fraction(self) -> f64 {
        self.0 / 100.0
    }

    /// Scaled to `0..=u32::MAX` as tc does (`rint(fraction · UINT32_MAX)`), the form the
    /// engine compares its random draws with.
    pub fn scaled(self) -> u32 {
        (self.fraction() * f64::from(u32::MAX)).round_ties_even() as u32
    }

    /// Whether this is 0 %.
    pub fn is_zero(self) -> bool {
        self.0 == 0.0
    }
}

impl fmt::Display for Percent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}%", self.0)
    }
}

/// Why a value did not parse; the caller adds the word and the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UnitError {
    /// Not a number followed by a known unit.
    Malformed,
    /// A time without a unit.
    NoUnit,
    /// Out of the allowed range.
    Range,
}

/// Splits `"10.5ms"` into `(10.5, "ms")`: digits with at most one `.`, then the rest.
fn split_number(text: &str) -> Option<(f64, &str)> {
    let end = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(end);
    if !number.bytes().any(|b| b.is_ascii_digit()) || number.matches('.').count() > 1 {
        return None;
    }
    Some((number.parse().ok()?, unit))
}

/// Parses a time into nanoseconds.
pub(crate) fn parse_time(text: &str) -> Result<u64, UnitError> {
    let (value, unit) = split_number(text).ok_or(UnitError::Malformed)?;
    let scale = match unit.to_ascii_lowercase().as_str() {
        "s" | "sec" | "secs" => 1e9,
        "ms" | "msec" | "msecs" => 1e6,
        "us" | "usec" | "usecs" => 1e3,
        "ns" | "nsec" | "nsecs" => 1.0,
        "" if value == 0.0 => 1.0,
        "" => return Err(UnitError::NoUnit),
        _ => return Err(UnitError::Malformed),
    };
    let ns = value * scale;
    // Keep times within i64 so the engine's signed arithmetic never overflows.
    if ns >= i64::MAX as f64 {
        return Err(UnitError::Range);
    }
    Ok(ns as u64)
}

/// Nanoseconds in the canonical form: the largest unit that shows them exactly.
pub(crate) fn format_time(ns: u64) -> String {
    const UNITS: [(u64, &str); 4] = [
        (1_000_000_000, "s"),
        (1_000_000, "ms"),
        (1_000, "us"),
        (1, "ns"),
    ];
    if ns == 0 {
        return "0ms".into();
    }
    let (div, unit) = UNITS
        .iter()
        .find(|(div, _)| ns.is_multiple_of(*div))
        .copied()
        .unwrap_or((1, "ns"));
    format!("{}{unit}", ns / div)
}

/// Parses a percentage (`5`, `5%`, `0.1%`).
pub(crate) fn parse_percent(text: &str) -> Result<Percent, UnitError> {
    let (value, rest) = split_number(text).ok_or(UnitError::Malformed)?;
    if !(rest.is_empty() || rest == "%") {
        return Err(UnitError::Malformed);
    }
    Percent::new(value).ok_or(UnitError::Range)
}

/// Parses a rate into bytes per second (at least 1).
pub(crate) fn parse_rate(text: &str) -> Result<u64, UnitError> {
    let (value, unit) = split_number(text).ok_or(UnitError::Malformed)?;
    const K: f64 = 1000.0;
    const KI: f64 = 1024.0;
    let bits_per_unit = match unit.to_ascii_lowercase().as_str() {
        "" | "bit" => 1.0,
        "kbit" => K,
        "mbit" => K * K,
        "gbit" => K * K * K,
        "tbit" => K * K * K * K,
        "kibit" => KI,
        "mibit" => KI * KI,
        "gibit" => KI * KI * KI,
        "tibit" => KI * KI * KI * KI,
        "bps" => 8.0,
        "kbps" => 8.0 * K,
        "mbps" => 8.0 * K * K,
        "gbps" => 8.0 * K * K * K,
        "tbps" => 8.0 * K * K * K * K,
        "kibps" => 8.0 * KI,
        "mibps" => 8.0 * KI * KI,
        "gibps" => 8.0 * KI * KI * KI,
        "tibps" => 8.0 * KI * KI * KI * KI,
        _ => return Err(UnitError::Malformed),
    };
    let bytes = value * bits_per_unit / 8.0;
    if bytes < 1.0 || bytes >= u64::MAX as f64 / 8.0 {
        return Err(UnitError::Range);
    }
    Ok(bytes as u64)
}

/// Bytes per second in the canonical form, in bits: `1mbit`, `1500kbit`, `8bit`.
pub(crate) fn format_rate(bytes_per_sec: u64) -> String {
    let bits = u128::from(bytes_per_sec) * 8;
    const UNITS: [(u128, &str); 4] = [
        (1_000_000_000, "gbit"),
        (1_000_000, "mbit"),
        (1_000, "kbit"),
        (1, "bit"),
    ];
    let (div, unit) = UNITS
        .iter()
        .find(|(div, _)| bits.is_multiple_of(*div))
        .copied()
        .unwrap_or((1, "bit"));
    format!("{}{unit}", bits / div)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        assert_eq!(parse_time("10ms"), Ok(10_000_000));
        assert_eq!(parse_time("1.5s"), Ok(1_500_000_000));
        assert_eq!(parse_time("200us"), Ok(200_000));
        assert_eq!(parse_time("250USEC"), Ok(250_000));
        assert_eq!(parse_time("7ns"), Ok(7));
        assert_eq!(parse_time("2secs"), Ok(2_000_000_000));
        assert_eq!(parse_time("0"), Ok(0));
        assert_eq!(parse_time(".5ms"), Ok(500_000));
        assert_eq!(parse_time("10"), Err(UnitError::NoUnit));
        assert_eq!(parse_time("10xs"), Err(UnitError::Malformed));
        assert_eq!(parse_time("ms"), Err(UnitError::Malformed));
        assert_eq!(parse_time("-1ms"), Err(UnitError::Malformed));
        assert_eq!(parse_time("1.2.3ms"), Err(UnitError::Malformed));
        assert_eq!(parse_time("1e3ms"), Err(UnitError::Malformed));
        assert_eq!(parse_time("99999999999s"), Err(UnitError::Range));
    }

    #[test]
    fn time_format_round_trips() {
        for (ns, text) in [
            (0, "0ms"),
            (2_000_000_000, "2s"),
            (1_500_000_000, "1500ms"),
            (250_000, "250us"),
            (1_001, "1001ns"),
        ] {
            assert_eq!(format_time(ns), text);
            assert_eq!(parse_time(text), Ok(ns));
        }
    }

    #[test]
    fn percents() {
        assert_eq!(parse_percent("5%").map(Percent::value), Ok(5.0));
        assert_eq!(parse_percent("5").map(Percent::value), Ok(5.0));
        assert_eq!(parse_percent("0.1%").map(Percent::value), Ok(0.1));
        assert_eq!(parse_percent("100%").map(Percent::scaled), Ok(u32::MAX));
        assert_eq!(parse_percent("0%").map(Percent::scaled), Ok(0));
        assert_eq!(parse_percent("50%").map(Percent::scaled), Ok(2_147_483_648));
        assert_eq!(parse_percent("101%"), Err(UnitError::Range));
        assert_eq!(parse_percent("5%%"), Err(UnitError::Malformed));
        assert_eq!(parse_percent("x"), Err(UnitError::Malformed));
        assert_eq!(Percent::new(33.3).unwrap().to_string(), "33.3%");
    }

    #[test]
    fn rates() {
        assert_eq!(parse_rate("1mbit"), Ok(125_000));
        assert_eq!(parse_rate("1Mbit"), Ok(125_000));
        assert_eq!(parse_rate("100kbit"), Ok(12_500));
        assert_eq!(parse_rate("1.5gbit"), Ok(187_500_000));
        assert_eq!(parse_rate("8000"), Ok(1000));
        assert_eq!(parse_rate("8000bit"), Ok(1000));
        assert_eq!(parse_rate("1kbps"), Ok(1000));
        assert_eq!(parse_rate("2bps"), Ok(2));
        assert_eq!(parse_rate("1mibit"), Ok(131_072));
        assert_eq!(parse_rate("1KiBps"), Ok(1024));
        assert_eq!(parse_rate("1tbit"), Ok(125_000_000_000));
        assert_eq!(parse_rate("1bit"), Err(UnitError::Range));
        assert_eq!(parse_rate("1mbyte"), Err(UnitError::Malformed));
        assert_eq!(parse_rate("5%"), Err(UnitError::Malformed));
    }

    #[test]
    fn rate_format_round_trips() {
        for (bytes, text) in [
            (125_000, "1mbit"),
            (187_500_000, "1500mbit"),
            (1000, "8kbit"),
            (131_072, "1048576bit"),
            (125_000_000_000, "1000gbit"),
            (3, "24bit"),
        ] {
            assert_eq!(format_rate(bytes), text);
            assert_eq!(parse_rate(text), Ok(bytes));
        }
    }
}
