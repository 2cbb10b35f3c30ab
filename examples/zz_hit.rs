use async_cache::{Cache, Policy};
use std::sync::Arc;
fn main() {
    let lfu = std::env::args().nth(1).as_deref() == Some("lfu");
    let b = Cache::<u64, Arc<String>>::builder().max_size(10_000);
    let cache = if lfu { b.policy(Policy::TinyLfu).build() } else { b.build() };
    for k in 0..10_000u64 { cache.insert(k.wrapping_mul(0x9E3779B97F4A7C15), Arc::new(k.to_string())); }
    let mut x = 1u64; let mut n = 0;
    for _ in 0..3_000_000 { x ^= x << 13; x ^= x >> 7; x ^= x << 17; let k = (x % 10_000).wrapping_mul(0x9E3779B97F4A7C15); n += cache.get(&k).is_some() as usize; }
    assert_eq!(n, 3_000_000);
}
