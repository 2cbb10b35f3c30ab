use async_cache::cached;

#[cached(ttl = 10, ttl = 20)]
async fn twice(id: u64) -> u64 {
    id
}

fn main() {}
