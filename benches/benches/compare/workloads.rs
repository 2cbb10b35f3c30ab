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

pub(crate) use benches::key_of;

/// `len` ranks in `0..n`, rank `i` with probability ∝ 1/(i+1)^s.
pub(crate) fn zipf_ranks(n: u64, s: f64, len: usize, seed: u64) -> Vec<u64> {
    let mut rng = rng(seed);
    let zipf = Zipf::new(n as f64, s).expect("a valid Zipf distribution");
    (0..len).map(|_| zipf.sample(&mut rng) as u64 - 1).collect()
}

/// [`zipf_ranks`] as keys, scrambled so popularity does not follow key
/// order (or hash).
pub(crate) fn zipf(n: u64, s: f64, len: usize, seed: u64) -> Vec<u64> {
    zipf_ranks(n, s, len, seed).into_iter().map(scramble).collect()
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

/// `len` requests cycling over keys `0..n`.
pub(crate) fn looping(n: u64, len: usize) -> Vec<u64> {
    (0..len as u64).map(|i| scramble(i % n)).collect()
}

/// Zipf(0.99) over `n` keys with, every `every` requests, a one-time scan
/// of `scan` keys never asked for before or after.
pub(crate) fn scanned(n: u64, len: usize, every: usize, scan: u64, seed: u64) -> Vec<u64> {
    let base = zipf(n, 0.99, len, seed);
    let mut trace = Vec::with_capacity(len + len / every * scan as usize);
    let mut fresh = n;
    for (i, key) in base.into_iter().enumerate() {
        if i > 0 && i % every == 0 {
            trace.extend((fresh..fresh + scan).map(scramble));
            fresh += scan;
        }
        trace.push(key);
    }
    trace.truncate(len);
    trace
}

/// Recency-driven traffic: a new key every other request, and each request
/// for a key `d` keys back from the newest, `d` exponential with mean
/// `mean`: what was asked for lately is asked for again, with no lasting
/// favourites.
pub(crate) fn recency(mean: f64, len: usize, seed: u64) -> Vec<u64> {
    let mut rng = rng(seed);
    let exp = rand_distr::Exp::new(1.0 / mean).expect("a valid mean");
    (0..len as u64)
        .map(|i| {
            let newest = i / 2;
            let back = (exp.sample(&mut rng) as u64).min(newest);
            scramble(newest - back)
        })
        .collect()
}

/// Belady's optimal hit ratio for `capacity` over `trace`, counting hits
/// from request `warmup` on: the entry used furthest in the future leaves,
/// or the newcomer is not stored if it is that one (the bound for every
/// policy, admission-based ones included).
pub(crate) fn belady(trace: &[u64], capacity: usize, warmup: usize) -> f64 {
    use std::collections::{BTreeSet, HashMap};
    let mut next = vec![usize::MAX; trace.len()];
    let mut seen: HashMap<u64, usize> = HashMap::new();
    for (i, key) in trace.iter().enumerate().rev() {
        if let Some(&j) = seen.get(key) {
            next[i] = j;
        }
        seen.insert(*key, i);
    }
    // Held keys by their next use (ties cannot happen: positions differ,
    // and never-again entries get distinct fake positions).
    let mut held: BTreeSet<(usize, u64)> = BTreeSet::new();
    let mut due: HashMap<u64, usize> = HashMap::new();
    let mut hits = 0;
    for (i, &key) in trace.iter().enumerate() {
        let upcoming = if next[i] == usize::MAX { usize::MAX - i } else { next[i] };
        if let Some(at) = due.remove(&key) {
            held.remove(&(at, key));
            if i >= warmup {
                hits += 1;
            }
        } else if held.len() >= capacity {
            let (at, victim) = held.pop_last().expect("full");
            due.remove(&victim);
            // Bypass when the newcomer is used furthest (never stored).
            if upcoming > at {
                held.insert((at, victim));
                due.insert(victim, at);
                continue;
            }
        }
        if capacity > 0 {
            held.insert((upcoming, key));
            due.insert(key, upcoming);
        }
    }
    hits as f64 / (trace.len() - warmup) as f64
}
