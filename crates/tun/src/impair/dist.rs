//! Delay distributions, generated directly instead of from netem's tables.
//!
//! netem turns a (correlated) uniform draw into a jitter value by looking it up in a table of
//! the distribution's inverse CDF, scaled so that the result is `mean + jitter · t`, where `t`
//! has mean 0 and (for `normal`) standard deviation 1; iproute2 builds the tables
//! (`netem/normal.c`, `pareto.c`, `paretonormal.c`). Here the same inverse CDFs are computed
//! from the draw `u ∈ (0, 1)`, so correlation still acts on the draw as in netem:
//!
//! * `uniform` (netem's default, no table): `t = 2u − 1`, so the delay is uniform in
//!   `[mean − jitter, mean + jitter)` (netem: `rnd % (2·jitter) + mean − jitter`);
//! * `normal`: `t = Φ⁻¹(u)` (Acklam's rational approximation, relative error < 1.2·10⁻⁹),
//!   clipped to ±4 like the table's `s16` range (8192 per unit);
//! * `pareto`: shape a = 3, `t = (4/3)·((1 − u)^(−1/3) − 1.5)`, i.e. a Pareto variable with
//!   mean 1.5 shifted to mean 0 and scaled by 4/3 (standard deviation ≈ 1.15), clipped at 4;
//! * `paretonormal`: `t = (Φ⁻¹(u) + 3·pareto(u)) / 4`, the two inverse CDFs combined at the
//!   same `u` with weights ¼ normal, ¾ pareto, exactly as `paretonormal.c` computes its table
//!   (`(normvalue + 3*parvalue)/4`; note: not a ¼/¾ mixture of the two variables).

use std::fmt;

/// The table bound: netem's tables are `s16` values with 8192 per unit.
const CLIP: f64 = 32767.0 / 8192.0;

/// A delay distribution (`distribution NAME`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Distribution {
    /// Uniform over `[delay − jitter, delay + jitter)`; netem's default.
    #[default]
    Uniform,
    /// Gaussian with standard deviation `jitter`, clipped at ±4 jitter.
    Normal,
    /// Pareto (shape 3), long right tail.
    Pareto,
    /// netem's blend of normal and pareto.
    ParetoNormal,
}

impl Distribution {
    /// Every distribution, in the order the help lists them.
    pub const ALL: [Distribution; 4] = [
        Distribution::Uniform,
        Distribution::Normal,
        Distribution::Pareto,
        Distribution::ParetoNormal,
    ];

    /// The name tc uses.
    pub fn name(self) -> &'static str {
        match self {
            Distribution::Uniform => "uniform",
            Distribution::Normal => "normal",
            Distribution::Pareto => "pareto",
            Distribution::ParetoNormal => "paretonormal",
        }
    }

    /// The distribution called `name`.
    pub fn from_name(name: &str) -> Option<Distribution> {
        Distribution::ALL.into_iter().find(|d| d.name() == name)
    }

    /// The standardised value `t` for the uniform draw `u ∈ (0, 1)`: the delay is
    /// `mean + jitter · t`.
    pub fn sample(self, u: f64) -> f64 {
        match self {
            Distribution::Uniform => 2.0 * u - 1.0,
            Distribution::Normal => normal(u),
            Distribution::Pareto => pareto(u),
            Distribution::ParetoNormal => ((normal(u) + 3.0 * pareto(u)) / 4.0).clamp(-CLIP, CLIP),
        }
    }
}

impl fmt::Display for Distribution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

fn normal(u: f64) -> f64 {
    inverse_normal_cdf(u).clamp(-CLIP, CLIP)
}

fn pareto(u: f64) -> f64 {
    (((1.0 - u).powf(-1.0 / 3.0) - 1.5) * 4.0 / 3.0).min(CLIP)
}

/// Φ⁻¹(p) for `p ∈ (0, 1)`: Peter Acklam's algorithm.
pub(crate) fn inverse_normal_cdf(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969_683_028_665_376e1,
        2.209_460_984_245_205e2,
        -2.759_285_104_469_687e2,
        1.383_577_518_672_69e2,
        -3.066_479_806_614_716e1,
        2.506_628_277_459_239,
    ];
    const B: [f64; 5] = [
        -5.447_609_879_822_406e1,
        1.615_858_368_580_409e2,
        -1.556_989_798_598_866e2,
        6.680_131_188_771_972e1,
        -1.328_068_155_288_572e1,
    ];
    const C: [f64; 6] = [
        -7.784_894_002_430_293e-3,
        -3.223_964_580_411_365e-1,
        -2.400_758_277_161_838,
        -2.549_732_539_343_734,
        4.374_664_141_464_968,
        2.938_163_982_698_783,
    ];
    const D: [f64; 4] = [
        7.784_695_709_041_462e-3,
        3.224_671_290_700_398e-1,
        2.445_134_137_142_996,
        3.754_408_661_907_416,
    ];
    const LOW: f64 = 0.024_25;
    let tail = |q: f64| {
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    };
    if p <= 0.0 {
        f64::NEG_INFINITY
    } else if p >= 1.0 {
        f64::INFINITY
    } else if p < LOW {
        tail((-2.0 * p.ln()).sqrt())
    } else if p <= 1.0 - LOW {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    } else {
        -tail((-2.0 * (1.0 - p).ln()).sqrt())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inverse_normal_known_points() {
        for (p, x) in [
            (0.5, 0.0),
            (0.975, 1.959_963_984_540_054),
            (0.841_344_746_068_542_9, 1.0),
            (0.001, -3.090_232_306_167_813),
            (0.01, -2.326_347_874_040_841),
            (0.999_9, 3.719_016_485_455_709),
        ] {
            let got = inverse_normal_cdf(p);
            assert!((got - x).abs() < 1e-8, "Φ⁻¹({p}) = {got}, want {x}");
        }
    }

    #[test]
    fn shapes() {
        assert_eq!(Distribution::Uniform.sample(0.0), -1.0);
        assert_eq!(Distribution::Uniform.sample(0.75), 0.5);
        assert_eq!(Distribution::Normal.sample(1e-300), -CLIP);
        assert!((Distribution::Pareto.sample(0.0) - (-2.0 / 3.0)).abs() < 1e-12);
        assert_eq!(Distribution::Pareto.sample(1.0 - 1e-12), CLIP);
        // Pareto's median: 2^(1/3) − 1.5 scaled.
        let median = (2f64.powf(1.0 / 3.0) - 1.5) * 4.0 / 3.0;
        assert!((Distribution::Pareto.sample(0.5) - median).abs() < 1e-12);
        assert!((Distribution::ParetoNormal.sample(0.5) - 0.75 * median).abs() < 1e-9);
    }

    #[test]
    fn names() {
        for d in Distribution::ALL {
            assert_eq!(Distribution::from_name(d.name()), Some(d));
        }
        assert_eq!(Distribution::from_name("gauss"), None);
    }
}
