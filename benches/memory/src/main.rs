//! Prints bytes per entry of async-cache, built with its default features,
//! on DESIGN.md's memory workload (see `benches::memory`): `lru`, `lru-ttl`
//! (a one-hour default TTL) or `tinylfu`. Run by the compare bench.

use async_cache::Policy;
use benches::memory::{bytes_per_entry, ours};

fn main() {
    let row = std::env::args().nth(1).unwrap_or_default();
    let (ttl, policy) = match row.as_str() {
        "lru" => (false, Policy::Lru),
        "lru-ttl" => (true, Policy::Lru),
        "tinylfu" => (false, Policy::TinyLfu),
        _ => {
            eprintln!("usage: bench-memory lru|lru-ttl|tinylfu");
            std::process::exit(2);
        }
    };
    println!("{:.1}", bytes_per_entry(|| ours(ttl, policy)));
}
