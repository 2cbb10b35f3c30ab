use async_cache::cached;

#[cached(skip(pool))]
async fn lookup(id: u64) -> u64 {
    id
}

fn main() {}
