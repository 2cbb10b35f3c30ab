use async_cache::cached;

#[cached(ttl = 0)]
async fn never_cached(id: u64) -> u64 {
    id
}

fn main() {}
