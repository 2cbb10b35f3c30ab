//! Key traces, and Che's approximation of LRU's hit ratio.

use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Zipf};

pub(crate) fn rng(seed: u64) -> rand::rngs::StdRng {
    rand::rngs::StdRng::seed_from_u64(seed)
}

/// `len` keys drawn uniformly from `keys`.
pub(crate) fn uniform(keys: &[u64], len: usize, seed: u64) -> Vec<u64> {
    let mut rng = rng(seed);
    (0..len).map(|_| keys[rng.random_range(0..keys.len())]).collect()
}

/// `len` requests over keys `0..n`, key `i` with probability ∝ 1/(i+1)^s.
/// Keys are scrambled so popularity does not follow key order (or hash).
pub(crate) fn zipf(n: u64, s: f64, len: usize, seed: u64) -> Vec<u64> {
    let mut rng = rng(seed);
    let zipf = Zipf::new(n as f64, s).expect("a valid Zipf distribution");
    (0..len).map(|_| scramble(zipf.sample(&mut rng) as u64 - 1)).collect()
}

/// A bijection on u64, so rank and key differ.
fn scramble(rank: u64) -> u64 {
    rank.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17)
}

/// Che's approximation of LRU's hit ratio for `capacity` over a Zipf(s)
/// popularity of `n` keys: solve Σ(1 − e^{−p_i·T}) = C for T by bisection,
/// then hit ratio = Σ p_i(1 − e^{−p_i·T}).
pub(crate) fn che(n: u64, s: f64, capacity: f64) -> f64 {
    let weights: Vec<f64> = (1..=n).map(|i| 1.0 / (i as f64).powf(s)).collect();
    let total: f64 = weights.iter().sum();
    let p: Vec<f64> = weights.iter().map(|w| w / total).collect();
    let filled = |t: f64| p.iter().map(|pi| 1.0 - (-pi * t).exp()).sum::<f64>();
    let (mut lo, mut hi) = (0.0, 1.0);
    while filled(hi) < capacity {
        hi *= 2.0;
    }
    for _ in 0..200 {
        let mid = (lo + hi) / 2.0;
        if filled(mid) < capacity { lo = mid } else { hi = mid }
    }
    let t = (lo + hi) / 2.0;
    p.iter().map(|pi| pi * (1.0 - (-pi * t).exp())).sum()
}
