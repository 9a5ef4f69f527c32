//! The random source: xoshiro256** seeded through SplitMix64, one stream per direction, and
//! netem's correlated draw ([`Correlated`], the kernel's `get_crandom`).
//!
//! Both generators are the public-domain reference algorithms by Blackman and Vigna
//! (<https://prng.di.unimi.it/>); they are a few lines each, so the crate carries them instead
//! of a dependency, and their output is fixed forever: a seed reproduces the same decisions on
//! any build.

use std::io::{self, Read};

/// SplitMix64: expands one `u64` seed into the 256-bit state of [`Rng`].
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator starting from `seed`.
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    /// The next value.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// xoshiro256**: the deterministic generator behind every impairment decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    /// A generator whose state is four SplitMix64 outputs from `seed` (the authors' advice).
    pub fn from_seed(seed: u64) -> Self {
        let mut sm = SplitMix64::new(seed);
        Rng {
            s: [sm.next_u64(), sm.next_u64(), sm.next_u64(), sm.next_u64()],
        }
    }

    /// Stream number `index` of `seed`: [`Rng::from_seed`] advanced by `index` jumps of
    /// 2^128 draws, so streams of one seed never overlap (stream 0 is `from_seed(seed)`).
    pub fn stream(seed: u64, index: u32) -> Self {
        let mut rng = Rng::from_seed(seed);
        for _ in 0..index {
            rng.jump();
        }
        rng
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// The next 32 random bits (the upper half of [`Rng::next_u64`], the better half).
    pub fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }

    /// A value in `0..n` (`0` when `n` is 0), by Lemire's multiply-shift like the kernel's
    /// `get_random_u32_below` (bias below 2^-32 · n, irrelevant here).
    pub fn below(&mut self, n: u32) -> u32 {
        ((u64::from(self.next_u32()) * u64::from(n)) >> 32) as u32
    }

    /// Advances the state by 2^128 draws (the reference `jump()`).
    pub fn jump(&mut self) {
        const JUMP: [u64; 4] = [
            0x180E_C6D3_3CFD_0ABA,
            0xD5A6_1266_F0C9_392C,
            0xA958_2618_E03F_C9AA,
            0x39AB_DC45_29B1_661C,
        ];
        let mut acc = [0u64; 4];
        for word in JUMP {
            for bit in 0..64 {
                if word & (1u64 << bit) != 0 {
                    for (a, s) in acc.iter_mut().zip(self.s) {
                        *a ^= s;
                    }
                }
                self.next_u64();
            }
        }
        self.s = acc;
    }
}

/// A fresh seed from the kernel's random pool (`/dev/urandom`), for runs without `--seed`;
/// log it so such a run can be replayed.
pub fn os_seed() -> io::Result<u64> {
    let mut bytes = [0u8; 8];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(u64::from_ne_bytes(bytes))
}

/// A correlated random source, netem's `struct crndstate` and `get_crandom()`.
///
/// With correlation ρ (a fraction of 2^32) each draw is `(new · (2^32 − ρ) + last · ρ) >> 32`,
/// a weighted average of a fresh uniform value and the previous result. As in netem this makes
/// consecutive values alike but also narrows their spread (the mean stays ½): it is netem's
/// approximation, mirrored as is. With ρ = 0 a draw is one plain `u32`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Correlated {
    rho: u32,
    last: u64,
}

impl Correlated {
    /// A source with correlation `rho` (0 = none, `u32::MAX` ≈ 100 %).
    pub fn new(rho: u32) -> Self {
        Correlated { rho, last: 0 }
    }

    /// The next value in `0..=u32::MAX`.
    pub fn next(&mut self, rng: &mut Rng) -> u32 {
        if self.rho == 0 {
            return rng.next_u32();
        }
        let value = u64::from(rng.next_u32());
        let rho = u64::from(self.rho) + 1;
        let answer = (value * ((1u64 << 32) - rho) + self.last * rho) >> 32;
        self.last = answer;
        answer as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_reference_values() {
        // First outputs for seed 1234567 from the reference implementation.
        let mut sm = SplitMix64::new(1_234_567);
        assert_eq!(sm.next_u64(), 6_457_827_717_110_365_317);
        assert_eq!(sm.next_u64(), 3_203_168_211_198_807_973);
        assert_eq!(sm.next_u64(), 9_817_491_932_198_370_423);
    }

    #[test]
    fn xoshiro_reference_values() {
        // State 1, 2, 3, 4 (reference implementation's first outputs).
        let mut rng = Rng { s: [1, 2, 3, 4] };
        let got: Vec<u64> = (0..4).map(|_| rng.next_u64()).collect();
        assert_eq!(got, [11_520, 0, 1_509_978_240, 1_215_971_899_390_074_240]);
    }

    #[test]
    fn same_seed_same_sequence_and_streams_differ() {
        let a: Vec<u64> = {
            let mut r = Rng::from_seed(42);
            (0..100).map(|_| r.next_u64()).collect()
        };
        let b: Vec<u64> = {
            let mut r = Rng::stream(42, 0);
            (0..100).map(|_| r.next_u64()).collect()
        };
        assert_eq!(a, b);
        let mut s1 = Rng::stream(42, 1);
        let c: Vec<u64> = (0..100).map(|_| s1.next_u64()).collect();
        assert_ne!(a, c);
        let mut other = Rng::from_seed(43);
        assert_ne!(a[0], other.next_u64());
    }

    #[test]
    fn below_stays_below() {
        let mut r = Rng::from_seed(7);
        let mut seen = [false; 8];
        for _ in 0..1000 {
            let v = r.below(8);
            assert!(v < 8);
            seen[v as usize] = true;
        }
        assert!(seen.iter().all(|&s| s));
        assert_eq!(r.below(0), 0);
    }

    #[test]
    fn correlation_keeps_the_mean_and_links_values() {
        let mut rng = Rng::from_seed(9);
        let mut plain = Correlated::new(0);
        let mut corr = Correlated::new((0.75 * f64::from(u32::MAX)) as u32);
        let n = 100_000;
        let (mut sum, mut csum, mut prod, mut prev) = (0f64, 0f64, 0f64, 0.5f64);
        for _ in 0..n {
            sum += f64::from(plain.next(&mut rng)) / 4_294_967_296.0;
            let x = f64::from(corr.next(&mut rng)) / 4_294_967_296.0;
            csum += x;
            prod += (x - 0.5) * (prev - 0.5);
            prev = x;
        }
        assert!((sum / n as f64 - 0.5).abs() < 0.01);
        assert!((csum / n as f64 - 0.5).abs() < 0.01);
        // Lag-1 autocovariance of an AR(1) with coefficient 0.75 is clearly positive.
        assert!(prod / n as f64 > 0.005, "{}", prod / n as f64);
    }

    #[test]
    fn os_seed_reads() {
        os_seed().expect("/dev/urandom");
    }
}
